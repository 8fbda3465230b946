"""Dictionary learning made discrete: one scikit-learn dictionary per level, on the residuals.

Construction, per level l (residual r_1 = x):

1. ``MiniBatchDictionaryLearning(n_components=codebook_size)`` learns unit-norm atoms d_k that
   sparsely code r_l (alpha = sparsity penalty).
2. The discrete code is the atom that best explains r_l alone: c = argmax_k <r_l, d_k> (a
   one-atom matching pursuit restricted to positive coefficients, so one code means one direction).
3. A code stands for a fixed vector, so decoding needs no continuous coefficient: the scale
   s_k is the mean of <r_l, d_k> over the items assigned to k, and level l reconstructs s_c d_c.
4. r_{l+1} = r_l - s_c d_c.

So each level is a spherical-k-means-like codebook whose directions come from dictionary
learning; decode(codes) = sum over levels of s_c d_c. An atom no item picks keeps scale 0.
"""

from __future__ import annotations

import numpy as np

from semid.quantize import QuantizeError, check_codes, check_embeddings
from semid.quantize.options import DictLearnOptions


class DictLearnQuantizer:
    def __init__(self, levels: int, codebook_size: int, seed: int, options: DictLearnOptions):
        self.levels, self.codebook_size, self.seed, self.options = levels, codebook_size, seed, options
        self.codebooks: list[np.ndarray] = []  # per level (codebook_size, dim): s_k * d_k
        self._atoms: list[np.ndarray] = []  # per level (codebook_size, dim) unit-norm atoms
        self.curve: list[dict] = []

    def fit(self, x: np.ndarray) -> "DictLearnQuantizer":
        from sklearn.decomposition import MiniBatchDictionaryLearning

        x = check_embeddings(x, self.codebook_size)
        residual = x.astype(np.float64)
        self.codebooks, self._atoms = [], []
        for level in range(self.levels):
            learner = MiniBatchDictionaryLearning(
                n_components=self.codebook_size,
                alpha=self.options.alpha,
                max_iter=self.options.max_iter,
                batch_size=self.options.batch_size,
                random_state=self.seed + level,
            )
            learner.fit(residual)
            atoms = learner.components_ / np.maximum(np.linalg.norm(learner.components_, axis=1, keepdims=True), 1e-12)
            scores = residual @ atoms.T
            assigned = scores.argmax(axis=1)
            sums = np.bincount(assigned, weights=scores[np.arange(len(x)), assigned], minlength=self.codebook_size)
            counts = np.bincount(assigned, minlength=self.codebook_size)
            scales = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
            codebook = scales[:, None] * atoms
            self._atoms.append(atoms)
            self.codebooks.append(codebook)
            residual = residual - codebook[assigned]
        return self

    def encode(self, x: np.ndarray) -> np.ndarray:
        if not self.codebooks:
            raise QuantizeError("dictlearn: call fit() before encode()/decode()")
        residual = check_embeddings(x).astype(np.float64)
        codes = np.empty((len(residual), self.levels), np.int64)
        for level, (atoms, codebook) in enumerate(zip(self._atoms, self.codebooks)):
            codes[:, level] = (residual @ atoms.T).argmax(axis=1)
            residual = residual - codebook[codes[:, level]]
        return codes

    def decode(self, codes: np.ndarray) -> np.ndarray:
        if not self.codebooks:
            raise QuantizeError("dictlearn: call fit() before encode()/decode()")
        codes = check_codes(codes, self.levels, self.codebook_size)
        out = sum(codebook[codes[:, level]] for level, codebook in enumerate(self.codebooks))
        return np.asarray(out, np.float32)
