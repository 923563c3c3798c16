"""Means and 95 % intervals across seeds."""

import math

import pytest

from simulation.stats import mean_ci, t975


def test_interval_is_students_t():
    mean, half = mean_ci([1.0, 2.0, 3.0])  # sd 1, n 3
    assert mean == 2.0 and half == pytest.approx(4.303 / math.sqrt(3))
    assert mean_ci([0.7]) == (0.7, None)  # one seed: no interval


@pytest.mark.parametrize("df, exact", [(40, 2.0211), (60, 2.0003), (120, 1.9799), (10**6, 1.95997)])
def test_t_quantile_past_the_table(df, exact):
    assert t975(df) == pytest.approx(exact, rel=1e-3)


def test_no_values_is_an_error():
    with pytest.raises(ValueError):
        mean_ci([])
    with pytest.raises(ValueError):
        t975(0)
