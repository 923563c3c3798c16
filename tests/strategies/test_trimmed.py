import numpy as np
import pytest

from strategies.base import ScalarReply
from strategies.loader import StrategyError, load_strategy
from strategies.trimmed import TrimmedMean


def _replies(rows, n=1):
    return [ScalarReply(i, np.asarray(r, dtype=np.float64), n, 0.5) for i, r in enumerate(rows)]


def test_cuts_one_from_each_end_of_five_per_coordinate():
    rows = [[5.0, 0.0], [1.0, 10.0], [3.0, 20.0], [100.0, 30.0], [-50.0, 40.0]]
    got = load_strategy("trimmed-mean").aggregate(1, _replies(rows))  # trim=0.2: cut 1 each end
    # column 0 sorted: -50 1 3 5 100 -> (1+3+5)/3; column 1: 0 10 20 30 40 -> (10+20+30)/3
    np.testing.assert_allclose(got, [3.0, 20.0], rtol=0, atol=1e-12)


def test_too_few_clients_to_cut_is_the_unweighted_mean():
    rows = [[1.0], [2.0], [4.0], [9.0]]  # floor(0.2 * 4) = 0
    got = TrimmedMean(0.2).aggregate(1, _replies(rows, n=7))
    np.testing.assert_allclose(got, [4.0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(TrimmedMean(0.0).aggregate(1, _replies(rows)), [4.0], rtol=0, atol=1e-12)


def test_near_half_trim_keeps_one_value_with_odd_count():
    rows = [[7.0], [-3.0], [2.0]]  # floor(0.49 * 3) = 1: only the middle value stays
    np.testing.assert_array_equal(TrimmedMean(0.49).aggregate(1, _replies(rows)), [2.0])
    # floor(0.49 * 2) = 0: nothing cut
    np.testing.assert_array_equal(TrimmedMean(0.49).aggregate(1, _replies(rows[:2])), [2.0])
    np.testing.assert_array_equal(TrimmedMean(0.4).aggregate(1, _replies(rows[:1])), [7.0])


def test_cut_count_is_not_lost_to_float_rounding():
    # 0.29 * 100 is 28.999... in floats; the rule says 29 from each end
    rows = [[float(i * i)] for i in range(100)]
    expected = sum(i * i for i in range(29, 71)) / 42
    np.testing.assert_allclose(TrimmedMean(0.29).aggregate(1, _replies(rows)), [expected], rtol=1e-15)


def test_one_arbitrary_client_is_trimmed_away():
    honest = [[1.0, -2.0], [1.2, -1.8], [0.8, -2.2], [1.1, -2.1]]
    replies = _replies(honest + [[1e6, -1e6]])
    got = TrimmedMean(0.2).aggregate(1, replies)
    # column 0 keeps 1.0 1.1 1.2, column 1 keeps -2.2 -2.1 -2.0
    np.testing.assert_allclose(got, [1.1, -2.1], rtol=0, atol=1e-12)
    assert np.all(np.abs(load_strategy("mean").aggregate(1, replies)) > 1e5)


def test_identical_replies_come_back_exactly():
    # summing three 0.1s overshoots by an ulp; the result must still be 0.1
    got = TrimmedMean(0.0).aggregate(1, _replies([[0.1]] * 3))
    assert got[0] == 0.1


@pytest.mark.parametrize("bad", [0.7, 0.5, -0.1, float("nan"), float("inf")])
def test_trim_out_of_range_is_a_one_line_strategy_error(bad):
    with pytest.raises(StrategyError, match=r"trimmed-mean.*trim must be") as err:
        load_strategy("trimmed-mean", trim=bad)
    assert "\n" not in str(err.value)


def test_trim_error_message_names_the_range_and_value():
    with pytest.raises(StrategyError, match=r"trim must be in \[0, 0\.5\), got 0\.7"):
        load_strategy("trimmed-mean", trim=0.7)
    with pytest.raises(StrategyError, match="trim must be a number"):
        load_strategy("trimmed-mean", trim="lots")
    with pytest.raises(StrategyError, match="unexpected keyword"):
        load_strategy("trimmed-mean", trimm=0.1)
    assert load_strategy("trimmed-mean", trim=0.1).summary() == {"trim": 0.1}
