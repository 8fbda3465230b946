"""The cost-curve bench's growth fit (bench/cost_curves.py): exponents recovered, slopes named."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "cost_curves.py"
spec = importlib.util.spec_from_file_location("cost_curves", BENCH)
cost_curves = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = cost_curves  # dataclasses look their module up there
spec.loader.exec_module(cost_curves)

# The bench's own row shapes: item slices (ratings grow with them) and user repeats at fixed items.
ITEMS = np.array([1000, 2500, 5000, 1000, 1000], dtype=float)
RATINGS = np.array([10_233, 26_000, 51_000, 30_700, 61_400], dtype=float)


@pytest.mark.parametrize("a, b", [(1.0, 0.0), (0.0, 1.0), (2.0, 0.5), (1.0, 1.0)])
def test_fit_recovers_both_exponents_above_the_floor(a, b):
    floor = 7.0
    scale = 10.0 / (ITEMS[0] ** a * RATINGS[0] ** b)  # 10 s above the floor in the first row
    cost = floor + scale * ITEMS**a * RATINGS**b
    fit = cost_curves.fit_power(ITEMS, RATINGS, cost, floor)
    assert fit.a == pytest.approx(a, abs=1e-6) and fit.b == pytest.approx(b, abs=1e-6)
    assert fit.predict(62_000, 25e6) == pytest.approx(floor + scale * 62_000**a * 25e6**b, rel=1e-6)


def test_rows_at_the_floor_give_a_flat_fit():
    fit = cost_curves.fit_power(ITEMS, RATINGS, np.full(5, 4.0), floor=4.0)
    assert (fit.a, fit.b) == (0.0, 0.0)
    assert math.isclose(fit.predict(62_000, 25e6), 4.0, abs_tol=1e-6)


@pytest.mark.parametrize("slope, label", [(0.1, "flat"), (0.6, "sublinear"), (1.0, "linear"), (1.3, "n log n"),
                                          (2.0, "quadratic"), (3.0, "worse than quadratic")])
def test_growth_labels(slope, label):
    assert cost_curves.growth_label(slope) == label


def test_a_negative_slope_is_dropped_as_noise():
    cost = 2.0 + 0.01 * ITEMS * (RATINGS / RATINGS) ** 0 / (RATINGS / 1e4) ** 0.3  # shrinks with ratings
    fit = cost_curves.fit_power(ITEMS, RATINGS, cost, 2.0)
    assert fit.b == 0.0 and fit.a > 0
