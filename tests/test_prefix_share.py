"""Prefix-shared IDs (semid.quantize.prefix_share): one first level for both tasks, the tasks' own
later levels, on real embeddings of real ml-latest-small items (MiniLM text as the search space,
an SVD of the real rating matrix as the rec space)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.sparse import csr_matrix
from sklearn.decomposition import TruncatedSVD

from semid.generator.table import GeneratorError, build_id_table
from semid.ids import build_id_table as id_rows
from semid.ids import codebook_sizes, parse_sid
from semid.quantize import QuantizeError, make_quantizer
from semid.quantize.prefix_share import SHARED, fit_prefix_share

CODEBOOK = 16
FAST = {"rqkmeans": {}, "rqvae": {"steps": 60, "log_every": 20}}


@pytest.fixture(scope="module")
def task_spaces(minilm_item_embeddings, ml_small_raw):
    """(item_ids, {"search": MiniLM (n, 384), "rec": rating-matrix SVD (n, 32)}) of the same items."""
    items, text = minilm_item_embeddings
    item_ids = items["item_id"].to_numpy(np.int64)
    ratings = ml_small_raw.ratings[ml_small_raw.ratings["item_id"].isin(item_ids)]
    rows = row_of(item_ids, ratings["item_id"].to_numpy())
    users, cols = np.unique(ratings["user_id"].to_numpy(), return_inverse=True)
    matrix = csr_matrix((np.ones(len(ratings), np.float32), (rows, cols)), shape=(len(item_ids), len(users)))
    rec = TruncatedSVD(32, random_state=0).fit_transform(matrix).astype(np.float32)
    return item_ids, {"search": text, "rec": rec}


def row_of(item_ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The row of each value in ``item_ids``."""
    order = np.argsort(item_ids)
    return order[np.searchsorted(item_ids[order], values)]


def fit(spaces, name: str, levels: int = 2):
    def build(n_levels: int):
        return make_quantizer(name, n_levels, CODEBOOK, 42, FAST[name])

    return fit_prefix_share(spaces, levels, build)


@pytest.mark.parametrize("name", ["rqkmeans", "rqvae"])
def test_first_level_is_shared_and_later_levels_are_the_tasks_own(task_spaces, name):
    item_ids, spaces = task_spaces
    fitted, shared_curve = fit(spaces, name)
    search, rec = fitted["search"], fitted["rec"]
    assert search.codes.shape == rec.codes.shape == (len(item_ids), 2)
    assert np.array_equal(search.codes[:, 0], rec.codes[:, 0])
    assert len(np.unique(search.codes[:, 0])) > CODEBOOK // 2  # the shared level is used, not collapsed
    # The task levels quantize different residuals: they disagree on most items.
    assert (search.codes[:, 1] != rec.codes[:, 1]).mean() > 0.5
    for space, result in fitted.items():
        x = spaces[space] / np.linalg.norm(spaces[space], axis=1, keepdims=True)
        assert np.allclose(result.x, x, atol=1e-5)
        error = np.linalg.norm(result.x - result.reconstruction, axis=1).mean()
        shuffled = result.reconstruction[np.random.default_rng(0).permutation(len(x))]
        assert error < np.linalg.norm(result.x - shuffled, axis=1).mean()
    if name == "rqvae":  # learned quantizers log a curve: the shared fit and each task's
        assert shared_curve and {row["space"] for row in shared_curve} == {SHARED}
        assert search.curve and rec.curve


def test_ids_are_unique_with_dedup_and_use_the_shared_tokens(task_spaces):
    item_ids, spaces = task_spaces
    fitted, _ = fit(spaces, "rqkmeans")
    tables = {space: id_rows(item_ids, r.codes, space, dedup=True, shared_levels=1) for space, r in fitted.items()}
    for space, table in tables.items():
        assert table["sid"].is_unique
        assert all(sid.startswith("<sid_1_") and f"<{space}_2_" in sid for sid in table["sid"])
        assert [parse_sid(sid, shared_levels=1) for sid in table["sid"]] == [(space, c) for c in table["codes"]]
    first = [sid.split(">")[0] for sid in tables["search"]["sid"]]
    assert first == [sid.split(">")[0] for sid in tables["rec"]["sid"]]


def test_generator_table_adds_shared_tokens_once_and_checks_the_shared_level(task_spaces):
    item_ids, spaces = task_spaces
    fitted, _ = fit(spaces, "rqkmeans")
    rows = [id_rows(item_ids, r.codes, space, dedup=True, shared_levels=1) for space, r in fitted.items()]
    frame = pd.concat(rows, ignore_index=True)
    sizes = codebook_sizes(frame, CODEBOOK, 2)
    meta = {"spaces": ["search", "rec"], "codebook_sizes": sizes, "dedup": True, "shared_levels": 1}
    table = build_id_table(frame, meta, item_ids)
    tokens = table.tokens()
    assert len(tokens) == len(set(tokens)) == sizes[0] + 2 * sum(sizes[1:])
    assert sum(t.startswith("<sid_1_") for t in tokens) == CODEBOOK
    assert not any(t.startswith(("<search_1_", "<rec_1_")) for t in tokens)
    item = int(item_ids[0])
    for space, sid in zip(["search", "rec"], rows):
        assert table.sid(space, item) == sid.loc[sid["item_id"] == item, "sid"].item()
    # Without the shared-level flag the same rows are two separate spaces with their own first tokens.
    plain = build_id_table(frame, {**meta, "shared_levels": 0}, item_ids)
    assert len(plain.tokens()) == 2 * sum(sizes)
    broken = frame.copy()
    broken.at[len(item_ids), "codes"] = [(broken.at[len(item_ids), "codes"][0] + 1) % CODEBOOK, 0, 0]
    with pytest.raises(GeneratorError, match="share their first 1 level"):
        build_id_table(broken, meta, item_ids)


def test_one_level_cannot_be_shared_and_task_specific():
    x = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    with pytest.raises(QuantizeError, match="levels >= 2"):
        fit_prefix_share({"search": x, "rec": x}, 1, lambda n: make_quantizer("rqkmeans", n, 4, 0))
