"""Ranking metrics with one held-out target per example: the only scorer in semid.

Every ranking is first reduced to the target's *hit rank* (1-based position within the ranked
items returned, None when absent); every metric is a mean over those ranks, a miss scoring 0.
The evaluate stage, the embedder's dense ceilings and ``semid serve``'s query scoring all call
these functions, so a number means the same thing wherever it is reported.

- ``recall_at_k``: share of targets ranked within the first k (= HitRate@k with one target).
- ``ndcg_at_k``: one relevant item, so the ideal DCG is 1 and NDCG is 1/log2(rank + 1) within k.
- ``mean_reciprocal_rank``: 1/rank, MRR@k when k is given, else over however many items each
  ranking holds. The evaluate stage's ``mrr`` key is the latter over rankings of ``evaluate.k``
  (30) items, i.e. MRR@30.

``tests/test_metrics.py`` checks these against ir-measures (the TREC implementation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from semid.io import SemidError

KS = (10, 30)  # the Recall@k every method reports
NDCG_K = 30
SEGMENTS = ("head", "torso")

Rank = int | None  # 1-based position of the target, None when it was not returned


class EvaluationError(SemidError):
    pass


def hit_rank(ranked: Sequence[int], target: int) -> Rank:
    """1-based position of ``target`` in ``ranked``, None when absent."""
    for position, item in enumerate(ranked, start=1):
        if item == target:
            return position
    return None


def hit_ranks(ranked_lists: Sequence[Sequence[int]], targets: Sequence[int]) -> list[Rank]:
    """``hit_rank`` of each example's target in its ranked items."""
    return [hit_rank(ranked, target) for ranked, target in zip(ranked_lists, targets)]


def recall_at_k(ranks: Sequence[Rank], k: int) -> float:
    """Share of examples whose target ranks within the first k."""
    _check_nonempty(ranks)
    return float(np.mean([r is not None and r <= k for r in ranks]))


def ndcg_at_k(ranks: Sequence[Rank], k: int) -> float:
    """With one relevant item the ideal DCG is 1, so NDCG is 1/log2(rank + 1) within k, else 0."""
    _check_nonempty(ranks)
    return float(np.mean([1.0 / math.log2(r + 1) if r is not None and r <= k else 0.0 for r in ranks]))


def mean_reciprocal_rank(ranks: Sequence[Rank], k: int | None = None) -> float:
    """MRR@k: 1/rank within k, else 0; ``k=None`` counts every rank the rankings hold."""
    _check_nonempty(ranks)
    return float(np.mean([1.0 / r if r is not None and (k is None or r <= k) else 0.0 for r in ranks]))


def _check_nonempty(ranks: Sequence[Any]) -> None:
    if len(ranks) == 0:
        raise EvaluationError("no examples to score: the test set is empty")


def ranking_metrics(ranks: Sequence[Rank], prefix: str = "", suffix: str = "") -> dict[str, float]:
    """The flat metric block every method reports: recall_at_10/30, ndcg_at_30, mrr.

    ``mrr`` is uncapped here on purpose: the rankings scored hold ``evaluate.k`` items, so it is
    MRR@k for that k, the definition metrics/*.json have always used.
    """
    metrics = {f"recall_at_{k}": recall_at_k(ranks, k) for k in KS}
    metrics[f"ndcg_at_{NDCG_K}"] = ndcg_at_k(ranks, NDCG_K)
    metrics["mrr"] = mean_reciprocal_rank(ranks)
    return {f"{prefix}{name}{suffix}": value for name, value in metrics.items()}


def segment_metrics(ranks: Sequence[Rank], segments: Sequence[str], prefix: str = "") -> dict[str, float]:
    """Recall@k and NDCG per head/torso segment; NaN (null in JSON) where a segment is empty."""
    metrics: dict[str, float] = {}
    segments = np.asarray(segments)
    for segment in SEGMENTS:
        chosen = [r for r, s in zip(ranks, segments) if s == segment]
        for k in KS:
            metrics[f"{prefix}recall_at_{k}_{segment}"] = recall_at_k(chosen, k) if chosen else float("nan")
        metrics[f"{prefix}ndcg_at_{NDCG_K}_{segment}"] = ndcg_at_k(chosen, NDCG_K) if chosen else float("nan")
        metrics[f"{prefix}examples_{segment}"] = len(chosen)
    return metrics
