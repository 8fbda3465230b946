"""score-queries: an external item_id,query set scored by the project's one evaluator.

Each method is a ``semid.retrievers.Retriever`` (the generator through
``semid.evaluate.GeneratorRetriever``, the evaluate stage's decoding; the run's dense kNN; BM25),
asked through ``semid.retrievers.run_task`` as the evaluate stage asks it, and every number comes
from ``semid.metrics`` (hit ranks, Recall@k, MRR). Which rows count is checked by
``semid.serve.checks.check_query_rows``: unlike ``semid.testsets.search_test_set`` it names every
row it leaves out, since the file is the user's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from semid.retrievers import Retriever

SCORE_KS = (1, 10, 30)  # Recall@k reported; rankings hold max(SCORE_KS) items, so ``mrr`` is MRR@30


@dataclass
class QueryScores:
    """score-queries: metrics per method on the rows that name a known item, and the rows skipped."""

    rows: int
    scored: int
    skipped: list[dict[str, Any]]  # {"row": 0-based row, "item_id": as given, "reason": ...}
    methods: dict[str, dict[str, float] | None]  # None: not applicable to this run (dense, no encoder)
    ranked: dict[str, list[list[int]]] = field(default_factory=dict)  # method -> top 30 per scored row

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "scored": self.scored, "skipped": self.skipped, "metrics": self.methods}


def score_search(
    retrievers: Mapping[str, Retriever | None], texts: Sequence[str], targets: Sequence[int]
) -> tuple[dict[str, dict[str, float] | None], dict[str, list[list[int]]]]:
    """(metrics per method, top max(SCORE_KS) per text) of each retriever's search for ``targets``;
    a None retriever (not applicable to the run) scores None."""
    # Here, not at the top: semid.metrics and semid.retrievers import numpy and pandas (~0.35 s),
    # which would come before the CLI has checked a request.
    from semid.metrics import hit_ranks, mean_reciprocal_rank, recall_at_k
    from semid.retrievers import run_task

    k = max(SCORE_KS)
    methods: dict[str, dict[str, float] | None] = {}
    ranked: dict[str, list[list[int]]] = {}
    for name, retriever in retrievers.items():
        if retriever is None:
            methods[name] = None
            continue
        ranked[name] = run_task(retriever, "search", list(texts), k)
        ranks = hit_ranks(ranked[name], targets)
        methods[name] = {f"recall_at_{n}": recall_at_k(ranks, n) for n in SCORE_KS}
        methods[name]["mrr"] = mean_reciprocal_rank(ranks)
    return methods, ranked
