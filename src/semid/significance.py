"""How sure a grid table can be: seeds, 95% intervals and paired tests with Bonferroni correction.

Every grid point is evaluated on the same units (search queries, rec users) for every seed, so a
unit's outcome is its hit (the target within the first k) averaged over the point's seeds. On
those per-unit rates:

- the **interval** of a point is the 95% Student-t interval of the mean over units: the
  uncertainty of sampling queries and users, the larger one here (one seed's standard error is
  ~0.005 for 5,000 search queries and ~0.012 for 610 rec users), while the standard deviation
  over seeds is reported beside it as the run-to-run spread;
- the **paired test** of a row against its reference row is Student's paired t-test on the
  per-unit differences: the paper's test (Penha et al. 2025 ran paired t-tests with Bonferroni
  correction), and pairing by unit removes the variance of easy and hard queries that both rows
  share. Rates pooled over seeds keep the units independent, which pairs of (unit, seed) would not;
- **Bonferroni**: each p-value times the number of comparisons in the table, capped at 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from semid.io import SemidError

ALPHA = 0.05


class SignificanceError(SemidError):
    """Seeds or rows that cannot be compared: no units, or units that differ between them."""


def hits_at_k(hit_rank: pd.Series, k: int) -> pd.Series:
    """1.0 where the target is ranked within the first ``k`` (ranks count from 1), else 0.0; a
    missing rank (the target not retrieved at all) is a miss. Keeps the unit index."""
    ranks = pd.to_numeric(hit_rank, errors="coerce")
    return (ranks.notna() & (ranks <= k)).astype(float)


def pool_seeds(per_seed: Sequence[pd.Series]) -> pd.Series:
    """Each unit's hit rate over the seeds of one grid point (units are the Series index).

    Every seed must have measured the same units: the seed changes the model, never the test set,
    so a difference means the runs are not comparable, and it is reported rather than dropped."""
    if not per_seed:
        raise SignificanceError("no seeds to pool")
    units = per_seed[0].index
    if units.has_duplicates:
        raise SignificanceError("a unit (query or user) appears twice in one seed's hits")
    for i, seed in enumerate(per_seed[1:], start=2):
        if not seed.index.sort_values().equals(units.sort_values()):
            missing = len(units.difference(seed.index)) + len(seed.index.difference(units))
            raise SignificanceError(f"seed {i} measured other units than seed 1 ({missing} differ)")
    return pd.concat([s.reindex(units) for s in per_seed], axis=1).mean(axis=1)


def _t_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    n = len(values)
    mean = float(values.mean())
    if n < 2:
        return (math.nan, math.nan)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return (mean - float(half), mean + float(half))


@dataclass(frozen=True)
class PointSummary:
    """One grid point's metric over its seeds."""

    mean: float  # over units of the per-unit rate = the mean of the seeds' metric
    sd_over_seeds: float  # sample standard deviation of the seeds' metric (nan for one seed)
    ci_low: float  # 95% t-interval of the mean over units
    ci_high: float
    seeds: int
    units: int


def summarize(per_seed: Sequence[pd.Series], confidence: float = 0.95) -> PointSummary:
    """Mean, spread over seeds and interval of one grid point from its per-seed hit Series."""
    rates = pool_seeds(per_seed)
    seed_means = np.array([float(s.mean()) for s in per_seed])
    low, high = _t_interval(rates.to_numpy(dtype=float), confidence)
    spread = float(seed_means.std(ddof=1)) if len(seed_means) > 1 else math.nan
    return PointSummary(float(rates.mean()), spread, low, high, len(per_seed), len(rates))


@dataclass(frozen=True)
class PairedTest:
    """A row against its reference row on the units both measured."""

    difference: float  # row minus reference, mean over units
    t: float
    df: int
    p: float  # two-sided, before correction
    units: int


def paired_t_test(row: pd.Series, reference: pd.Series) -> PairedTest:
    """Student's paired t-test of per-unit rates (from :func:`pool_seeds`) of two rows.

    Identical rows (every difference zero) get t = 0 and p = 1 rather than a division by zero."""
    if not row.index.sort_values().equals(reference.index.sort_values()):
        raise SignificanceError(
            f"the rows measured different units ({len(row)} and {len(reference)}; "
            f"{len(row.index.intersection(reference.index))} in common): rerun them on one test set"
        )
    d = (row - reference.reindex(row.index)).to_numpy(dtype=float)
    n = len(d)
    if n < 2:
        raise SignificanceError(f"a paired test needs at least 2 units, got {n}")
    sd = d.std(ddof=1)
    if sd == 0:
        return PairedTest(float(d.mean()), 0.0 if d.mean() == 0 else math.copysign(math.inf, d.mean()), n - 1,
                          1.0 if d.mean() == 0 else 0.0, n)
    t = float(d.mean() / (sd / math.sqrt(n)))
    return PairedTest(float(d.mean()), t, n - 1, float(2 * stats.t.sf(abs(t), n - 1)), n)


def bonferroni(pvalues: Sequence[float]) -> list[float]:
    """Each p-value times the number of comparisons, capped at 1."""
    m = len(pvalues)
    return [min(1.0, p * m) for p in pvalues]
