"""Prefix-shared semantic IDs (Penha et al. 2025, "prefix-share"): one first level for both tasks,
task-specific later levels.

Level 1 is one quantizer with a single level fitted on the concatenation of the l2-normalised task
embeddings ``[search | rec]``, so every item gets one shared first code. Its reconstruction, split
into the two halves, is each task's level-1 centroid; levels 2..L of each task are the same
quantizer (L - 1 levels) fitted on that task's residual. Any quantizer of the registry works: it
only sees plain (n, dim) arrays.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from semid.embed import l2_normalize
from semid.quantize import QuantizeError, Quantizer

SHARED = "shared"  # the curve rows of the shared first level


@dataclass
class SpaceCodes:
    """One task's codes and what they approximate."""

    x: np.ndarray  # (n, dim) the l2-normalised task embeddings the codes encode
    codes: np.ndarray  # (n, levels): the shared code, then the task's own
    reconstruction: np.ndarray  # (n, dim) the shared level's half plus the task levels' decode
    curve: list[dict] = field(default_factory=list)
    fit_seconds: float = 0.0


def fit_prefix_share(
    spaces: dict[str, np.ndarray], levels: int, build: Callable[[int], Quantizer]
) -> tuple[dict[str, SpaceCodes], list[dict]]:
    """Codes per space whose first level is shared, and the shared level's curve rows.

    ``build(n_levels)`` returns a fresh, unfitted quantizer with that many levels.
    """
    if levels < 2:
        raise QuantizeError(
            f"prefix-shared IDs need quantize.levels >= 2 (one shared level plus the tasks' own), got {levels}"
        )
    names = list(spaces)
    parts = [l2_normalize(spaces[name]) for name in names]
    started = time.perf_counter()
    shared = build(1)
    joint = np.ascontiguousarray(np.hstack(parts))
    shared.fit(joint)
    first = shared.encode(joint)  # (n, 1): one code per item, the same in every space
    halves = np.split(shared.decode(first), np.cumsum([p.shape[1] for p in parts])[:-1], axis=1)
    shared_seconds = time.perf_counter() - started
    out = {}
    for name, x, half in zip(names, parts, halves):
        started = time.perf_counter()
        residual = np.ascontiguousarray(x - half, dtype=np.float32)
        own = build(levels - 1)
        own.fit(residual)
        later = own.encode(residual)
        out[name] = SpaceCodes(
            x=x,
            codes=np.column_stack([first, later]).astype(np.int64),
            reconstruction=(half + own.decode(later)).astype(np.float32),
            curve=list(own.curve),
            # The shared fit serves every space; each space's total includes it.
            fit_seconds=shared_seconds + time.perf_counter() - started,
        )
    return out, [{"space": SHARED, **row} for row in shared.curve]
