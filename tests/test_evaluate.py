"""Metrics against hand-computed cases; the evaluation on real items; the whole pipeline in DVC (slow)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import dvc, set_params
from generator_fixtures import small_world, tiny_scratch_config, write_embeddings

from semid.config import EvaluateConfig
from semid.evaluate import (
    EvaluationError,
    evaluate_all,
    head_items,
    hit_rank,
    mean_reciprocal_rank,
    ndcg_at_k,
    popularity_rec,
    rec_test_set,
    recall_at_k,
    search_test_set,
    segment_metrics,
)
from semid.generator import MODEL_DIR, load_generator, search_examples, train_generator


def test_metrics_match_hand_computed_values():
    ranked = [[5, 7, 9], [1, 2, 3], [4]]
    assert [hit_rank(r, t) for r, t in zip(ranked, [9, 1, 8])] == [3, 1, None]
    ranks = [1, 2, None, 30, 31]
    assert recall_at_k(ranks, 10) == pytest.approx(2 / 5)
    assert recall_at_k(ranks, 30) == pytest.approx(3 / 5)
    # ideal DCG is 1 with one relevant item: 1, 1/log2(3), 0, 1/log2(31), 0 (rank 31 is beyond 30)
    assert ndcg_at_k(ranks, 30) == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(31)) / 5)
    assert ndcg_at_k([2], 30) == pytest.approx(0.6309297535714575)
    assert mean_reciprocal_rank(ranks) == pytest.approx((1 + 0.5 + 1 / 30 + 1 / 31) / 5)
    segments = segment_metrics([1, None, 3], ["head", "torso", "torso"])
    assert segments["recall_at_30_head"] == 1.0 and segments["recall_at_30_torso"] == 0.5
    assert segments["examples_torso"] == 2


def test_empty_test_sets_fail_clearly():
    with pytest.raises(EvaluationError, match="test set is empty"):
        recall_at_k([], 30)
    queries = pd.DataFrame(
        {"query_id": ["a"], "item_id": [99], "text": ["space opera"], "backend": ["template"]}
    )
    with pytest.raises(EvaluationError, match="search test set is empty"):
        search_test_set(queries, [1, 2, 3], 0, seed=0)
    no_test = pd.DataFrame(
        {"user_id": [1, 1], "item_id": [1, 2], "split": ["train", "valid"], "position": [0, 1]}
    )
    with pytest.raises(EvaluationError, match="rec test set is empty"):
        rec_test_set(no_test, history_length=5)


def test_rec_test_set_head_items_and_popularity_follow_the_protocol():
    interactions = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 1, 2, 2, 2, 3, 3, 3],
            "item_id": [10, 11, 12, 13, 10, 12, 14, 10, 11, 15],
            "split": ["train", "train", "valid", "test", "train", "valid", "test", "train", "valid", "test"],
            "position": [0, 1, 2, 3, 0, 1, 2, 0, 1, 2],
        }
    )
    tests = rec_test_set(interactions, history_length=2)
    assert tests["target_item"].tolist() == [13, 14, 15]
    assert tests["history"].tolist() == [[10, 11, 12], [10, 12], [10, 11]]
    assert tests["recent"].tolist()[0] == [11, 12]
    item_ids = np.array([10, 11, 12, 13, 14, 15])
    assert head_items(interactions, item_ids, 0.01) == {10}  # 3 train interactions, the most
    counts = np.array([3, 2, 0, 0, 0, 0])
    assert popularity_rec(counts, item_ids, [{10}, set()], k=2) == [[11, 12], [10, 11]]


@pytest.fixture(scope="module")
def evaluated(ml_small_raw, tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("eval")
    items, interactions, queries, table, vectors = small_world(ml_small_raw, folder)
    corpus = [*items["item_text"], *queries["text"]]
    train_generator(
        tiny_scratch_config(max_steps=30), table, search_examples(queries), [], corpus, folder / "gen", 0
    )
    generator = load_generator(folder / "gen" / MODEL_DIR, table, device="cpu")
    embeddings = write_embeddings(
        folder / "embeddings", items["item_id"].to_numpy(), vectors, with_query_encoder=True
    )
    config = EvaluateConfig(search_queries=40, batch_size=16, sample_seed=0)
    result = evaluate_all(generator, items, interactions, queries, embeddings, config)
    return result, items, interactions, queries


def test_evaluation_reports_every_metric_on_the_same_test_sets(evaluated):
    result, items, interactions, _ = evaluated
    for key in ("recall_at_10", "recall_at_30", "ndcg_at_30", "mrr", "invalid_id_rate", "inputs_per_second"):
        assert key in result.search and key in result.rec
    for key in ("recall_at_30_head", "recall_at_30_torso"):
        assert key in result.rec
    for method in ("bm25_search", "dense_search", "dense_rec", "popularity_rec"):
        assert 0.0 <= result.baselines[f"{method}_recall_at_30"] <= 1.0
    assert result.baselines["dense_search_applicable"] == 1
    assert result.search["invalid_id_rate"] == 0.0 and result.rec["invalid_id_rate"] == 0.0
    assert result.search["examples"] == 40 == len(result.search_predictions)
    assert result.rec["examples"] == interactions.loc[interactions["split"] == "test", "user_id"].nunique()
    # the predictions agree with the metrics, and rec never returns an item the user already has
    ranks = result.rec_predictions["hit_rank"]
    assert result.rec["recall_at_30"] == pytest.approx(float((ranks.notna() & (ranks <= 30)).mean()))
    tests = rec_test_set(interactions, history_length=5)
    for ranked, history in zip(result.rec_predictions["ranked_item_ids"], tests["history"]):
        # 50 items: heavy users have seen most of them, so fewer than 30 unseen may exist. Every
        # ranking is full all the same: one whose beams went to seen items is decoded again, wider.
        unseen = len(set(items["item_id"]) - set(history))
        assert len(ranked) == min(30, unseen) and not set(ranked) & set(history)
        assert set(ranked) <= set(items["item_id"])
    # the dense baseline is the real MiniLM: on 50 items its Recall@30 beats random (0.6)
    assert result.baselines["dense_search_recall_at_30"] > 0.6


def test_id_ceiling_starts_from_the_dense_baseline_and_splits_the_loss(evaluated):
    result, *_ = evaluated
    ceiling = result.id_ceiling
    for task in ("search", "rec"):
        # the ceiling's full dense ranking is the dense baseline's: same Recall@30, same protocol
        assert ceiling[f"{task}_dense_recall_at_30"] == pytest.approx(result.baselines[f"dense_{task}_recall_at_30"])
        assert ceiling[f"{task}_applicable"] == 1 and ceiling[f"{task}_mean_bucket_size"] >= 1
        assert 0.0 <= ceiling[f"{task}_recall_at_30_level1"] <= 1.0 and 0.0 <= ceiling[f"{task}_recall_at_30"] <= 1.0
        assert ceiling[f"{task}_mean_bucket_size_level1"] >= ceiling[f"{task}_mean_bucket_size"]


@pytest.mark.slow
def test_whole_pipeline_in_dvc_writes_every_metric(dvc_repo):
    set_params(
        dvc_repo,
        data={"sample_items": 300, "sample_items_strategy": "popular"},
        generator={"max_steps": 5, "save_steps": 5, "logging_steps": 1, "rec_max_windows_per_user": 5},
        evaluate={"search_queries": 50},
    )
    dvc(dvc_repo, "repro")
    expected = {
        "id_ceiling.json": [
            "search_recall_at_30",
            "rec_recall_at_30",
            "search_dense_recall_at_30",
            "rec_recall_at_30_level1",
        ],
        "search.json": [
            "recall_at_10",
            "recall_at_30",
            "ndcg_at_30",
            "mrr",
            "invalid_id_rate",
            "inputs_per_second",
            "examples",
        ],
        "rec.json": [
            "recall_at_10",
            "recall_at_30",
            "ndcg_at_30",
            "mrr",
            "recall_at_30_head",
            "recall_at_30_torso",
            "invalid_id_rate",
            "inputs_per_second",
            "examples",
        ],
        "baselines.json": [
            "bm25_search_recall_at_30",
            "dense_search_recall_at_30",
            "dense_search_applicable",
            "dense_rec_recall_at_30",
            "popularity_rec_recall_at_30",
            "popularity_rec_ndcg_at_30",
            "bm25_search_mrr",
        ],
        "train_t5.json": ["steps", "train_loss", "train_examples_per_second"],
    }
    for name, keys in expected.items():
        metrics = json.loads((dvc_repo / "metrics" / name).read_text())
        assert set(keys) <= set(metrics), f"{name} lacks {set(keys) - set(metrics)}"
    assert json.loads((dvc_repo / "metrics" / "search.json").read_text())["invalid_id_rate"] == 0.0
    assert (dvc_repo / "predictions" / "rec.parquet").exists()
    # the generator's loss curve is a DVC plot: one row per logging step, up to the step budget
    curve = pd.read_csv(dvc_repo / "metrics" / "train_t5_curve.csv")
    assert curve["step"].max() == 5 and curve["train_loss"].notna().any()
    plots = json.loads(dvc(dvc_repo, "plots", "show", "--json").stdout)["data"]
    assert "dvc.yaml::metrics/train_t5_curve.csv" in plots  # the top-level definition (x: step, two y)
    again = dvc(dvc_repo, "repro")
    assert "Running stage" not in again.stdout
