"""Recall@10/30, NDCG@30 and MRR of the generator and its baselines, on the same test sets.

Protocol (single held-out target per example; the sets are built by ``semid.testsets``):

- search: the test queries (a seeded subsample of ``evaluate.search_queries``); one query, one item.
- rec: every user with a test item; the input is the user's train + valid items before it, the
  last H of them (H = the generator's ``history_length``). Items the user already has are removed
  from every method's ranking (generator, dense kNN, popularity alike), so the generator decodes
  H extra beams for rec to still return k items.
- head / torso: "head" is the top ``head_fraction`` (1%) of items by train interactions.

Every method is a ``semid.retrievers.Retriever`` (the generator through ``GeneratorRetriever``)
and every number comes from ``semid.metrics``: the rank of the target is 1-based within the top
k returned (k = 30); a miss has no rank and scores 0 in every metric, so MRR here is MRR@k.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from semid.embed import load_embedding_meta, load_item_embeddings, load_query_encoder
from semid.id_ceiling import bucket_ids, ceiling_metrics
from semid.metrics import (  # noqa: F401  (re-exported: callers import the metrics from here too)
    KS,
    NDCG_K,
    EvaluationError,
    hit_rank,
    hit_ranks,
    mean_reciprocal_rank,
    ndcg_at_k,
    ranking_metrics,
    recall_at_k,
    segment_metrics,
)
from semid.retrievers import (
    BM25Retriever,
    DenseRetriever,
    PopularityRetriever,
    Ranked,
    Retriever,
    history_vectors,
    run_task,
    top_k,
)
from semid.testsets import head_items, rec_test_set, search_test_set, train_popularity  # noqa: F401

# --------------------------------------------------------------------------- baselines


def bm25_search(items: pd.DataFrame, texts: Sequence[str], k: int) -> list[list[int]]:
    """BM25 over item_text (English stop words removed), top k items per query."""
    return BM25Retriever(items).search(texts, k)


class QueryEncoder:
    """A run's saved query encoder as a function texts -> (n, dim) vectors, loaded on first use
    (rec and the CLI's error paths never need it). The last call's vectors are kept: the dense
    baseline and the ID ceiling encode the same test queries one after the other."""

    def __init__(self, embeddings_dir: Path):
        self.embeddings_dir = Path(embeddings_dir)
        self._model: Any = None
        self._last: tuple[tuple[str, ...], np.ndarray] | None = None

    @property
    def model(self):
        if self._model is None:
            self._model = load_query_encoder(self.embeddings_dir)
        return self._model

    def __call__(self, texts: list[str]) -> np.ndarray:
        key = tuple(texts)
        if self._last is None or self._last[0] != key:
            vectors = self.model.encode(list(texts), batch_size=64, convert_to_numpy=True, normalize_embeddings=False)
            self._last = (key, vectors)
        return self._last[1]


def dense_retriever(embeddings_dir: Path) -> DenseRetriever:
    """The dense retriever of a train_embedder run on disk; search only where it saved a query encoder."""
    meta = load_embedding_meta(embeddings_dir)
    item_ids, spaces = load_item_embeddings(embeddings_dir)
    query_space = meta.get("query_space") or ("search" if "search" in spaces else "joint")
    encoder = QueryEncoder(embeddings_dir) if meta.get("query_encoder") else None
    return DenseRetriever(item_ids, spaces[query_space], spaces["rec" if "rec" in spaces else "joint"], encoder)


class DenseIndex:
    """``dense_retriever`` with scores, for ``semid serve``: results are (items, dot-product
    scores) per input, and search is None where the run has no query encoder."""

    def __init__(self, embeddings_dir: Path):
        self.embeddings_dir = Path(embeddings_dir)
        self.meta = load_embedding_meta(self.embeddings_dir)
        self.retriever = dense_retriever(self.embeddings_dir)

    @property
    def searchable(self) -> bool:
        """Whether the run has a query encoder into its item space (not so for rec, concat, svd)."""
        return "search" in self.retriever.tasks

    @property
    def encoder(self):
        return self.retriever.encode_queries.model if self.searchable else None

    def search(self, texts: Sequence[str], k: int) -> tuple[list[list[int]], list[list[float]]] | None:
        return self.retriever.scored_search(texts, k) if self.searchable else None

    def recommend(
        self, recent: Sequence[list[int]], exclude: Sequence[set[int]], k: int
    ) -> tuple[list[list[int]], list[list[float]]]:
        return self.retriever.scored_recommend(recent, k, exclude)


def dense_search(embeddings_dir: Path, texts: Sequence[str], k: int) -> list[list[int]] | None:
    """kNN of query vectors (the run's query encoder) over the item space; None where no encoder."""
    retriever = dense_retriever(embeddings_dir)
    return retriever.search(texts, k) if "search" in retriever.tasks else None


def dense_rec(
    embeddings_dir: Path, recent: Sequence[list[int]], exclude: Sequence[set[int]], k: int
) -> list[list[int]]:
    """kNN of the mean of the recent history's item vectors (rec space), seen items excluded."""
    return dense_retriever(embeddings_dir).recommend(recent, k, exclude)


def popularity_rec(
    popularity: np.ndarray, item_ids: np.ndarray, exclude: Sequence[set[int]], k: int
) -> list[list[int]]:
    """The most popular train items the user does not have yet."""
    return PopularityRetriever(item_ids, popularity).recommend([[]] * len(exclude), k, exclude)


# --------------------------------------------------------------------------- the evaluation


@dataclass
class EvaluationResult:
    search: dict[str, float]
    rec: dict[str, float]
    baselines: dict[str, float]
    search_predictions: pd.DataFrame
    rec_predictions: pd.DataFrame
    id_ceiling: dict[str, float]  # metrics/id_ceiling.json, see ``id_ceiling``


def _predictions(
    inputs: Sequence[str], targets: Sequence[int], ranked: Sequence[list[int]], **extra
) -> pd.DataFrame:
    ranks = hit_ranks(ranked, targets)
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
    # Deferred: semid.generator imports torch + transformers (~6.7 s measured), which serve's dense index never needs.
    from semid.generator import SEARCH_PREFIX, generate_items

    k = k or config.k
    inputs = [SEARCH_PREFIX + text for text in texts]
    beams = max(config.num_beams, k)
    return generate_items(generator, inputs, "search", num_beams=beams, **_decode_settings(config, k))


def decode_rec(
    generator, recent: Sequence[list[int]], seen: Sequence[set[int]], config, k: int | None = None
):
    """The evaluation's rec decoding: the last H items as input, the user's items (``seen``) removed."""
    # Deferred: semid.generator imports torch + transformers (~6.7 s measured), which serve's dense index never needs.
    from semid.generator import generate_items, rec_source

    k = k or config.k
    inputs = [rec_source(generator.table, history) for history in recent]
    # Removing seen items must still leave k: widen the beam by the longest input history.
    extra = 0 if config.num_beam_groups > 1 else generator.history_length
    return generate_items(
        generator,
        inputs,
        "rec",
        num_beams=max(config.num_beams, k) + extra,
        exclude=list(seen),
        **_decode_settings(config, k),
    )


class GeneratorRetriever:
    """The generator as a ``Retriever``: the evaluation's decoding (``decode_search``/``decode_rec``).

    ``decoded[task]`` keeps the latest decoding's result, for what only a generator reports
    (invalid ID rate, inputs per second).
    """

    tasks = ("search", "rec")

    def __init__(self, generator, config):
        self.generator, self.config = generator, config
        self.decoded: dict[str, Any] = {}

    def search(self, texts: Sequence[str], k: int) -> Ranked:
        self.decoded["search"] = decode_search(self.generator, list(texts), self.config, k)
        return self.decoded["search"].ranked_items

    def recommend(
        self, histories: Sequence[Sequence[int]], k: int, exclude_seen: Sequence[Set[int]] | None = None
    ) -> Ranked:
        seen = exclude_seen if exclude_seen is not None else [set()] * len(histories)
        self.decoded["rec"] = decode_rec(self.generator, list(histories), list(seen), self.config, k)
        return self.decoded["rec"].ranked_items


@dataclass
class HeldOutSets:
    """What every retriever is scored on: the search queries and the rec users, with segments."""

    search: pd.DataFrame  # search_test_set: query_id, item_id, text, ...
    rec: pd.DataFrame  # rec_test_set: user_id, history, recent, target_item
    rec_segments: list[str]  # "head" / "torso" of each rec target

    def inputs(self, task: str) -> tuple[list, list[int], list[set[int]] | None]:
        """(inputs, targets, items to exclude) of a task."""
        if task == "search":
            return self.search["text"].tolist(), self.search["item_id"].astype(int).tolist(), None
        return self.rec["recent"].tolist(), self.rec["target_item"].astype(int).tolist(), [set(h) for h in self.rec["history"]]


@dataclass
class TaskScore:
    ranked: Ranked
    ranks: list[int | None]
    metrics: dict[str, float]  # unprefixed: recall_at_10, ..., and the segment block for rec


def score_retrievers(retrievers: dict[str, Retriever], sets: HeldOutSets, k: int) -> dict[tuple[str, str], TaskScore]:
    """Every retriever on every task it answers, one loop: (name, task) -> rankings, ranks, metrics."""
    scored = {}
    for name, retriever in retrievers.items():
        for task in retriever.tasks:
            inputs, targets, exclude = sets.inputs(task)
            ranked = run_task(retriever, task, inputs, k, exclude)
            ranks = hit_ranks(ranked, targets)
            metrics = ranking_metrics(ranks)
            if task == "rec":
                metrics.update(segment_metrics(ranks, sets.rec_segments))
            scored[name, task] = TaskScore(ranked, ranks, metrics)
    return scored


def baseline_retrievers(
    items: pd.DataFrame, interactions: pd.DataFrame, embeddings_dir: Path | None
) -> dict[str, Retriever]:
    """BM25, dense kNN (where the run has embeddings) and popularity: the generator's yardsticks."""
    item_ids = items["item_id"].to_numpy(np.int64)
    retrievers: dict[str, Retriever] = {"bm25": BM25Retriever(items)}
    if embeddings_dir:
        retrievers["dense"] = dense_retriever(embeddings_dir)
    retrievers["popularity"] = PopularityRetriever(item_ids, train_popularity(interactions, item_ids))
    return retrievers


def baseline_metrics(scored: dict[tuple[str, str], TaskScore]) -> dict[str, float]:
    """The flat ``<method>_<task>_<metric>`` block of metrics/baselines.json.

    Dense search is always reported: NaN with ``dense_search_applicable`` 0 where the run's
    embedding has no query encoder (or there are no embeddings).
    """
    baselines: dict[str, float] = {}
    for (name, task), result in scored.items():
        if name != "generator":
            baselines.update({f"{name}_{task}_{metric}": value for metric, value in result.metrics.items()})
    applicable = ("dense", "search") in scored
    if not applicable:
        baselines.update({name: float("nan") for name in ranking_metrics([None], prefix="dense_search_")})
    baselines["dense_search_applicable"] = int(applicable)
    return baselines


# --------------------------------------------------------------------------- the ID ceiling


def dense_rankings(
    retriever: DenseRetriever, task: str, inputs: Sequence, exclude: Sequence[Set[int]] | None, batch: int = 256
) -> Iterator[np.ndarray]:
    """Every item row per input, best first, by ``retriever``'s dense scores (the user's items
    dropped for rec, as in its ``recommend``). Batched numpy: lists of every item per input
    would not fit for 5,000 queries."""
    if task == "search":
        vectors, space = np.asarray(retriever.encode_queries(list(inputs)), np.float32), retriever.search_space
    else:
        vectors = history_vectors(retriever.rec_space, [[retriever.row_of[i] for i in h] for h in inputs])
        space = retriever.rec_space
    for start in range(0, len(vectors), batch):
        excluded = None
        if exclude is not None:
            excluded = [{retriever.row_of[i] for i in seen} for seen in exclude[start : start + batch]]
        rows = top_k(vectors[start : start + batch], space, len(space), exclude=excluded)
        for offset, row in enumerate(rows):
            if excluded and excluded[offset]:
                row = row[~np.isin(row, list(excluded[offset]))]
            yield row


def id_levels(table) -> int:
    """The levels of an ID that name a bucket: all but the de-duplication level, if any."""
    if table.meta.get("dedup"):
        return int(table.meta.get("levels", table.levels - 1))
    return table.levels


def id_ceiling(dense: DenseRetriever | None, table, sets: HeldOutSets, k: int) -> dict[str, float]:
    """metrics/id_ceiling.json: per task, Recall@k of the dense ranking (``dense_recall_at_k``, the
    dense baseline's number) and of the same ranking as IDs without the de-duplication level
    (``recall_at_k``) or with the first level alone (``recall_at_k_level1``), expected over the
    order inside each bucket (``semid.id_ceiling``), in the ID space the task writes. NaN with
    ``<task>_applicable`` 0 where the run has no dense scores for the task."""
    # Deferred: semid.generator imports torch + transformers (~6.7 s measured), which serve's dense index never needs.
    from semid.generator import task_space

    out: dict[str, float] = {}
    for task in ("search", "rec"):
        if dense is None or task not in dense.tasks:
            empty = ceiling_metrics([], [], {"": np.zeros(0, np.int64), "_level1": np.zeros(0, np.int64)}, k)
            out.update({f"{task}_{key}": value for key, value in empty.items()})
            out[f"{task}_applicable"] = 0
            continue
        inputs, targets, exclude = sets.inputs(task)
        space = task_space(table.spaces, task)
        codes = [table.codes[space][int(item)] for item in dense.item_ids]
        buckets = {"": bucket_ids(codes, id_levels(table)), "_level1": bucket_ids(codes, 1)}
        rankings = dense_rankings(dense, task, inputs, exclude)
        metrics = ceiling_metrics(rankings, [dense.row_of[int(t)] for t in targets], buckets, k)
        out.update({f"{task}_{key}": value for key, value in metrics.items()})
        out[f"{task}_applicable"] = 1
    return out


def hit_ranks_table(result: EvaluationResult) -> pd.DataFrame:
    """The generator's rank of every test unit's target (empty: not in the top k), one row per
    search query and rec user: what paired tests between grid points pair on."""
    search, rec = result.search_predictions, result.rec_predictions
    return pd.concat(
        [
            pd.DataFrame({"task": "search", "unit": search["query_id"].astype(str), "hit_rank": search["hit_rank"], "segment": ""}),
            pd.DataFrame({"task": "rec", "unit": rec["user_id"].astype(str), "hit_rank": rec["hit_rank"], "segment": rec["segment"]}),
        ],
        ignore_index=True,
    )


# The baseline whose hit rank sits beside the generator's in predictions/<task>.parquet.
PREDICTION_BASELINE = {"search": "bm25", "rec": "popularity"}


def evaluate_all(
    generator,
    items: pd.DataFrame,
    interactions: pd.DataFrame,
    test_queries: pd.DataFrame,
    embeddings_dir: Path | None,
    config,
) -> EvaluationResult:
    """Generator (search + rec) and baselines on the same test sets; metrics and per-example predictions."""
    # Deferred: semid.generator imports torch + transformers (~6.7 s measured), which serve's dense index never needs.
    from semid.generator import SEARCH_PREFIX, rec_source

    item_ids = items["item_id"].to_numpy(np.int64)
    rec_set = rec_test_set(interactions, generator.history_length)
    head = head_items(interactions, item_ids, config.head_fraction)
    sets = HeldOutSets(
        search=search_test_set(test_queries, item_ids, config.search_queries, config.sample_seed),
        rec=rec_set,
        rec_segments=["head" if t in head else "torso" for t in rec_set["target_item"]],
    )
    model = GeneratorRetriever(generator, config)
    retrievers = {"generator": model, **baseline_retrievers(items, interactions, embeddings_dir)}
    scored = score_retrievers(retrievers, sets, config.k)

    generated: dict[str, dict[str, float]] = {}
    for task, examples in (("search", sets.search), ("rec", sets.rec)):
        decoded = model.decoded[task]
        generated[task] = {
            **scored["generator", task].metrics,
            "examples": len(examples),
            "invalid_id_rate": decoded.invalid_id_rate,
            "inputs_per_second": decoded.inputs_per_second,
        }
    generated["rec"]["head_items"] = len(head)

    search_predictions = _predictions(
        [SEARCH_PREFIX + text for text in sets.search["text"]],
        sets.inputs("search")[1],
        scored["generator", "search"].ranked,
        query_id=sets.search["query_id"].astype(str),
    )
    rec_predictions = _predictions(
        [rec_source(generator.table, recent) for recent in rec_set["recent"]],
        sets.inputs("rec")[1],
        scored["generator", "rec"].ranked,
        user_id=rec_set["user_id"],
        segment=sets.rec_segments,
    )
    for task, frame in (("search", search_predictions), ("rec", rec_predictions)):
        frame["baseline_hit_rank"] = pd.array(scored[PREDICTION_BASELINE[task], task].ranks, dtype="Int64")
    ceiling = id_ceiling(retrievers.get("dense"), generator.table, sets, config.k)
    return EvaluationResult(
        generated["search"], generated["rec"], baseline_metrics(scored), search_predictions, rec_predictions, ceiling
    )
