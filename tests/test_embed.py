"""Embedding methods on a small real slice of ml-latest-small (300 popular items, real MiniLM)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from semid.config import EMBEDDING_METHODS, DataConfig, EmbedConfig, QueriesConfig
from semid.data import prepare_movielens
from semid.embed import (
    METHODS,
    EmbeddingError,
    EmbeddingInputs,
    co_interaction_pairs,
    dense_ceilings,
    embed_items,
    get_method,
    load_embedding_meta,
    load_item_embeddings,
    load_query_encoder,
    write_embeddings,
)
from semid.queries import generate_queries, split_queries

# Small but real: enough steps that fine-tuning measurably moves the search ceiling.
SLICE_CONFIG = EmbedConfig(max_steps=20, batch_size=32, lr=2e-4, checkpoint_steps=1000, max_minutes=0,
                           enmf_epochs=100, svd_dim=32, eval_max_queries=300)
# The fused methods retrain search + rec; their tests check structure, so a few steps do.
FUSED_CONFIG = dataclasses.replace(SLICE_CONFIG, max_steps=2, enmf_epochs=5)


@pytest.fixture(scope="module")
def slice_data(ml_small_raw, tmp_path_factory):
    prepared = prepare_movielens(ml_small_raw, DataConfig(sample_items=300, sample_items_strategy="popular"), seed=3)
    queries_config = QueriesConfig()
    splits = split_queries(generate_queries(prepared.items, queries_config, seed=3), queries_config)
    work = tmp_path_factory.mktemp("embed")
    inputs = EmbeddingInputs(
        items=prepared.items,
        train_interactions=prepared.interactions[prepared.interactions["split"] == "train"],
        train_queries=splits["train"],
        config=SLICE_CONFIG,
        seed=11,
        work_dir=work,
    )
    return prepared, splits, inputs


@pytest.fixture(scope="module")
def results(slice_data):
    """Each method once (module-scoped: the fine-tunes are the slow part)."""
    _, _, inputs = slice_data
    learned = ("content", "search", "rec")
    fused = dataclasses.replace(inputs, config=FUSED_CONFIG)
    return {method: embed_items(method, inputs if method in learned else fused) for method in METHODS}


def test_registry_matches_the_config_axis():
    assert tuple(METHODS) == EMBEDDING_METHODS


def test_every_method_gives_aligned_finite_float32_rows(results, slice_data):
    prepared, _, _ = slice_data
    for method, result in results.items():
        expected_spaces = ["search", "rec"] if method in ("separate", "prefix_share") else ["joint"]
        assert list(result.spaces) == expected_spaces, method
        assert result.shared_levels == (1 if method == "prefix_share" else 0), method
        for vectors in result.spaces.values():
            assert vectors.shape[0] == len(prepared.items) and vectors.dtype == np.float32, method
            assert np.isfinite(vectors).all(), method
    dims = {m: r.spaces.get("joint", r.spaces.get("search")).shape[1] for m, r in results.items()}
    assert dims["concat"] == 384 + SLICE_CONFIG.enmf_dim and dims["svd"] == 32


def test_prefix_share_keeps_the_separate_spaces_and_says_its_first_level_is_shared(results, slice_data, tmp_path):
    prepared, _, _ = slice_data
    for space in ("search", "rec"):
        np.testing.assert_allclose(results["prefix_share"].spaces[space], results["separate"].spaces[space], atol=1e-5)
    write_embeddings(results["prefix_share"], prepared.items, "prefix_share", "all-MiniLM-L6-v2", tmp_path / "emb")
    assert load_embedding_meta(tmp_path / "emb")["shared_levels"] == 1


def test_rows_follow_the_items_table_through_write_and_load(results, slice_data, tmp_path):
    prepared, _, _ = slice_data
    write_embeddings(results["content"], prepared.items, "content", "all-MiniLM-L6-v2", tmp_path / "emb")
    item_ids, spaces = load_item_embeddings(tmp_path / "emb")
    assert (item_ids == prepared.items["item_id"].to_numpy()).all()
    np.testing.assert_array_equal(spaces["joint"], results["content"].spaces["joint"])
    # the saved query encoder maps an item's own text next to that item's row
    encoder = load_query_encoder(tmp_path / "emb")
    row = 5
    vector = encoder.encode([prepared.items["item_text"].iloc[row]], normalize_embeddings=True)
    assert int(np.argmax(spaces["joint"] @ vector[0])) == row


def test_written_embeddings_are_the_same_bytes_whenever_they_are_written(results, slice_data, tmp_path):
    """The saved fine-tuned query encoder carried its wall-clock training time (its model card)."""
    import time

    prepared, _, _ = slice_data
    write_embeddings(results["search"], prepared.items, "search", "all-MiniLM-L6-v2", tmp_path / "a")
    time.sleep(1.1)
    write_embeddings(results["search"], prepared.items, "search", "all-MiniLM-L6-v2", tmp_path / "b")

    def files(folder):
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    first, second = files(tmp_path / "a"), files(tmp_path / "b")
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []
    # the card rounds long trainings to minutes, so equal bytes above may hide a clock: none is written
    assert [name for name, data in first.items() if b"Training Time" in data] == []


def test_fine_tune_and_enmf_are_deterministic_for_a_seed(results, slice_data, tmp_path):
    _, _, inputs = slice_data
    fused = dataclasses.replace(inputs, config=FUSED_CONFIG)
    first = embed_items("separate", dataclasses.replace(fused, work_dir=tmp_path / "a"))
    again = embed_items("separate", dataclasses.replace(fused, work_dir=tmp_path / "b"))
    for space in ("search", "rec"):
        np.testing.assert_allclose(again.spaces[space], first.spaces[space], atol=1e-5)
    other_seed = embed_items("rec", dataclasses.replace(fused, seed=12, work_dir=tmp_path / "c"))
    assert not np.allclose(other_seed.spaces["joint"], first.spaces["rec"], atol=1e-5)


def test_learning_is_real_search_beats_content_and_rec_beats_popularity(results, slice_data):
    prepared, splits, inputs = slice_data
    ceilings = {m: dense_ceilings(results[m], prepared.items, prepared.interactions, splits["valid"],
                                  SLICE_CONFIG, seed=0) for m in ("content", "search", "rec")}
    print({m: {k: round(v, 3) for k, v in c.items()} for m, c in ceilings.items()})
    assert ceilings["search"]["search_recall_at_30"] > ceilings["content"]["search_recall_at_30"]
    assert ceilings["rec"]["rec_recall_at_30"] > ceilings["rec"]["popularity_rec_recall_at_30"]
    assert "search_recall_at_30" not in ceilings["rec"]  # ENMF has no text encoder


def test_unknown_method_lists_choices():
    with pytest.raises(EmbeddingError, match="unknown embedding method 'bert'; choose one of: content, search"):
        get_method("bert")


def test_empty_item_text_is_a_clear_error_before_any_work(slice_data, tmp_path):
    _, _, inputs = slice_data
    items = inputs.items.copy()
    items.loc[items.index[3], "item_text"] = "  "
    broken = dataclasses.replace(inputs, items=items, work_dir=tmp_path)
    with pytest.raises(EmbeddingError, match=r"1 item\(s\) have empty item_text"):
        embed_items("content", broken)
    assert not any(tmp_path.iterdir())


def test_users_with_one_train_item_add_no_pair_and_are_no_error(slice_data):
    _, _, inputs = slice_data
    train = inputs.train_interactions
    single = pd.DataFrame({"user_id": [10**6], "item_id": [int(inputs.items["item_id"].iloc[0])],
                           "timestamp": [0], "rating": [4.0], "split": ["train"], "position": [0]})
    with_single = dataclasses.replace(inputs, train_interactions=pd.concat([train, single], ignore_index=True))
    assert len(co_interaction_pairs(with_single, 10**6, 0)) == len(co_interaction_pairs(inputs, 10**6, 0))
    only_single = dataclasses.replace(inputs, train_interactions=single)
    with pytest.raises(EmbeddingError, match="no co-interacted item pairs"):
        co_interaction_pairs(only_single, 100, 0)
    vectors = embed_items("rec", dataclasses.replace(with_single, config=dataclasses.replace(SLICE_CONFIG, enmf_epochs=2)))
    assert np.isfinite(vectors.spaces["joint"]).all()
