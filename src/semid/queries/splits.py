"""The stage's output: each item's generated list split into train / valid / test, written and read.

The generated list is ordered originals first, then their paraphrases in the same order. The
split takes train from the front, test from the end, valid just before test: with the paper's
20 = 10 + 10, every test query is a paraphrase of a train query, as in the paper.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from semid.io import SemidError, atomic_dir, atomic_path
from semid.queries.runner import QueryRun

if TYPE_CHECKING:
    from semid.config import QueriesConfig

SPLITS = ("train", "valid", "test")
FAILURES_FILE = "failures.json"


def split_queries(run: QueryRun, config: QueriesConfig) -> dict[str, pd.DataFrame]:
    """train = the first n_train, test = the last n_test, valid = the n_valid before test."""
    rows: dict[str, list[tuple[str, int, str, str]]] = {split: [] for split in SPLITS}
    n = config.n_generated
    ranges = {
        "train": range(0, config.n_train),
        "valid": range(n - config.n_test - config.n_valid, n - config.n_test),
        "test": range(n - config.n_test, n),
    }
    for item_id in sorted(run.queries):
        generated = run.queries[item_id]
        for split, positions in ranges.items():
            rows[split].extend((f"{item_id}-{i:02d}", item_id, generated[i], run.backend) for i in positions)
    frames = {}
    for split, split_rows in rows.items():
        frame = pd.DataFrame(split_rows, columns=["query_id", "item_id", "text", "backend"])
        frames[split] = frame.astype({"query_id": str, "item_id": "int64", "text": str, "backend": str})
    return frames


def write_queries(splits: dict[str, pd.DataFrame], folder: Path, failures: list[tuple[int, str]]) -> None:
    with atomic_dir(folder) as tmp:
        for split, frame in splits.items():
            frame.to_parquet(tmp / f"{split}.parquet", index=False)
        write_failures(tmp / FAILURES_FILE, failures)


def write_failures(path: Path, failures: list[tuple[int, str]]) -> None:
    """The items that got no queries, with why: [{"item_id": ..., "reason": ...}]."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps([{"item_id": i, "reason": r} for i, r in failures], indent=1) + "\n")


def load_queries(folder: str | Path, split: str) -> pd.DataFrame:
    """One split of data/queries: query_id, item_id, text, backend."""
    if split not in SPLITS:
        raise SemidError(f"query split {split!r} is not valid; choose one of: {', '.join(SPLITS)}")
    path = Path(folder) / f"{split}.parquet"
    if not path.exists():
        raise SemidError(f"{path} not found; run `dvc repro gen_queries` first")
    return pd.read_parquet(path)
