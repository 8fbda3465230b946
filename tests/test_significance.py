"""The grid's statistics against textbook numbers (issue 17's check)."""

import math

import pandas as pd
import pytest

from semid.significance import (
    SignificanceError, bonferroni, hits_at_k, paired_t_test, pool_seeds, summarize,
)

# Student (1908) / Cushny & Peebles: extra hours of sleep of 10 patients under two drugs, the
# classic paired t-test: t = 4.0621, df = 9, p = 0.002833 (R: t.test(extra ~ group, data = sleep,
# paired = TRUE), sign flipped for drug 2 minus drug 1); 95% interval of drug 2's mean 2.33 is
# (0.8976, 3.7624) (t.test(sleep$extra[11:20])).
DRUG_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
DRUG_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def series(values, prefix="q"):
    return pd.Series(values, index=[f"{prefix}{i}" for i in range(len(values))], dtype=float)


def test_paired_t_test_gives_students_sleep_numbers():
    test = paired_t_test(series(DRUG_2), series(DRUG_1))
    assert test.difference == pytest.approx(1.58)
    assert test.t == pytest.approx(4.0621, abs=1e-4)
    assert test.df == 9
    assert test.p == pytest.approx(0.002833, abs=1e-6)


def test_interval_is_the_t_interval_of_the_mean():
    summary = summarize([series(DRUG_2)])
    assert summary.mean == pytest.approx(2.33)
    assert (summary.ci_low, summary.ci_high) == pytest.approx((0.8976, 3.7624), abs=1e-4)
    assert math.isnan(summary.sd_over_seeds) and summary.seeds == 1 and summary.units == 10


def test_tiny_grid_of_two_experiments_with_known_hits():
    """Two rows, two seeds each, ten queries. Per-query rates pooled over seeds:
    row   = [1, 1, .5, 0, 1, 0, 1, 1, 0, 1]  (mean 0.65)
    ref   = [0, 1, .5, 0, 1, 0, 0, 1, 0, 0]  (mean 0.35)
    d     = [1, 0, 0,  0, 0, 0, 1, 0, 0, 1]: mean 0.3, sd sqrt(2.1 / 9) = 0.48305, se 0.15275,
    t = 1.9640 on 9 df, two-sided p = 0.0811 (t tables, df 9: between the 0.10 and 0.05 points 1.833 and 2.262); seed means 0.7 / 0.6 and 0.4 / 0.3: sd 0.0707."""
    ranks_row = [[1, 3, 40, None, 2, 31, 5, 1, None, 30], [2, 1, 7, 50, 1, None, 9, 4, 99, 12]]
    ranks_ref = [[None, 1, 2, 31, 3, None, 44, 1, None, 60], [45, 2, 31, 31, 8, 40, None, 2, 33, 31]]
    row = [hits_at_k(series(r), 30) for r in ranks_row]
    ref = [hits_at_k(series(r), 30) for r in ranks_ref]
    assert list(pool_seeds(row)) == [1, 1, 0.5, 0, 1, 0, 1, 1, 0, 1]
    summary = summarize(row)
    assert summary.mean == pytest.approx(0.65) and summary.sd_over_seeds == pytest.approx(math.sqrt(0.005))
    test = paired_t_test(pool_seeds(row), pool_seeds(ref))
    assert test.difference == pytest.approx(0.3)
    assert test.t == pytest.approx(1.9640, abs=1e-4)
    assert test.p == pytest.approx(0.0811, abs=1e-4)
    # Three comparisons in the table: p x 3.
    assert bonferroni([test.p, 0.01, 0.5]) == pytest.approx([0.2434, 0.03, 1.0], abs=1e-4)


def test_units_are_matched_by_id_not_by_position():
    a = series([1, 0, 1])
    shuffled = a.iloc[[2, 0, 1]]
    assert paired_t_test(a, shuffled).difference == 0 and paired_t_test(a, shuffled).p == 1.0
    assert list(pool_seeds([a, shuffled])) == [1, 0, 1]


def test_runs_on_other_units_are_refused():
    with pytest.raises(SignificanceError, match="seed 2 measured other units"):
        pool_seeds([series([1, 0]), series([1, 0], prefix="u")])
    with pytest.raises(SignificanceError, match="different units"):
        paired_t_test(series([1, 0, 1]), series([1, 0]))
