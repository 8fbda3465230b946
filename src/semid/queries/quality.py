"""The stage's metrics: counts per split, query length, duplicate and title-leak rates, the run's counts."""

from __future__ import annotations

from typing import Any

import pandas as pd

from semid.queries.runner import QueryRun
from semid.queries.titles import contains_title, normalize, title_words


def query_metrics(run: QueryRun, splits: dict[str, pd.DataFrame], titles: dict[int, str]) -> dict[str, Any]:
    """Counts per split, mean length, duplicate and title-leak rates, failures, time."""
    everything = pd.concat(splits.values(), ignore_index=True)
    texts = everything["text"].tolist()
    normalized = [normalize(t) for t in texts]
    item_titles = [titles[i] for i in everything["item_id"]]
    n = max(1, len(texts))
    metrics: dict[str, Any] = {f"queries_{split}": int(len(frame)) for split, frame in splits.items()}
    metrics.update(
        items_with_queries=len(run.queries),
        mean_words=sum(len(t.split()) for t in texts) / n,
        duplicate_rate=1 - len(set(normalized)) / n,  # identical queries across items (after normalising)
        title_leak_rate=sum(contains_title(t, title) for t, title in zip(texts, item_titles)) / n,
        title_word_rate=sum(bool(set(q.split()) & title_words(title)) for q, title in zip(normalized, item_titles)) / n,
        backend=run.backend,
        model=run.model,
    )
    metrics.update(run.stats)
    metrics["queries_per_second"] = sum(len(q) for q in run.queries.values()) / max(run.stats["seconds"], 1e-9)
    return metrics
