"""Recall@10/30, NDCG@30 and MRR of the generator and its baselines, on the same test sets.

Protocol (single held-out target per example):

- search: the test queries (a seeded subsample of ``evaluate.search_queries``); one query, one item.
- rec: every user with a test item; the input is the user's train + valid items before it, the
  last H of them (H = the generator's ``history_length``). Items the user already has are removed
  from every method's ranking (generator, dense kNN, popularity alike), so the generator decodes
  H extra beams for rec to still return k items.
- head / torso: "head" is the top ``head_fraction`` (1%) of items by train interactions.

The rank of the target is 1-based within the top k returned (k = 30); a miss has no rank and
scores 0 in every metric, so MRR here is MRR@k.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from semid.io import SemidError

KS = (10, 30)
NDCG_K = 30


class EvaluationError(SemidError):
    pass


# --------------------------------------------------------------------------- metrics


def hit_rank(ranked: Sequence[int], target: int) -> int | None:
    """1-based position of ``target`` in ``ranked``, None when absent."""
    for position, item in enumerate(ranked, start=1):
        if item == target:
            return position
    return None


def recall_at_k(ranks: Sequence[int | None], k: int) -> float:
    """Share of examples whose target ranks within the first k."""
    _check_nonempty(ranks)
    return float(np.mean([r is not None and r <= k for r in ranks]))


def ndcg_at_k(ranks: Sequence[int | None], k: int) -> float:
    """With one relevant item the ideal DCG is 1, so NDCG is 1/log2(rank + 1) within k, else 0."""
    _check_nonempty(ranks)
    return float(np.mean([1.0 / math.log2(r + 1) if r is not None and r <= k else 0.0 for r in ranks]))


def mean_reciprocal_rank(ranks: Sequence[int | None]) -> float:
    _check_nonempty(ranks)
    return float(np.mean([1.0 / r if r is not None else 0.0 for r in ranks]))


def _check_nonempty(ranks: Sequence[Any]) -> None:
    if len(ranks) == 0:
        raise EvaluationError("no examples to score: the test set is empty")


def ranking_metrics(ranks: Sequence[int | None], prefix: str = "", suffix: str = "") -> dict[str, float]:
    """The flat metric block every method reports: recall_at_10/30, ndcg_at_30, mrr."""
    metrics = {f"recall_at_{k}": recall_at_k(ranks, k) for k in KS}
    metrics[f"ndcg_at_{NDCG_K}"] = ndcg_at_k(ranks, NDCG_K)
    metrics["mrr"] = mean_reciprocal_rank(ranks)
    return {f"{prefix}{name}{suffix}": value for name, value in metrics.items()}


def segment_metrics(
    ranks: Sequence[int | None], segments: Sequence[str], prefix: str = ""
) -> dict[str, float]:
    """Recall@k and NDCG per head/torso segment; NaN (null in JSON) where a segment is empty."""
    metrics: dict[str, float] = {}
    segments = np.asarray(segments)
    for segment in ("head", "torso"):
        chosen = [r for r, s in zip(ranks, segments) if s == segment]
        for k in KS:
            metrics[f"{prefix}recall_at_{k}_{segment}"] = recall_at_k(chosen, k) if chosen else float("nan")
        metrics[f"{prefix}ndcg_at_{NDCG_K}_{segment}"] = ndcg_at_k(chosen, NDCG_K) if chosen else float("nan")
        metrics[f"{prefix}examples_{segment}"] = len(chosen)
    return metrics


# --------------------------------------------------------------------------- test sets


def search_test_set(queries: pd.DataFrame, item_ids: Sequence[int], sample: int, seed: int) -> pd.DataFrame:
    """Test queries of known items, a seeded subsample of ``sample`` rows (0 = all)."""
    known = queries[queries["item_id"].isin({int(i) for i in item_ids})]
    if known.empty:
        raise EvaluationError("the search test set is empty: no test query names a known item")
    if sample and len(known) > sample:
        known = known.sample(n=sample, random_state=seed)
    return known.reset_index(drop=True)


def rec_test_set(interactions: pd.DataFrame, history_length: int) -> pd.DataFrame:
    """Per user with a test item: user_id, history (all earlier items), recent (last H), target."""
    ordered = interactions.sort_values(["user_id", "position"])
    rows = []
    for user, group in ordered.groupby("user_id", sort=True):
        test = group[group["split"] == "test"]
        if test.empty:
            continue
        before = group[group["position"] < test["position"].iloc[0]]["item_id"].astype(int).tolist()
        if before:
            rows.append(
                {
                    "user_id": int(user),
                    "history": before,
                    "recent": before[-history_length:],
                    "target_item": int(test["item_id"].iloc[0]),
                }
            )
    if not rows:
        raise EvaluationError("the rec test set is empty: no user has a test item after a history")
    return pd.DataFrame(rows)


def train_popularity(interactions: pd.DataFrame, item_ids: Sequence[int]) -> np.ndarray:
    """Train interactions per item, aligned with ``item_ids``."""
    counts = interactions[interactions["split"] == "train"]["item_id"].value_counts()
    return np.asarray([int(counts.get(int(i), 0)) for i in item_ids], dtype=np.int64)


def head_items(interactions: pd.DataFrame, item_ids: Sequence[int], fraction: float) -> set[int]:
    """The top ``fraction`` of the catalogue by train interactions (ties broken by item id)."""
    counts = train_popularity(interactions, item_ids)
    n_head = max(1, math.ceil(fraction * len(item_ids))) if fraction > 0 else 0
    order = np.lexsort((np.asarray(item_ids), -counts))[:n_head]
    return {int(item_ids[i]) for i in order}


# --------------------------------------------------------------------------- baselines


def _rows_to_items(ranked_rows: np.ndarray, item_ids: np.ndarray) -> list[list[int]]:
    return [[int(item_ids[r]) for r in row] for row in ranked_rows]


def bm25_search(items: pd.DataFrame, texts: Sequence[str], k: int) -> list[list[int]]:
    """BM25 over item_text (English stop words removed), top k items per query."""
    import bm25s

    corpus = bm25s.tokenize(items["item_text"].tolist(), stopwords="en", show_progress=False)
    retriever = bm25s.BM25()
    retriever.index(corpus, show_progress=False)
    queries = bm25s.tokenize(list(texts), stopwords="en", show_progress=False)
    results, _ = retriever.retrieve(queries, k=min(k, len(items)), show_progress=False, n_threads=1)
    return _rows_to_items(np.asarray(results), items["item_id"].to_numpy())


class DenseIndex:
    """A run's item embeddings for kNN: queries through its query encoder (loaded on first use),
    histories as the mean of their item vectors. Results are (items, dot-product scores) per input."""

    def __init__(self, embeddings_dir: Path):
        from semid.embed import load_embedding_meta, load_item_embeddings

        self.embeddings_dir = Path(embeddings_dir)
        self.meta = load_embedding_meta(self.embeddings_dir)
        self.item_ids, spaces = load_item_embeddings(self.embeddings_dir)
        query_space = self.meta.get("query_space") or ("search" if "search" in spaces else "joint")
        self.search_space = spaces[query_space]
        self.rec_space = spaces["rec" if "rec" in spaces else "joint"]
        self.row_of = {int(item): row for row, item in enumerate(self.item_ids)}
        self._encoder: Any = None

    @property
    def searchable(self) -> bool:
        """Whether the run has a query encoder into its item space (not so for rec, concat, svd)."""
        return bool(self.meta.get("query_encoder"))

    @property
    def encoder(self):
        from semid.embed import load_query_encoder

        if self._encoder is None and self.searchable:
            self._encoder = load_query_encoder(self.embeddings_dir)
        return self._encoder

    def _ranked(
        self, vectors: np.ndarray, space: np.ndarray, k: int, exclude: list[set[int]] | None = None
    ) -> tuple[list[list[int]], list[list[float]]]:
        from semid.embed import top_k

        rows = top_k(vectors, space, min(k, len(space)), exclude=exclude)  # (n, k) item rows
        scores = np.einsum("nd,nkd->nk", vectors, space[rows])
        if exclude is not None:  # fewer than k unseen items: drop the excluded rows top_k padded with
            keep = [[r not in seen for r in row] for row, seen in zip(rows.tolist(), exclude)]
        else:
            keep = [[True] * rows.shape[1]] * len(rows)
        items = [[int(self.item_ids[r]) for r, ok in zip(row, ks) if ok] for row, ks in zip(rows, keep)]
        item_scores = [[float(s) for s, ok in zip(row, ks) if ok] for row, ks in zip(scores, keep)]
        return items, item_scores

    def search(self, texts: Sequence[str], k: int) -> tuple[list[list[int]], list[list[float]]] | None:
        """kNN of query vectors (the run's query encoder) over the item space; None where no encoder."""
        if not self.searchable:
            return None
        vectors = self.encoder.encode(
            list(texts), batch_size=64, convert_to_numpy=True, normalize_embeddings=False
        )
        return self._ranked(np.asarray(vectors, dtype=np.float32), self.search_space, k)

    def recommend(
        self, recent: Sequence[list[int]], exclude: Sequence[set[int]], k: int
    ) -> tuple[list[list[int]], list[list[float]]]:
        """kNN of the mean of the recent history's item vectors (rec space), seen items excluded."""
        from semid.embed import history_vectors

        vectors = history_vectors(self.rec_space, [[self.row_of[i] for i in h] for h in recent])
        excluded_rows = [{self.row_of[i] for i in seen} for seen in exclude]
        return self._ranked(vectors, self.rec_space, k, exclude=excluded_rows)


def dense_search(embeddings_dir: Path, texts: Sequence[str], k: int) -> list[list[int]] | None:
    """kNN of query vectors (the run's query encoder) over the item space; None where no encoder."""
    found = DenseIndex(embeddings_dir).search(texts, k)
    return found[0] if found is not None else None


def dense_rec(
    embeddings_dir: Path, recent: Sequence[list[int]], exclude: Sequence[set[int]], k: int
) -> list[list[int]]:
    """kNN of the mean of the recent history's item vectors (rec space), seen items excluded."""
    return DenseIndex(embeddings_dir).recommend(recent, exclude, k)[0]


def popularity_rec(
    popularity: np.ndarray, item_ids: np.ndarray, exclude: Sequence[set[int]], k: int
) -> list[list[int]]:
    """The most popular train items the user does not have yet."""
    order = np.lexsort((item_ids, -popularity))
    ranked_all = [int(item_ids[i]) for i in order[: k + max((len(s) for s in exclude), default=0)]]
    return [[i for i in ranked_all if i not in seen][:k] for seen in exclude]


# --------------------------------------------------------------------------- the evaluation


@dataclass
class EvaluationResult:
    search: dict[str, float]
    rec: dict[str, float]
    baselines: dict[str, float]
    search_predictions: pd.DataFrame
    rec_predictions: pd.DataFrame


def _predictions(
    inputs: Sequence[str], targets: Sequence[int], ranked: Sequence[list[int]], **extra
) -> pd.DataFrame:
    ranks = [hit_rank(r, t) for r, t in zip(ranked, targets)]
    frame = pd.DataFrame(
        {
            "input": list(inputs),
            "target_item": np.asarray(targets, dtype=np.int64),
            "ranked_item_ids": [list(map(int, r)) for r in ranked],
            "hit_rank": pd.array(ranks, dtype="Int64"),
        }
    )
    for name, values in extra.items():
        frame[name] = list(values)
    return frame


def _ranks(ranked: Sequence[list[int]], targets: Sequence[int]) -> list[int | None]:
    return [hit_rank(r, t) for r, t in zip(ranked, targets)]


def _decode_settings(config, k: int) -> dict[str, Any]:
    return {
        "k": k,
        "num_beam_groups": config.num_beam_groups,
        "diversity_penalty": config.diversity_penalty,
        "constrained": config.constrained,
        "batch_size": config.batch_size,
    }


def decode_search(generator, texts: Sequence[str], config, k: int | None = None):
    """The evaluation's search decoding (``evaluate`` config: beams, groups, trie) of raw query texts."""
    from semid.generator import SEARCH_PREFIX, generate_items

    k = k or config.k
    inputs = [SEARCH_PREFIX + text for text in texts]
    beams = max(config.num_beams, k)
    return generate_items(generator, inputs, "search", num_beams=beams, **_decode_settings(config, k))


def decode_rec(
    generator, recent: Sequence[list[int]], seen: Sequence[set[int]], config, k: int | None = None
):
    """The evaluation's rec decoding: the last H items as input, the user's items (``seen``) removed."""
    from semid.generator import generate_items, rec_source

    k = k or config.k
    inputs = [rec_source(generator.table, history) for history in recent]
    # Removing seen items must still leave k: widen the beam by the longest input history.
    extra = 0 if config.num_beam_groups > 1 else generator.history_length
    return generate_items(
        generator, inputs, "rec", num_beams=max(config.num_beams, k) + extra, exclude=list(seen),
        **_decode_settings(config, k),
    )  # fmt: skip


def evaluate_all(
    generator,
    items: pd.DataFrame,
    interactions: pd.DataFrame,
    test_queries: pd.DataFrame,
    embeddings_dir: Path | None,
    config,
    seed: int,
) -> EvaluationResult:
    """Generator (search + rec) and baselines on the same test sets; metrics and per-example predictions."""
    from semid.generator import SEARCH_PREFIX, rec_source

    k = config.k
    item_ids = items["item_id"].to_numpy(np.int64)

    # search
    search_set = search_test_set(test_queries, item_ids, config.search_queries, seed)
    search_inputs = [SEARCH_PREFIX + text for text in search_set["text"]]
    decoded = decode_search(generator, search_set["text"].tolist(), config)
    search_targets = search_set["item_id"].astype(int).tolist()
    search_ranks = _ranks(decoded.ranked_items, search_targets)
    search = ranking_metrics(search_ranks)
    search.update(
        examples=len(search_set),
        invalid_id_rate=decoded.invalid_id_rate,
        inputs_per_second=decoded.inputs_per_second,
    )
    search_predictions = _predictions(
        search_inputs, search_targets, decoded.ranked_items, query_id=search_set["query_id"].astype(str)
    )

    # rec
    rec_set = rec_test_set(interactions, generator.history_length)
    head = head_items(interactions, item_ids, config.head_fraction)
    segments = ["head" if t in head else "torso" for t in rec_set["target_item"]]
    seen = [set(h) for h in rec_set["history"]]
    rec_inputs = [rec_source(generator.table, recent) for recent in rec_set["recent"]]
    decoded_rec = decode_rec(generator, rec_set["recent"].tolist(), seen, config)
    rec_targets = rec_set["target_item"].tolist()
    rec_ranks = _ranks(decoded_rec.ranked_items, rec_targets)
    rec = ranking_metrics(rec_ranks)
    rec.update(segment_metrics(rec_ranks, segments))
    rec.update(
        examples=len(rec_set),
        invalid_id_rate=decoded_rec.invalid_id_rate,
        inputs_per_second=decoded_rec.inputs_per_second,
        head_items=len(head),
    )
    rec_predictions = _predictions(
        rec_inputs, rec_targets, decoded_rec.ranked_items, user_id=rec_set["user_id"], segment=segments
    )

    # baselines, same test sets
    baselines: dict[str, float] = {}
    bm25 = bm25_search(items, search_set["text"].tolist(), k)
    baselines.update(ranking_metrics(_ranks(bm25, search_targets), prefix="bm25_search_"))
    dense = dense_search(embeddings_dir, search_set["text"].tolist(), k) if embeddings_dir else None
    dense_ranks = _ranks(dense, search_targets) if dense is not None else None
    dense_block = (
        ranking_metrics(dense_ranks, prefix="dense_search_")
        if dense_ranks
        else {name: float("nan") for name in ranking_metrics([None], prefix="dense_search_")}
    )
    baselines.update(dense_block)
    baselines["dense_search_applicable"] = int(dense is not None)
    if embeddings_dir:
        dense_rec_ranked = dense_rec(embeddings_dir, rec_set["recent"].tolist(), seen, k)
        ranks = _ranks(dense_rec_ranked, rec_targets)
        baselines.update(ranking_metrics(ranks, prefix="dense_rec_"))
        baselines.update(segment_metrics(ranks, segments, prefix="dense_rec_"))
    popular = popularity_rec(train_popularity(interactions, item_ids), item_ids, seen, k)
    ranks = _ranks(popular, rec_targets)
    baselines.update(ranking_metrics(ranks, prefix="popularity_rec_"))
    baselines.update(segment_metrics(ranks, segments, prefix="popularity_rec_"))
    for frame, ranked in ((search_predictions, bm25), (rec_predictions, popular)):
        frame["baseline_hit_rank"] = pd.array(_ranks(ranked, frame["target_item"].tolist()), dtype="Int64")
    return EvaluationResult(search, rec, baselines, search_predictions, rec_predictions)
