import numpy as np
import pytest

from strategies.base import ScalarReply, ScalarStrategy
from strategies.loader import StrategyError, load_strategy


def _reply(pid, grads, n):
    return ScalarReply(pid, np.asarray(grads, dtype=np.float64), n, 0.5)


def test_weighted_mean_matches_numpy():
    replies = [_reply(0, [1.0, -2.0, 0.5], 10), _reply(1, [3.0, 0.0, -0.5], 30)]
    got = load_strategy("mean").aggregate(1, replies)
    expected = (10 * np.array([1.0, -2.0, 0.5]) + 30 * np.array([3.0, 0.0, -0.5])) / 40
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-15)


def test_server_lr_scales_the_mean_and_rejects_bad_values():
    replies = [_reply(0, [1.0, -2.0], 10), _reply(1, [3.0, 0.0], 30)]
    base = load_strategy("mean").aggregate(1, replies)
    np.testing.assert_allclose(load_strategy("mean", server_lr=2.5).aggregate(1, replies),
                               2.5 * base, rtol=0, atol=1e-15)
    for bad in (0, -1.0, "fast", float("nan")):
        with pytest.raises(StrategyError, match="server_lr must be"):
            load_strategy("mean", server_lr=bad)


class Halve(ScalarStrategy):
    def __init__(self, factor: float = 0.5):
        self.factor = factor

    def aggregate(self, server_round, replies):
        return self.factor * np.mean([r.grads for r in replies], axis=0)


def test_loading_by_dotted_path_and_errors():
    s = load_strategy("tests.strategies.test_mean:Halve", factor=0.25)
    np.testing.assert_allclose(s.aggregate(1, [_reply(0, [4.0], 1)]), [1.0])
    with pytest.raises(StrategyError, match="unknown strategy"):
        load_strategy("median-of-means")
    with pytest.raises(StrategyError, match="cannot import"):
        load_strategy("no.such.module:X")
    with pytest.raises(StrategyError, match="not a ScalarStrategy"):
        load_strategy("numpy:ndarray")
    with pytest.raises(StrategyError, match="unexpected keyword"):
        load_strategy("tests.strategies.test_mean:Halve", bogus=1)
