"""Semantic IDs: de-duplication, tokens, the ID table, and diagnostics on hand-built tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from semid.ids import (
    SemanticIdError,
    build_id_table,
    codebook_sizes,
    collision_stats,
    dedup_level,
    level_usage,
    load_semantic_ids,
    neighbour_preservation,
    parse_sid,
    reconstruction_error,
    sid_string,
    token,
    write_semantic_ids,
)

CODES = np.array([[0, 1], [0, 1], [2, 3], [0, 1], [2, 0]])
ITEM_IDS = np.array([50, 30, 90, 10, 70])


def test_dedup_numbers_collisions_in_item_id_order():
    # items 10, 30, 50 share (0, 1): numbered 0, 1, 2 in item-id order; the others get 0
    assert dedup_level(CODES, ITEM_IDS).tolist() == [2, 1, 0, 0, 0]


def test_ids_unique_after_dedup_and_tokens_round_trip():
    table = build_id_table(ITEM_IDS, CODES, "joint", dedup=True)
    assert table["sid"].is_unique
    assert table["codes"].map(len).eq(3).all()
    by_sid = dict(zip(table["sid"], table["item_id"]))
    for item_id, sid in zip(table["item_id"], table["sid"]):
        space, codes = parse_sid(sid)
        assert space == "joint" and by_sid[sid_string(space, codes)] == item_id
    assert codebook_sizes(table, 4, 2) == [4, 4, 3]
    plain = build_id_table(ITEM_IDS, CODES, "rec", dedup=False)
    assert not plain["sid"].is_unique and plain["codes"].map(len).eq(2).all()


def test_token_format_follows_the_contract():
    assert token("joint", 1, 7) == "<sid_1_7>"
    assert token("search", 2, 0) == "<search_2_0>"
    assert sid_string("rec", [3, 4]) == "<rec_1_3><rec_2_4>"
    assert parse_sid("<search_1_5><search_2_9>") == ("search", [5, 9])
    for bad in ("<sid_1_7>junk", "<sid_2_7>", "<sid_1_1><rec_2_1>", "", "<movie_1_2>"):
        with pytest.raises(SemanticIdError):
            parse_sid(bad)


def test_shared_levels_take_the_joint_prefix_in_every_space():
    assert token("search", 1, 7, shared_levels=1) == "<sid_1_7>"
    assert token("rec", 2, 7, shared_levels=1) == "<rec_2_7>"
    assert sid_string("search", [7, 3, 0], shared_levels=1) == "<sid_1_7><search_2_3><search_3_0>"
    for space in ("search", "rec"):
        sid = sid_string(space, [7, 3, 0], shared_levels=1)
        assert parse_sid(sid, shared_levels=1) == (space, [7, 3, 0])
    assert parse_sid("<sid_1_7><sid_2_3>", shared_levels=1) == ("joint", [7, 3])
    # Mixed prefixes only where shared: not without the flag, not past the shared levels, not two tasks.
    for bad, shared in [("<sid_1_7><rec_2_3>", 0), ("<sid_1_7><sid_2_3><rec_3_1>", 1),
                        ("<search_1_7><rec_2_3>", 1), ("<sid_1_7><search_2_3><rec_3_0>", 1), ("<rec_1_7><sid_2_3>", 1)]:
        with pytest.raises(SemanticIdError, match="mixes spaces"):
            parse_sid(bad, shared_levels=shared)
    table = build_id_table(ITEM_IDS, CODES, "rec", dedup=True, shared_levels=1)
    assert table["sid"].iloc[0] == "<sid_1_0><rec_2_1><rec_3_2>"


def test_write_and_load_round_trip(tmp_path):
    table = build_id_table(ITEM_IDS, CODES, "search", dedup=True)
    write_semantic_ids(tmp_path / "ids", [table], {"quantizer": "rqkmeans"})
    loaded = load_semantic_ids(tmp_path / "ids")
    pd.testing.assert_frame_equal(loaded, table)
    with pytest.raises(SemanticIdError, match="run the quantize stage"):
        load_semantic_ids(tmp_path / "missing")


def test_diagnostics_exact_on_hand_built_tables():
    usage = level_usage(CODES, 4)
    assert usage[0]["usage"] == 0.5  # codes 0 and 2 of 4
    p = np.array([3, 2]) / 5
    assert usage[0]["entropy"] == pytest.approx(-(p * np.log(p)).sum())
    assert usage[0]["perplexity"] == pytest.approx(math.exp(usage[0]["entropy"]))
    assert usage[1]["usage"] == 0.75
    uniform = level_usage(np.arange(8)[:, None], 8)[0]
    assert uniform["perplexity"] == pytest.approx(8) and uniform["usage"] == 1.0
    stats = collision_stats(CODES)
    assert stats["collision_rate"] == pytest.approx(3 / 5)
    assert stats["largest_bucket"] == 3 and stats["unique_tuples"] == 3
    x = np.array([[3.0, 4.0], [1.0, 0.0]])
    assert reconstruction_error(x, np.array([[3.0, 4.0], [0.0, 0.0]])) == pytest.approx(0.5)


def test_neighbour_preservation_on_two_clean_groups():
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal([10, 0], 0.1, (30, 2)), rng.normal([0, 10], 0.1, (30, 2))]).astype(np.float32)
    first = np.repeat([0, 1], 30)
    observed, random = neighbour_preservation(x, first, k=10, seed=0)
    assert observed == 1.0
    assert random < 0.7  # a shuffled half/half assignment keeps about half
