"""Semantic IDs: unique code tuples, their tokens, the ID table, and diagnostics of a code table.

Tokens follow the contract ``<{prefix}_{level}_{code}>`` with 1-based levels and prefix ``sid``
for the joint space, else the space name (``search`` / ``rec``); an item's ``sid`` is its tokens
concatenated without separators. Where the task spaces share their first levels
(``embedding=prefix_share``; ``shared_levels`` in the ID table's meta), those levels use the joint
prefix in every space: ``<sid_1_7><search_2_3>`` and ``<sid_1_7><rec_2_9>``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from semid.io import SemidError, atomic_dir, read_json, write_json

SPACES = ("joint", "search", "rec")
IDS_FILE = "semantic_ids.parquet"
META_FILE = "meta.json"
_TOKEN = re.compile(r"<([a-z]+)_(\d+)_(\d+)>")


class SemanticIdError(SemidError, ValueError):
    """A token string or ID table that does not follow the contract."""


def token_prefix(space: str) -> str:
    if space not in SPACES:
        raise SemanticIdError(f"unknown ID space {space!r}; choose one of: {', '.join(SPACES)}")
    return "sid" if space == "joint" else space


def token(space: str, level: int, code: int, shared_levels: int = 0) -> str:
    """The token of ``code`` at 1-based ``level`` in ``space``; levels up to ``shared_levels`` are
    shared by all spaces and take the joint prefix."""
    prefix = token_prefix("joint") if level <= shared_levels else token_prefix(space)
    return f"<{prefix}_{level}_{code}>"


def sid_string(space: str, codes, shared_levels: int = 0) -> str:
    """An item's ID as one string: its tokens, level 1 first."""
    return "".join(token(space, level, int(code), shared_levels) for level, code in enumerate(codes, start=1))


def parse_sid(sid: str, shared_levels: int = 0) -> tuple[str, list[int]]:
    """``sid_string``'s inverse: (space, codes). Fails on anything that is not a whole ID, and on
    mixed prefixes except the joint prefix on the first ``shared_levels`` levels."""
    matches = list(_TOKEN.finditer(sid))
    if not matches or "".join(m.group(0) for m in matches) != sid:
        raise SemanticIdError(f"not a semantic ID string: {sid!r}")
    prefixes = [m.group(1) for m in matches]
    own = set(prefixes[shared_levels:]) or {token_prefix("joint")}
    shared_ok = all(p == token_prefix("joint") for p in prefixes[:shared_levels])
    if len(own) != 1 or not shared_ok:
        shared = f" (the first {shared_levels} level(s) shared as 'sid')" if shared_levels else ""
        raise SemanticIdError(f"semantic ID mixes spaces {sorted(set(prefixes))}{shared}: {sid!r}")
    prefix = own.pop()
    space = "joint" if prefix == "sid" else prefix
    token_prefix(space)
    levels = [int(m.group(2)) for m in matches]
    if levels != list(range(1, len(levels) + 1)):
        raise SemanticIdError(f"semantic ID levels must run 1, 2, ... in order, got {levels}: {sid!r}")
    return space, [int(m.group(3)) for m in matches]


def dedup_level(codes: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
    """The extra level that makes IDs unique: items sharing a full code tuple are numbered
    0..k-1 in ascending item-id order; an item alone in its tuple gets 0 (as in TIGER)."""
    codes = np.asarray(codes, np.int64)
    order = np.lexsort((item_ids, *codes.T[::-1]))  # by tuple, then item id
    sorted_codes = codes[order]
    new_group = np.ones(len(codes), bool)
    new_group[1:] = (sorted_codes[1:] != sorted_codes[:-1]).any(axis=1)
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(len(codes)), 0))
    extra = np.empty(len(codes), np.int64)
    extra[order] = np.arange(len(codes)) - group_start
    return extra


def build_id_table(
    item_ids: np.ndarray, codes: np.ndarray, space: str, dedup: bool, shared_levels: int = 0
) -> pd.DataFrame:
    """item_id, space, codes (list[int], plus the de-duplication level when ``dedup``), sid."""
    item_ids = np.asarray(item_ids, np.int64)
    codes = np.asarray(codes, np.int64)
    if dedup:
        codes = np.column_stack([codes, dedup_level(codes, item_ids)])
    return pd.DataFrame({
        "item_id": item_ids,
        "space": space,
        "codes": [row.tolist() for row in codes],
        "sid": [sid_string(space, row, shared_levels) for row in codes],
    })


def codebook_sizes(table: pd.DataFrame, codebook_size: int, levels: int) -> list[int]:
    """Per level incl. the de-duplication level (sized by the largest bucket)."""
    width = len(table["codes"].iloc[0]) if len(table) else levels
    sizes = [codebook_size] * levels
    if width > levels:
        sizes.append(int(max(row[levels] for row in table["codes"])) + 1)
    return sizes


