"""Quantizers: item embeddings (n, dim) -> semantic codes (n, levels) and back.

Every method is one small class behind one protocol (:class:`Quantizer`), looked up by its
params name in :data:`REGISTRY`:

- ``rqkmeans``: residual k-means, FAISS ``ResidualQuantizer`` (:mod:`.rqkmeans`);
- ``rqvae`` / ``rqvae_naive``: MLP encoder -> ``ResidualVQ`` -> MLP decoder (:mod:`.rqvae`),
  the fixed recipe and the library-defaults one;
- ``dictlearn``: dictionary learning made discrete level by level (:mod:`.dictlearn`);
- ``rlfq``: ``ResidualLFQ`` behind a learned projection (:mod:`.rlfq`).

The two learned ones (rqvae, rlfq) share one training loop (:mod:`.training`).

The registry holds import paths, not classes, so naming a quantizer never imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable

import numpy as np

from semid.io import SemidError
from semid.quantize.options import PRESETS, build_options


class QuantizeError(SemidError, ValueError):
    """Input a quantizer cannot use (bad shape, NaN, too few items, bad codebook size)."""


@runtime_checkable
class Quantizer(Protocol):
    levels: int
    codebook_size: int
    # Training-curve rows of the last fit (step, loss, ..., one dict per logged step; the stage
    # writes them to the DVC plot); empty for quantizers not trained by gradient steps.
    curve: list[dict]

    def fit(self, x: np.ndarray) -> "Quantizer": ...

    def encode(self, x: np.ndarray) -> np.ndarray:  # (n, levels) int64 in [0, codebook_size)
        ...

    def decode(self, codes: np.ndarray) -> np.ndarray:  # (n, dim) float32
        ...


# params name -> "module:Class" (relative to this package)
REGISTRY: dict[str, str] = {
    "rqkmeans": ".rqkmeans:RQKMeansQuantizer",
    "rqvae": ".rqvae:RQVAEQuantizer",
    "rqvae_naive": ".rqvae:RQVAEQuantizer",
    "dictlearn": ".dictlearn:DictLearnQuantizer",
    "rlfq": ".rlfq:RLFQQuantizer",
}


def quantizer_class(name: str) -> type:
    if name not in REGISTRY:
        raise QuantizeError(f"unknown quantizer {name!r}; choose one of: {', '.join(REGISTRY)}")
    module_name, class_name = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module_name, __name__), class_name)


def make_quantizer(
    name: str, levels: int, codebook_size: int, seed: int, options: dict[str, Any] | Any | None = None
) -> Quantizer:
    """Build the quantizer ``name``; ``options`` is a mapping of overrides or an options object."""
    cls = quantizer_class(name)
    if not isinstance(options, PRESETS[name][0]):
        options = build_options(name, options)
    return cls(levels=levels, codebook_size=codebook_size, seed=seed, options=options)


def check_embeddings(x: np.ndarray, codebook_size: int | None = None, name: str = "embeddings") -> np.ndarray:
    """``x`` as float32 (n, dim), or a QuantizeError saying what is wrong with it."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise QuantizeError(f"{name} must be a non-empty (n_items, dim) array, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise QuantizeError(f"{name} must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise QuantizeError(
            f"{name} hold NaN/inf in {bad.sum()} of {len(x)} rows (first rows: {rows[:5].tolist()})"
        )
    if codebook_size is not None and x.shape[0] < codebook_size:
        raise QuantizeError(
            f"{x.shape[0]} items cannot fill codebooks of {codebook_size} codes per level; "
            f"lower quantize.codebook_size to at most {x.shape[0]} (or use more items)"
        )
    return x


def check_codes(codes: np.ndarray, levels: int, codebook_size: int) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] != levels:
        raise QuantizeError(f"codes must have shape (n, {levels}), got {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= codebook_size):
        raise QuantizeError(f"codes must lie in [0, {codebook_size}), got [{codes.min()}, {codes.max()}]")
    return codes.astype(np.int64, copy=False)


def check_power_of_two(name: str, codebook_size: int) -> int:
    """log2(codebook_size), or an error for quantizers whose codes are bit strings."""
    if codebook_size < 2 or codebook_size & (codebook_size - 1):
        low = 1 << max(1, codebook_size.bit_length() - 1)
        raise QuantizeError(
            f"quantize.codebook_size={codebook_size} must be a power of two for {name} "
            f"(its codes are {name} bit strings); e.g. {low} or {low * 2}"
        )
    return codebook_size.bit_length() - 1


class InputScaler:
    """Per-dimension affine map applied before a learned quantizer and undone after decoding.

    ``center``: subtract the mean; ``standardize``: and divide by each dimension's std;
    ``global_scale``: centre and divide by one scalar so the mean squared norm is ``dim`` (per-dim
    variance 1 on average, directions kept). Unit-norm sentence embeddings have per-dimension std
    around 1/sqrt(dim), which is what these undo.
    """

    def __init__(self, how: str):
        self.how = how
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None

    def fit(self, x: np.ndarray) -> "InputScaler":
        dim = x.shape[1]
        self.mean = np.zeros(dim, np.float32)
        self.scale = np.ones(dim, np.float32)
        if self.how in ("center", "standardize", "global_scale"):
            self.mean = x.mean(axis=0).astype(np.float32)
        if self.how == "standardize":
            self.scale = np.maximum(x.std(axis=0), 1e-6).astype(np.float32)
        elif self.how == "global_scale":
            rms = float(np.sqrt(((x - self.mean) ** 2).sum(axis=1).mean() / dim))
            self.scale = np.full(dim, max(rms, 1e-6), np.float32)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale).astype(np.float32)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return (z * self.scale + self.mean).astype(np.float32)
