"""Every method that ranks items, behind one shape: ``Retriever``.

A retriever answers the tasks it names in ``tasks``:

- ``search(texts, k)``: the top k item ids per query text;
- ``recommend(histories, k, exclude_seen)``: the top k item ids per history (oldest first),
  never one of ``exclude_seen[i]`` (the user's items, which may be more than the history given).

Here: BM25 over item text, dense kNN over item embeddings, train popularity. The generator's
adapter lives beside its decoding, ``semid.evaluate.GeneratorRetriever``. All are scored by
``semid.metrics`` on the sets of ``semid.testsets``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence, Set
from typing import Protocol

import bm25s
import numpy as np
import pandas as pd

from semid.io import SemidError

TASKS = ("search", "rec")

Ranked = list[list[int]]  # item ids per input, best first
Scored = tuple[Ranked, list[list[float]]]  # the same, with each item's score


class RetrieverError(SemidError):
    pass


class Retriever(Protocol):
    tasks: tuple[str, ...]  # which of TASKS it answers

    def search(self, texts: Sequence[str], k: int) -> Ranked: ...

    def recommend(
        self, histories: Sequence[Sequence[int]], k: int, exclude_seen: Sequence[Set[int]] | None = None
    ) -> Ranked: ...


def _unanswered(retriever: object, task: str) -> RetrieverError:
    return RetrieverError(f"{type(retriever).__name__} does not answer {task}; it answers {retriever.tasks}")


# ------------------------------------------------------------------------------ BM25


class BM25Retriever:
    """BM25 over item_text (English stop words removed), indexed once."""

    tasks = ("search",)

    def __init__(self, items: pd.DataFrame):
        # Deferred: semid.embed imports this module, and only evaluate and serve need bm25s.

        self._bm25s = bm25s
        self.item_ids = items["item_id"].to_numpy()
        corpus = bm25s.tokenize(items["item_text"].tolist(), stopwords="en", show_progress=False)
        self._index = bm25s.BM25()
        self._index.index(corpus, show_progress=False)

    def search(self, texts: Sequence[str], k: int) -> Ranked:
        queries = self._bm25s.tokenize(list(texts), stopwords="en", show_progress=False)
        results, _ = self._index.retrieve(
            queries, k=min(k, len(self.item_ids)), show_progress=False, n_threads=1
        )  # (n, k) item rows
        return [[int(self.item_ids[row]) for row in rows] for rows in np.asarray(results)]

    def recommend(self, histories, k, exclude_seen=None) -> Ranked:
        raise _unanswered(self, "rec")


# ------------------------------------------------------------------------------ dense kNN


def top_k(
    query_vectors: np.ndarray,
    item_vectors: np.ndarray,
    k: int,
    exclude: list[set[int]] | None = None,
    batch: int = 1024,
) -> np.ndarray:
    """(n_queries, k) item rows ranked by dot product; ``exclude`` removes rows per query."""
    ranked = np.empty((len(query_vectors), k), dtype=np.int64)
    for start in range(0, len(query_vectors), batch):
        scores = query_vectors[start : start + batch] @ item_vectors.T
        if exclude is not None:
            for offset, rows in enumerate(exclude[start : start + batch]):
                if rows:
                    scores[offset, list(rows)] = -np.inf
        part = np.argpartition(-scores, kth=min(k, scores.shape[1] - 1), axis=1)[:, :k]
        order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)[:, ::-1]
        ranked[start : start + batch] = np.take_along_axis(part, order, axis=1)
    return ranked


def history_vectors(space: np.ndarray, histories: list[list[int]]) -> np.ndarray:
    """Mean of each history's item vectors (rows), the simplest user vector there is; zero if empty."""
    return np.stack(
        [space[rows].mean(axis=0) if rows else np.zeros(space.shape[1], np.float32) for rows in histories]
    )


