"""semid.metrics against ir-measures (pytrec_eval, the TREC implementation) on real rankings.

The rankings are real and self-contained: BM25 search over 200 template queries and popularity
rec on the held-out test users of a 300-item slice of ml-latest-small (the ../shared fixture).
Where the workspace holds the evaluate stage's own predictions, they are checked as well.
"""

from __future__ import annotations

import json
from pathlib import Path

import ir_measures
import numpy as np
import pandas as pd
import pytest
from ir_measures import RR, R, nDCG

from semid.config import DataConfig, QueriesConfig
from semid.data import prepare_movielens
from semid.metrics import (
    KS,
    NDCG_K,
    EvaluationError,
    hit_rank,
    hit_ranks,
    mean_reciprocal_rank,
    ndcg_at_k,
    ranking_metrics,
    recall_at_k,
)
from semid.queries import generate_queries, split_queries
from semid.retrievers import BM25Retriever, PopularityRetriever
from semid.testsets import rec_test_set, search_test_set, train_popularity

ROOT = Path(__file__).resolve().parents[1]
K = 30


def ir_measures_scores(ranked: list[list[int]], targets: list[int]) -> dict[str, float]:
    """R@10, R@30, nDCG@30 and RR@30 by ir-measures: one relevant document per query."""
    qrels = pd.DataFrame(
        {"query_id": [str(q) for q in range(len(targets))], "doc_id": [str(t) for t in targets], "relevance": 1}
    )
    # A score falling with the position keeps our order (pytrec_eval sorts by score).
    run = pd.DataFrame(
        [(str(q), str(item), float(len(items) - position))
         for q, items in enumerate(ranked) for position, item in enumerate(items)],
        columns=["query_id", "doc_id", "score"],
    )
    # ir-measures leaves a query with no returned item out of the run: average over all queries.
    measures = [R @ 10, R @ 30, nDCG @ NDCG_K, RR @ K]
    totals = dict.fromkeys(measures, 0.0)
    for metric in ir_measures.iter_calc(measures, qrels, run):
        totals[metric.measure] += metric.value
    return {str(m): total / len(targets) for m, total in totals.items()}


def ours(ranked: list[list[int]], targets: list[int]) -> dict[str, float]:
    ranks = hit_ranks(ranked, targets)
    return {
        "R@10": recall_at_k(ranks, 10),
        "R@30": recall_at_k(ranks, 30),
        "nDCG@30": ndcg_at_k(ranks, NDCG_K),
        "RR@30": mean_reciprocal_rank(ranks, K),
    }


def assert_agree(ranked: list[list[int]], targets: list[int]) -> dict[str, float]:
    expected, got = ir_measures_scores(ranked, targets), ours(ranked, targets)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=5e-6), name  # equal to 5 decimals
    print({name: (round(got[name], 6), round(value, 6)) for name, value in expected.items()})
    return got


@pytest.fixture(scope="module")
def slice_world(ml_small_raw):
    prepared = prepare_movielens(ml_small_raw, DataConfig(sample_items=300, sample_items_strategy="popular"), seed=3)
    config = QueriesConfig()
    queries = split_queries(generate_queries(prepared.items, config, seed=3), config)["test"]
    return prepared.items, prepared.interactions, queries


def test_bm25_search_metrics_agree_with_ir_measures(slice_world):
    items, _, queries = slice_world
    test = search_test_set(queries, items["item_id"], sample=200, seed=0)
    ranked = BM25Retriever(items).search(test["text"].tolist(), K)
    got = assert_agree(ranked, test["item_id"].astype(int).tolist())
    assert 0 < got["R@10"] < got["R@30"] < 1  # real, neither trivial nor empty: the check means something


def test_popularity_rec_metrics_agree_with_ir_measures(slice_world):
    items, interactions, _ = slice_world
    item_ids = items["item_id"].to_numpy(np.int64)
    users = rec_test_set(interactions, history_length=20)
    ranked = PopularityRetriever(item_ids, train_popularity(interactions, item_ids)).recommend(
        users["recent"].tolist(), K, [set(h) for h in users["history"]]
    )
    got = assert_agree(ranked, users["target_item"].tolist())
    assert 0 < got["R@30"] < 1


@pytest.mark.parametrize("task", ["search", "rec"])
def test_the_workspace_predictions_give_its_metrics_and_ir_measures_agrees(task):
    """predictions/<task>.parquet re-scored give metrics/<task>.json (where the workspace has them)."""
    predictions, committed = ROOT / "predictions" / f"{task}.parquet", ROOT / "metrics" / f"{task}.json"
    if not (predictions.exists() and committed.exists()):
        pytest.skip("no evaluate outputs in this workspace (a clean clone)")
    frame = pd.read_parquet(predictions)
    ranked = [list(map(int, r)) for r in frame["ranked_item_ids"]]
    targets = frame["target_item"].astype(int).tolist()
    assert_agree(ranked, targets)
    expected = json.loads(committed.read_text())
    if expected.get("examples") != len(frame):
        pytest.skip("metrics and predictions are from different runs")
    for name, value in ranking_metrics(hit_ranks(ranked, targets)).items():
        assert value == expected[name], name  # the same float, not merely close


def test_metric_definitions_on_hand_made_ranks():
    assert hit_ranks([[4, 5, 9], [1], []], [9, 1, 8]) == [3, 1, None] and hit_rank([], 1) is None
    ranks = [1, 2, 30, 31, None]
    assert [recall_at_k(ranks, k) for k in KS] == [pytest.approx(2 / 5), pytest.approx(3 / 5)]
    # MRR@k caps at k; uncapped it counts every rank the rankings hold (evaluate's `mrr` over 30 items)
    assert mean_reciprocal_rank(ranks, 30) == pytest.approx((1 + 1 / 2 + 1 / 30) / 5)
    assert mean_reciprocal_rank(ranks) == pytest.approx((1 + 1 / 2 + 1 / 30 + 1 / 31) / 5)
    assert ndcg_at_k([2], 30) == pytest.approx(0.6309297535714575)
    assert set(ranking_metrics([1], prefix="bm25_search_")) == {
        "bm25_search_recall_at_10", "bm25_search_recall_at_30", "bm25_search_ndcg_at_30", "bm25_search_mrr",
    }
    with pytest.raises(EvaluationError, match="test set is empty"):
        mean_reciprocal_rank([])