def write_semantic_ids(folder: str | Path, tables: list[pd.DataFrame], meta: dict) -> None:
    """Write ``semantic_ids.parquet`` + ``meta.json`` into ``folder``, replacing it whole."""
    with atomic_dir(folder) as tmp:
        pd.concat(tables, ignore_index=True).to_parquet(tmp / IDS_FILE, index=False)
        write_json(tmp / META_FILE, meta)


def load_semantic_ids(folder: str | Path) -> pd.DataFrame:
    """The ID table of a quantize output folder (item_id, space, codes, sid)."""
    path = Path(folder) / IDS_FILE
    if not path.exists():
        raise SemanticIdError(f"no semantic IDs at {path}; run the quantize stage first")
    table = pd.read_parquet(path)
    table["codes"] = table["codes"].map(lambda codes: [int(c) for c in codes])
    return table


def load_ids_meta(folder: str | Path) -> dict:
    return read_json(Path(folder) / META_FILE)


# ---------------------------------------------------------------- diagnostics


def level_usage(codes: np.ndarray, codebook_size: int) -> list[dict[str, float]]:
    """Per level: share of the codebook used, perplexity exp(H) and entropy H (nats) of the
    code distribution over items."""
    stats = []
    for column in np.asarray(codes).T:
        counts = np.bincount(column, minlength=codebook_size)
        p = counts[counts > 0] / counts.sum()
        entropy = float(-(p * np.log(p)).sum())
        stats.append({"usage": float((counts > 0).sum() / codebook_size), "entropy": entropy, "perplexity": math.exp(entropy)})
    return stats


def collision_stats(codes: np.ndarray) -> dict[str, float]:
    """Share of items whose full code tuple is shared with another item, and the largest bucket."""
    _, inverse, counts = np.unique(np.asarray(codes), axis=0, return_inverse=True, return_counts=True)
    bucket = counts[inverse.ravel()]
    return {"collision_rate": float((bucket > 1).mean()), "largest_bucket": int(counts.max()), "unique_tuples": int(len(counts))}


def reconstruction_error(x: np.ndarray, reconstruction: np.ndarray) -> float:
    """Mean over items of ||x - x_hat|| / ||x||."""
    norms = np.maximum(np.linalg.norm(x, axis=1), 1e-12)
    return float((np.linalg.norm(x - reconstruction, axis=1) / norms).mean())


def cosine_neighbours(x: np.ndarray, k: int, query_rows: np.ndarray) -> np.ndarray:
    """(len(query_rows), k) indices of each query row's k nearest other items by cosine."""
    # Deferred: faiss takes ~0.2 s to import and the generator and serving paths read IDs here
    # without ever computing diagnostics.
    import faiss

    unit = np.ascontiguousarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12), np.float32)
    index = faiss.IndexFlatIP(unit.shape[1])
    index.add(unit)
    _, found = index.search(unit[query_rows], k + 1)
    neighbours = np.empty((len(query_rows), k), np.int64)
    for i, (row, hits) in enumerate(zip(query_rows, found)):
        neighbours[i] = [h for h in hits if h != row][:k]
    return neighbours


def neighbour_preservation(
    x: np.ndarray, first_codes: np.ndarray, k: int = 10, seed: int = 0, max_queries: int = 5000
) -> tuple[float, float]:
    """Share of each item's k nearest neighbours (cosine) that share its first code, and the same
    for a random assignment with the same code sizes (the first codes shuffled, seeded).

    Averaged over all items, or over a seeded sample of ``max_queries`` items for large tables.
    """
    rng = np.random.default_rng(seed)
    n = len(x)
    if n <= k:
        raise SemanticIdError(f"neighbour preservation needs more than k={k} items, got {n}")
    rows = np.arange(n) if n <= max_queries else np.sort(rng.choice(n, max_queries, replace=False))
    neighbours = cosine_neighbours(x, k, rows)
    first_codes = np.asarray(first_codes)
    shuffled = rng.permutation(first_codes)
    observed = float((first_codes[neighbours] == first_codes[rows, None]).mean())
    random = float((shuffled[neighbours] == shuffled[rows, None]).mean())
    return observed, random


def diagnostics(
    x: np.ndarray, codes: np.ndarray, reconstruction: np.ndarray, codebook_size: int, k: int = 10, seed: int = 0
) -> dict[str, float]:
    """The flat metrics of one code table (see README "quantize")."""
    metrics: dict[str, float] = {}
    for level, stats in enumerate(level_usage(codes, codebook_size), start=1):
        metrics[f"codebook_usage_level_{level}"] = stats["usage"]
        metrics[f"perplexity_level_{level}"] = stats["perplexity"]
        metrics[f"entropy_level_{level}"] = stats["entropy"]
    metrics.update(collision_stats(codes))
    metrics["reconstruction_error"] = reconstruction_error(x, reconstruction)
    observed, random = neighbour_preservation(x, np.asarray(codes)[:, 0], k, seed)
    metrics["neighbour_preservation"] = observed
    metrics["neighbour_preservation_random"] = random
    return metrics