class DenseRetriever:
    """kNN by dot product over item embeddings.

    Search encodes queries with ``encode_queries`` (texts -> (n, dim) vectors in
    ``search_space``; None where the embedding has no query encoder, and then it answers rec
    only). Rec ranks by the mean of the history's item vectors in ``rec_space``.
    """

    def __init__(
        self,
        item_ids: np.ndarray,  # (n_items,), the row order of both spaces
        search_space: np.ndarray | None,  # (n_items, dim)
        rec_space: np.ndarray,  # (n_items, dim')
        encode_queries: Callable[[list[str]], np.ndarray] | None,
    ):
        self.item_ids = np.asarray(item_ids)
        self.search_space, self.rec_space = search_space, rec_space
        self.encode_queries = encode_queries
        self.row_of = {int(item): row for row, item in enumerate(self.item_ids)}
        self.tasks = TASKS if encode_queries is not None else ("rec",)

    def _ranked(
        self, vectors: np.ndarray, space: np.ndarray, k: int, exclude: list[set[int]] | None = None
    ) -> Scored:
        rows = top_k(vectors, space, min(k, len(space)), exclude=exclude)  # (n, k) item rows
        scores = np.einsum("nd,nkd->nk", vectors, space[rows])
        if exclude is not None:  # fewer than k unseen items: drop the excluded rows top_k padded with
            keep = [[r not in seen for r in row] for row, seen in zip(rows.tolist(), exclude)]
        else:
            keep = [[True] * rows.shape[1]] * len(rows)
        items = [[int(self.item_ids[r]) for r, ok in zip(row, ks) if ok] for row, ks in zip(rows, keep)]
        item_scores = [[float(s) for s, ok in zip(row, ks) if ok] for row, ks in zip(scores, keep)]
        return items, item_scores

    def scored_search(self, texts: Sequence[str], k: int) -> Scored:
        if self.encode_queries is None:
            raise _unanswered(self, "search")
        vectors = np.asarray(self.encode_queries(list(texts)), dtype=np.float32)
        return self._ranked(vectors, self.search_space, k)

    def scored_recommend(
        self, histories: Sequence[Sequence[int]], k: int, exclude_seen: Sequence[Set[int]] | None = None
    ) -> Scored:
        vectors = history_vectors(self.rec_space, [[self.row_of[i] for i in h] for h in histories])
        excluded_rows = None if exclude_seen is None else [{self.row_of[i] for i in seen} for seen in exclude_seen]
        return self._ranked(vectors, self.rec_space, k, exclude=excluded_rows)

    def search(self, texts: Sequence[str], k: int) -> Ranked:
        return self.scored_search(texts, k)[0]

    def recommend(
        self, histories: Sequence[Sequence[int]], k: int, exclude_seen: Sequence[Set[int]] | None = None
    ) -> Ranked:
        return self.scored_recommend(histories, k, exclude_seen)[0]


# ------------------------------------------------------------------------------ popularity


class PopularityRetriever:
    """The most popular train items the user does not have yet (ties broken by item id)."""

    tasks = ("rec",)

    def __init__(self, item_ids: np.ndarray, popularity: np.ndarray):
        self.item_ids = np.asarray(item_ids)
        self.order = np.lexsort((self.item_ids, -np.asarray(popularity)))  # item rows, most popular first

    def search(self, texts, k) -> Ranked:
        raise _unanswered(self, "search")

    def recommend(
        self, histories: Sequence[Sequence[int]], k: int, exclude_seen: Sequence[Set[int]] | None = None
    ) -> Ranked:
        exclude = list(exclude_seen) if exclude_seen is not None else [set()] * len(histories)
        # Enough of the global ranking that k survive removing the largest seen set.
        head = self.order[: k + max((len(s) for s in exclude), default=0)]
        ranked_all = [int(self.item_ids[i]) for i in head]
        return [[i for i in ranked_all if i not in seen][:k] for seen in exclude]


def run_task(retriever: Retriever, task: str, inputs: Sequence, k: int, exclude_seen=None) -> Ranked:
    """``search`` or ``recommend`` by task name, so a scorer can loop over tasks."""
    if task not in retriever.tasks:
        raise _unanswered(retriever, task)
    if task == "search":
        return retriever.search(inputs, k)
    return retriever.recommend(inputs, k, exclude_seen)
