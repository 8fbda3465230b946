"""``Pipeline``: one loaded run answering search, recommend and score-queries.

A thin facade: where the run is and loading it is ``semid.serve.runs``, checking requests is
``semid.serve.checks``, scoring a query file is ``semid.serve.scoring``; the answers come from the
evaluate stage's own decoding (``semid.evaluate.decode_search`` / ``decode_rec``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semid.serve.checks import (
    ServeError, check_items, check_k, check_method, check_query, check_query_frame, check_query_rows,
    check_user, read_query_file,
)
from semid.serve.runs import (
    ARTIFACTS, load_catalogue, load_dense_index, load_evaluate_config, load_trained_generator,
    load_train_histories, locate_run,
)
from semid.serve.scoring import QueryScores, score_search

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Hit:
    """One ranked item."""

    rank: int
    item_id: int
    title: str
    semantic_id: str
    score: float | None  # generative: the ID's length-normalised log-probability; dense: dot product

    def as_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank, "item_id": self.item_id, "title": self.title,
            "semantic_id": self.semantic_id, "score": self.score,
        }


class Pipeline:
    """A trained run, loaded once: ``search``, ``recommend``, ``recommend_user``, ``score_queries``.

    Items, semantic IDs and the generator load here; the train histories and the dense index on
    first use. ``threads``: torch CPU threads, set (with ``configure_torch``, as the evaluate stage
    does) before anything loads; None leaves the process as it is. One query at a time is too small
    a job to split: on 2 cores shared with other work a search took ~30 ms (p50) at 1 thread,
    120-160 ms at 2. Rankings were the same at both counts; scores can differ in the 6th decimal.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        rev: str | None = None,
        exp: str | None = None,
        device: str | None = None,
        threads: int | None = None,
    ):
        self.run = locate_run(root, rev, exp)  # fails on a run without outputs, before anything heavy
        self.root, self.source = self.run.root, self.run.source
        if threads is not None:
            # torch + transformers (the generator) ~3-5 s, most of a cold `semid search`.
            from semid.generator import configure_torch

            configure_torch(threads)
        self.evaluate_config = load_evaluate_config(self.run)
        self.items = load_catalogue(self.run)
        self.table, self.generator = load_trained_generator(self.run, self.items, device)
        self._train_histories: dict[int, list[int]] | None = None
        self._dense = None

    @property
    def train_histories(self) -> dict[int, list[int]]:
        """user -> train items in chronological order, loaded on first use."""
        if self._train_histories is None:
            self._train_histories = load_train_histories(self.run)
        return self._train_histories

    @property
    def dense(self):
        """The run's dense index (semid.evaluate.DenseIndex), loaded on first use."""
        if self._dense is None:
            self._dense = load_dense_index(self.run)
        return self._dense

    # ----------------------------------------------------------------- answers

    def _hits(self, items: list[int], scores: list[float], task: str) -> list[Hit]:
        # Loaded by __init__ already; at the top it would put torch into every CLI error path.
        from semid.generator import task_space

        space = task_space(self.table.spaces, task)
        return [
            Hit(
                rank=rank, item_id=int(item), title=str(self.items.at[item, "title"]),
                semantic_id=self.table.sid(space, int(item)),
                score=None if score is None or math.isnan(score) else round(float(score), 6),
            )
            for rank, (item, score) in enumerate(zip(items, scores), start=1)
        ]

    def search(self, query: str, k: int = 10, method: str = "generative") -> list[Hit]:
        """The k items best matching ``query``, best first."""
        query, k, method = check_query(query), check_k(k), check_method(method)
        if method == "generative":
            # At the top, pandas and numpy (~0.35 s) would come before the CLI has checked a request.
            from semid.evaluate import decode_search

            decoded = decode_search(self.generator, [query], self.evaluate_config, k)
            return self._hits(decoded.ranked_items[0], decoded.scores[0], "search")
        found = self.dense.search([query], k)
        if found is None:
            raise ServeError(
                f"this run's embedding ({self.dense.meta.get('method')}) has no query encoder, so dense "
                "search does not apply; use method 'generative'"
            )
        return self._hits(found[0][0], found[1][0], "search")

    def check_items(self, item_ids: Sequence[Any]) -> list[int]:
        """The ids as ints, or a ServeError naming every id that is not in the catalogue."""
        return check_items(item_ids, set(self.items.index), self.source, ARTIFACTS["items"][0])

    def recommend(
        self, history_item_ids: Sequence[int], k: int = 10, method: str = "generative"
    ) -> list[Hit]:
        """The k items to watch next after ``history_item_ids`` (oldest first); seen items never return."""
        history, k, method = self.check_items(history_item_ids), check_k(k), check_method(method)
        recent, seen = history[-self.generator.history_length :], set(history)
        if method == "generative":
            # At the top, pandas and numpy (~0.35 s) would come before the CLI has checked a request.
            from semid.evaluate import decode_rec

            decoded = decode_rec(self.generator, [recent], [seen], self.evaluate_config, k)
            return self._hits(decoded.ranked_items[0], decoded.scores[0], "rec")
        items, scores = self.dense.recommend([recent], [seen], k)
        return self._hits(items[0], scores[0], "rec")

    def user_history(self, user_id: Any) -> list[int]:
        """A user's train items, oldest first; unknown users are named."""
        histories = self.train_histories
        return histories[check_user(user_id, histories, self.source)]

    def recommend_user(self, user_id: int, k: int = 10, method: str = "generative") -> list[Hit]:
        """``recommend`` on the user's train history."""
        return self.recommend(self.user_history(user_id), k, method)

    def score_queries(self, queries: pd.DataFrame | str | Path) -> QueryScores:
        """Recall@1/10/30 and MRR@30 of the generator, dense kNN and BM25 on (item_id, query) rows.

        Rows whose item id is not in the catalogue (or not an integer) or whose query is empty are
        skipped and listed, never dropped silently.
        """
        # At the top, pandas and numpy (~0.35 s) would come before the CLI has checked a request.
        import pandas as pd

        from semid.evaluate import GeneratorRetriever
        from semid.retrievers import BM25Retriever

        if not isinstance(queries, pd.DataFrame):
            queries = read_query_file(queries)
        frame = check_query_frame(queries)
        targets, texts, skipped = check_query_rows(frame, set(self.items.index))
        dense = self.dense if self.run.has("embeddings") else None
        retrievers = {
            "generative": GeneratorRetriever(self.generator, self.evaluate_config),
            "dense": dense.retriever if dense is not None and dense.searchable else None,
            "bm25": BM25Retriever(self.items.reset_index(drop=True)),
        }
        methods, ranked = score_search(retrievers, texts, targets)
        return QueryScores(len(frame), len(targets), skipped, methods, ranked)
