import numpy as np
import pytest

from strategies.base import ScalarReply
from strategies.clipped import ClippedMean, clip_rows
from strategies.loader import StrategyError, load_strategy


def _reply(pid, grads, n):
    return ScalarReply(pid, np.asarray(grads, dtype=np.float64), n, 0.5)


def test_long_replies_are_scaled_to_the_clip_then_weighted():
    s = load_strategy("clipped-mean", clip=10.0)
    # (3, 4) has norm 5: kept; (30, 40) has norm 50: scaled to (6, 8)
    got = s.aggregate(1, [_reply(0, [3.0, 4.0], 1), _reply(1, [30.0, 40.0], 3)])
    np.testing.assert_allclose(got, [(3 + 3 * 6) / 4, (4 + 3 * 8) / 4], rtol=0, atol=1e-12)
    assert s.summary() == {"clip": 10.0, "clipped": 1, "replies": 2}


def test_clipped_count_accumulates_over_rounds():
    s = ClippedMean(clip=1.0)
    s.aggregate(1, [_reply(0, [2.0, 0.0], 1), _reply(1, [0.5, 0.5], 1)])
    s.aggregate(2, [_reply(0, [0.0, 0.0], 1), _reply(1, [0.0, -3.0], 1), _reply(2, [1.0, 1.0], 1)])
    assert s.summary() == {"clip": 1.0, "clipped": 3, "replies": 5}


def test_clip_rows_bounds_each_norm_and_keeps_direction():
    grads = np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0], [-6.0, 8.0, 0.0], [0.0, 0.0, 1e6]])
    out, cut = clip_rows(grads, 5.0)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), [5.0, 0.0, 5.0, 5.0], rtol=1e-15)
    np.testing.assert_array_equal(cut, [False, False, True, True])  # exactly at the clip: not cut
    np.testing.assert_allclose(out[2], [-3.0, 4.0, 0.0], rtol=1e-15)
    np.testing.assert_array_equal(out[:2], grads[:2])


def test_one_large_reply_moves_the_mean_by_at_most_its_share_of_the_clip():
    honest = [_reply(i, [1.0, -1.0], 10) for i in range(4)]
    got = ClippedMean(clip=2.0).aggregate(1, honest + [_reply(9, [1e6, 1e6], 10)])
    assert np.linalg.norm(got - [1.0, -1.0]) <= (10 / 50) * (2.0 + np.sqrt(2)) + 1e-12
    assert np.all(np.abs(load_strategy("mean").aggregate(1, honest + [_reply(9, [1e6, 1e6], 10)])) > 1e5)


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan")])
def test_clip_must_be_positive_and_finite(bad):
    with pytest.raises(StrategyError, match="clip must be"):
        load_strategy("clipped-mean", clip=bad)
