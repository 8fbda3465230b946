"""Quantizers: shapes, reconstruction, determinism, cluster recovery, errors, and the pinned
RQ-VAE finding on real MiniLM embeddings of real ml-latest-small items."""

from __future__ import annotations

import numpy as np
import pytest

from semid.config import QUANTIZERS, ConfigError, load_params
from semid.ids import diagnostics
from semid.quantize import REGISTRY, QuantizeError, Quantizer, make_quantizer, quantizer_class

# Small, fast settings per quantizer for the unit tests (the presets stay as they are otherwise).
FAST = {
    "rqkmeans": {},
    "rqvae": {"steps": 60, "log_every": 20},
    "rqvae_naive": {"steps": 60, "log_every": 20},
    "dictlearn": {"max_iter": 1},
    "rlfq": {"steps": 200, "log_every": 50},
}


def mixture(n: int = 600, dim: int = 32, clusters: int = 8, seed: int = 0):
    """Unit-normalised Gaussian mixture: (x (n, dim) float32, labels (n,))."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    labels = rng.integers(0, clusters, n)
    x = centres[labels] + 0.15 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


@pytest.fixture(scope="module")
def fitted():
    x, _ = mixture()
    return x, {name: make_quantizer(name, 2, 16, 7, FAST[name]).fit(x) for name in QUANTIZERS}


def test_registry_matches_config_axis():
    assert set(REGISTRY) == set(QUANTIZERS)


@pytest.mark.parametrize("name", QUANTIZERS)
def test_shapes_ranges_and_reconstruction_beats_random_codes(fitted, name):
    x, quantizers = fitted
    quantizer = quantizers[name]
    assert isinstance(quantizer, Quantizer)
    codes = quantizer.encode(x)
    assert codes.shape == (len(x), 2) and codes.dtype == np.int64
    assert codes.min() >= 0 and codes.max() < 16
    reconstruction = quantizer.decode(codes)
    assert reconstruction.shape == x.shape and reconstruction.dtype == np.float32
    random_codes = np.random.default_rng(0).integers(0, 16, codes.shape)
    error = np.linalg.norm(x - reconstruction, axis=1).mean()
    random_error = np.linalg.norm(x - quantizer.decode(random_codes), axis=1).mean()
    assert error < random_error


@pytest.mark.parametrize("name", QUANTIZERS)
def test_same_seed_gives_identical_codes(fitted, name):
    x, quantizers = fitted
    again = make_quantizer(name, 2, 16, 7, FAST[name]).fit(x)
    np.testing.assert_array_equal(again.encode(x), quantizers[name].encode(x))


LEARNED = {"rqvae", "rqvae_naive", "rlfq"}  # trained by gradient steps: they record a curve


@pytest.mark.parametrize("name", QUANTIZERS)
def test_every_quantizer_has_the_protocol_curve(fitted, name):
    # The quantize stage reads quantizer.curve unguarded: empty before a fit and for the
    # quantizers that have no steps, one row per logged step (and the last) for the learned ones.
    assert "curve" in Quantizer.__annotations__
    assert make_quantizer(name, 2, 16, 7, FAST[name]).curve == []
    curve = fitted[1][name].curve
    if name not in LEARNED:
        assert curve == []
        return
    steps, log_every = FAST[name]["steps"], FAST[name]["log_every"]
    assert [row["step"] for row in curve] == [*range(0, steps, log_every), steps - 1]
    for row in curve:
        assert {"loss", "recon_loss", "commit_loss", "usage_level_1", "usage_level_2", "seconds"} <= set(row)
        assert row["loss"] == pytest.approx(row["recon_loss"] + row["commit_loss"], rel=1e-5)
        assert 0 < row["usage_level_1"] <= 1


def test_a_diverging_fit_says_so_and_leaves_the_quantizer_unfitted():
    x, _ = mixture(n=100)
    quantizer = make_quantizer("rlfq", 2, 8, 0, FAST["rlfq"])

    def nan_loss(model, batch):  # the shared loop must catch a non-finite loss before stepping
        nan = model(batch[:, None, :])[2].sum() * float("nan")
        return nan, nan

    quantizer._forward_loss = nan_loss
    with pytest.raises(QuantizeError, match="rlfq training diverged at step 0"):
        quantizer.fit(x)
    with pytest.raises(QuantizeError, match="call fit"):
        quantizer.encode(x)


def test_rqkmeans_first_level_recovers_clusters():
    from sklearn.metrics import adjusted_rand_score

    # k-means is local: on some draws two true clusters share a centre (data seed 3: ARI 0.73),
    # so this pins recovery on one fixed draw rather than claiming it for every draw.
    x, labels = mixture(n=800, clusters=8, seed=0)
    codes = make_quantizer("rqkmeans", 2, 8, 0).fit(x).encode(x)
    assert adjusted_rand_score(labels, codes[:, 0]) > 0.9


def test_presets_differ_only_in_remedies():
    params = load_params(overrides={"quantize.rqvae_naive": {"kmeans_init": True}})
    assert params.quantize.options("rqvae_naive").kmeans_init is True
    assert params.quantize.options("rqvae").recon_loss == "sum"
    assert load_params().quantize.options("rqvae_naive").recon_loss == "mean"


def test_bad_input_fails_clearly():
    x, _ = mixture(n=100)
    with pytest.raises(QuantizeError, match="unknown quantizer 'vqgan'.*rqkmeans"):
        quantizer_class("vqgan")
    with pytest.raises(ConfigError, match="quantizer='vqgan'.*rqkmeans"):
        load_params(overrides={"quantizer": "vqgan"})
    with pytest.raises(QuantizeError, match="codebook_size=100 must be a power of two for rqkmeans.*64 or 128"):
        make_quantizer("rqkmeans", 2, 100, 0)
    with pytest.raises(QuantizeError, match="power of two for rlfq"):
        make_quantizer("rlfq", 2, 12, 0)
    with pytest.raises(QuantizeError, match="100 items cannot fill codebooks of 128"):
        make_quantizer("rqkmeans", 2, 128, 0).fit(x)
    bad = x.copy()
    bad[5, 3] = np.nan
    for name in ("rqkmeans", "rqvae", "dictlearn"):
        with pytest.raises(QuantizeError, match="NaN/inf in 1 of 100 rows"):
            make_quantizer(name, 2, 8, 0, FAST[name]).fit(bad)
    with pytest.raises(ConfigError, match="quantize.rqvae.input_scaling='zscore'"):
        load_params(overrides={"quantize.rqvae": {"input_scaling": "zscore"}})
    with pytest.raises(ConfigError, match="unknown key.*quantize.rqvae.kmeans"):
        load_params(overrides={"quantize.rqvae": {"kmeans": True}})


# --- The pinned RQ-VAE finding ---------------------------------------------------------------
# Measured on the 1000 most popular ml-latest-small items (MiniLM), 2 x 64 codes, 300 steps,
# seeds 42 and 1: rqvae_naive uses 1 of 64 level-1 codes (0.016) and 98.8% of items collide
# (largest bucket 41-45); rqvae uses every code at both levels and 30.1-30.2% collide (largest
# bucket 5). The thresholds leave margin around those numbers.
PINNED = dict(levels=2, codebook_size=64, seed=42, options={"steps": 300})


@pytest.fixture(scope="module")
def pinned_runs(minilm_item_embeddings):
    _, x = minilm_item_embeddings
    runs = {}
    for name in ("rqvae_naive", "rqvae"):
        quantizer = make_quantizer(name, PINNED["levels"], PINNED["codebook_size"], PINNED["seed"], PINNED["options"])
        codes = quantizer.fit(x).encode(x)
        runs[name] = diagnostics(x, codes, quantizer.decode(codes), PINNED["codebook_size"], seed=0)
    return runs


def test_rqvae_naive_collapses_on_real_embeddings(pinned_runs):
    naive = pinned_runs["rqvae_naive"]
    assert naive["codebook_usage_level_1"] <= 0.05
    assert naive["collision_rate"] >= 0.9
    assert naive["largest_bucket"] >= 25


def test_rqvae_fixed_recipe_uses_its_codebooks(pinned_runs):
    fixed = pinned_runs["rqvae"]
    assert fixed["codebook_usage_level_1"] >= 0.9
    assert fixed["codebook_usage_level_2"] >= 0.9
    assert fixed["collision_rate"] <= 0.40
    assert fixed["largest_bucket"] <= 10
    assert fixed["neighbour_preservation"] > 5 * fixed["neighbour_preservation_random"]


def test_rqkmeans_fits_slices_with_fewer_items_than_dimensions():
    # FAISS's progressive-dim training needs n > dim; small slices must still quantize.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 384)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    codes = make_quantizer("rqkmeans", 2, 256, 0).fit(x).encode(x)
    assert codes.shape == (300, 2) and len(np.unique(codes[:, 0])) > 200
