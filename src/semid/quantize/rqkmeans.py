"""Residual k-means with FAISS: level l clusters what levels 1..l-1 left unexplained."""

from __future__ import annotations

import numpy as np

from semid.quantize import QuantizeError, check_codes, check_embeddings, check_power_of_two
from semid.quantize.options import RQKMeansOptions


class RQKMeansQuantizer:
    """``faiss.ResidualQuantizer(dim, levels, log2(codebook_size))``.

    The codebook size must be a power of two (FAISS stores codes as ``nbits`` bit fields).
    ``beam_size`` 1 is the greedy residual k-means of the paper; larger beams search code
    combinations jointly. Codes are unpacked from FAISS's bit-packed layout into (n, levels).
    """

    def __init__(self, levels: int, codebook_size: int, seed: int, options: RQKMeansOptions):
        self.levels, self.codebook_size, self.seed, self.options = levels, codebook_size, seed, options
        self.nbits = check_power_of_two("rqkmeans", codebook_size)
        self._rq = None
        self._norm = 1.0
        self.curve: list[dict] = []

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        if self.options.normalize_input:
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(x, dtype=np.float32)

    def fit(self, x: np.ndarray) -> "RQKMeansQuantizer":
        import faiss

        x = check_embeddings(x, self.codebook_size)
        self._norm = float(np.linalg.norm(x, axis=1).mean())
        rq = faiss.ResidualQuantizer(x.shape[1], self.levels, self.nbits)
        rq.max_beam_size = self.options.beam_size
        rq.cp.seed = self.seed
        rq.cp.niter = self.options.kmeans_iters
        rq.cp.min_points_per_centroid = 1  # fit() already requires n >= codebook_size
        # Progressive-dim k-means warms up in a PCA basis, which FAISS cannot build from fewer
        # points than dimensions (small slices, e.g. 300 items x 384-d): plain k-means then.
        progressive = x.shape[0] > x.shape[1]
        rq.train_type = faiss.ResidualQuantizer.Train_progressive_dim if progressive else faiss.ResidualQuantizer.Train_default
        if self.options.refine_codebooks:
            rq.train_type |= faiss.ResidualQuantizer.Train_refine_codebook
        rq.train(self._prepare(x))
        self._rq = rq
        return self

    def _require_fit(self) -> None:
        if self._rq is None:
            raise QuantizeError("rqkmeans: call fit() before encode()/decode()")

    def encode(self, x: np.ndarray) -> np.ndarray:
        self._require_fit()
        x = check_embeddings(x)
        packed = self._rq.compute_codes(self._prepare(x))  # (n, code_size) uint8, bit fields LSB first
        bits = np.unpackbits(packed, axis=1, bitorder="little")[:, : self.levels * self.nbits]
        bits = bits.reshape(len(x), self.levels, self.nbits).astype(np.int64)
        return (bits << np.arange(self.nbits)).sum(axis=2)  # (n, levels)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        import faiss

        self._require_fit()
        codes = check_codes(codes, self.levels, self.codebook_size)
        dim = self._rq.d
        codebooks = faiss.vector_to_array(self._rq.codebooks).reshape(self.levels, self.codebook_size, dim)
        out = codebooks[np.arange(self.levels), codes].sum(axis=1)  # (n, dim): sum of the chosen codewords
        if self.options.normalize_input:
            out = out * self._norm
        return out.astype(np.float32)
