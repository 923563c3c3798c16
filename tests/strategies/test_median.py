import numpy as np

from strategies.loader import load_strategy
from strategies.median import CoordinateMedian


def _reply(pid, grads, n=1):
    from strategies.base import ScalarReply

    return ScalarReply(pid, np.asarray(grads, dtype=np.float64), n, 0.5)


def test_odd_count_takes_the_middle_value_per_coordinate():
    rows = [[1.0, 5.0, -3.0], [2.0, -1.0, 0.0], [10.0, 0.0, 4.0]]
    got = load_strategy("median").aggregate(1, [_reply(i, r) for i, r in enumerate(rows)])
    np.testing.assert_array_equal(got, [2.0, 0.0, 0.0])  # by hand
    np.testing.assert_array_equal(got, np.median(np.array(rows), axis=0))
    assert got.dtype == np.float64 and got.shape == (3,)


def test_even_count_averages_the_two_middle_values():
    rows = [[1.0, -4.0], [3.0, 8.0], [7.0, 0.0], [100.0, 2.0]]
    got = CoordinateMedian().aggregate(1, [_reply(i, r) for i, r in enumerate(rows)])
    np.testing.assert_array_equal(got, [5.0, 1.0])  # (3+7)/2, (0+2)/2


def test_example_counts_do_not_weight_the_median():
    # a client claiming 1e6 examples is still one vote
    replies = [_reply(0, [0.0], 1), _reply(1, [1.0], 1), _reply(2, [9.0], 1_000_000)]
    np.testing.assert_array_equal(CoordinateMedian().aggregate(1, replies), [1.0])


def test_one_arbitrary_client_barely_moves_the_median_but_drags_the_mean():
    honest = [[1.0, -2.0], [1.1, -1.9], [0.9, -2.1], [1.05, -2.05]]
    replies = [_reply(i, r, 10) for i, r in enumerate(honest)] + [_reply(9, [1e6, 1e6], 10)]
    med = load_strategy("median").aggregate(1, replies)
    mean = load_strategy("mean").aggregate(1, replies)
    lo, hi = np.min(honest, axis=0), np.max(honest, axis=0)
    assert np.all((lo <= med) & (med <= hi))
    np.testing.assert_allclose(med, [1.05, -2.0])  # third of five sorted values, by hand
    assert np.all(mean > 1e5)
