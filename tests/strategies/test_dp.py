import json
import math

import numpy as np
import pytest

from prge.perturb import derive_seed
from strategies.base import ScalarReply, ScalarStrategy, configure_strategy
from strategies.dp import DPGaussianMean
from strategies.loader import BUILT_IN, StrategyError, load_strategy


def _replies(rows, n=5):
    return [ScalarReply(i, np.asarray(r, dtype=np.float64), n, 0.5) for i, r in enumerate(rows)]


ROWS = [[3.0, 4.0, 0.0], [30.0, 40.0, 0.0], [0.0, 0.0, -1.0]]
CLIPPED_MEAN = np.array([3.0 + 6.0, 4.0 + 8.0, -1.0]) / 3  # clip=10: (30, 40, 0) -> (6, 8, 0)


def test_tiny_noise_leaves_the_clipped_unweighted_mean():
    s = DPGaussianMean(clip=10.0, noise_multiplier=1e-12, cohort=3)
    np.testing.assert_allclose(s.aggregate(1, _replies(ROWS)), CLIPPED_MEAN, rtol=0, atol=1e-9)


def test_output_is_clipped_sum_plus_seeded_noise_over_count():
    s = DPGaussianMean(clip=10.0, noise_multiplier=0.5, seed=7, cohort=3)
    s.run_seed = 9
    got = s.aggregate(4, _replies(ROWS))
    noise = np.random.default_rng(derive_seed(9, "dp-mean", 7, 4)).normal(0.0, 5.0, size=3)
    np.testing.assert_allclose(got, CLIPPED_MEAN + noise / 3, rtol=1e-12, atol=1e-12)


def test_same_seed_and_round_give_identical_output_whatever_ran_before():
    a, b = load_strategy("dp-mean", seed=3, cohort=3), load_strategy("dp-mean", seed=3, cohort=3)
    a.aggregate(1, _replies(ROWS))
    a.aggregate(2, _replies(ROWS))
    # b jumps straight to round 3, as a rerun or a resumed run would
    np.testing.assert_array_equal(a.aggregate(3, _replies(ROWS)), b.aggregate(3, _replies(ROWS)))


def test_different_round_or_seed_gives_different_noise():
    s = DPGaussianMean(seed=3, cohort=3)
    r1, r2 = s.aggregate(1, _replies(ROWS)), s.aggregate(2, _replies(ROWS))
    other = DPGaussianMean(seed=4, cohort=3).aggregate(1, _replies(ROWS))
    assert np.all(r1 != r2) and np.all(r1 != other)


def _noise(run_seed, server_round, **kwargs):
    s = DPGaussianMean(clip=10.0, noise_multiplier=1.0, cohort=3, **kwargs)
    s.run_seed = run_seed  # what configure_strategy sets before round 1
    return s.aggregate(server_round, _replies(ROWS)) - CLIPPED_MEAN


def test_two_run_seeds_draw_different_noise():
    """A `--grid seed=0,1,2` sweep must not replay one noise draw in every seed: the run seed
    reaches the noise even when the strategy's own `seed` is left at its default."""
    assert np.all(_noise(0, 1) != _noise(1, 1))
    assert np.all(_noise(0, 5, seed=3) != _noise(1, 5, seed=3))


def test_same_run_seed_and_round_give_identical_noise_whatever_ran_before():
    a, b = load_strategy("dp-mean", cohort=3), load_strategy("dp-mean", cohort=3)
    configure_strategy(a, clients_per_round=3, run_seed=5)
    configure_strategy(b, clients_per_round=3, run_seed=5)
    a.aggregate(1, _replies(ROWS))
    a.aggregate(2, _replies(ROWS))
    # b jumps straight to round 3, as a resumed run would
    np.testing.assert_array_equal(a.aggregate(3, _replies(ROWS)), b.aggregate(3, _replies(ROWS)))
    np.testing.assert_array_equal(_noise(5, 3), _noise(5, 3))


def test_configure_strategy_sets_the_run_seed_and_keeps_old_configure_overrides_working():
    class OldStyle(ScalarStrategy):  # written before run seeds reached strategies
        def configure(self, *, clients_per_round):
            self.cohort = clients_per_round

    s = OldStyle()
    assert s.run_seed == 0  # used without a server: deterministic
    configure_strategy(s, clients_per_round=4, run_seed=2)
    assert (s.cohort, s.run_seed) == (4, 2)
    dp = DPGaussianMean()
    configure_strategy(dp, clients_per_round=6, run_seed=2)
    assert (dp.cohort, dp.run_seed) == (6, 2)


def test_only_dp_mean_keeps_raw_client_statistics_out_of_the_metrics():
    assert DPGaussianMean.releases_client_statistics is False
    assert all(load_strategy(name).releases_client_statistics is True
               for name in BUILT_IN if name != "dp-mean")


def test_noise_std_is_multiplier_times_clip_over_count():
    s = DPGaussianMean(clip=2.0, noise_multiplier=1.5, seed=11, cohort=4)
    rows = [np.full(16, 0.1), np.full(16, -0.2), np.zeros(16), np.full(16, 5.0)]  # last one clipped
    exact = (rows[0] + rows[1] + rows[2] + rows[3] * (2.0 / np.linalg.norm(rows[3]))) / 4
    noise = np.array([s.aggregate(r, _replies(rows)) - exact for r in range(1, 2001)]).ravel()
    expected = 1.5 * 2.0 / 4  # 32,000 draws: the sample std is within ~0.4% of it
    assert abs(noise.std() / expected - 1) < 0.03
    assert abs(noise.mean()) < 4 * expected / math.sqrt(noise.size)


def test_epsilon_for_a_known_case():
    s = DPGaussianMean(noise_multiplier=1.0, delta=1e-5, cohort=3)
    assert s.summary()["epsilon"] == 0.0  # nothing released yet
    s.aggregate(1, _replies(ROWS))
    summ = s.summary()
    assert summ["rho"] == 0.5
    # 0.5 + 2 * sqrt(0.5 * ln(1e5)), worked out separately
    assert summ["epsilon"] == pytest.approx(5.298525912188081, rel=1e-12)
    t = DPGaussianMean(noise_multiplier=2.0, delta=1e-5, cohort=3)  # 8 rounds of rho = 1/8
    for r in range(1, 9):
        t.aggregate(r, _replies(ROWS))
    assert t.summary()["rho"] == 1.0
    assert t.summary()["epsilon"] == pytest.approx(1 + 2 * math.sqrt(math.log(1e5)), rel=1e-12)


def test_epsilon_grows_with_rounds_and_falls_with_noise():
    def eps(noise_multiplier, rounds):
        s = DPGaussianMean(noise_multiplier=noise_multiplier, cohort=3)
        for r in range(1, rounds + 1):
            s.aggregate(r, _replies(ROWS))
        return s.summary()["epsilon"]

    assert eps(1.0, 1) < eps(1.0, 2) < eps(1.0, 10)
    assert eps(0.5, 5) > eps(1.0, 5) > eps(4.0, 5)


def test_summary_names_its_figures_and_is_json():
    s = load_strategy("dp-mean", clip=1.5, noise_multiplier=0.8, delta=1e-6, cohort=3)
    s.aggregate(1, _replies(ROWS))
    summ = json.loads(json.dumps(s.summary()))
    assert summ["clip"] == 1.5 and summ["noise_multiplier"] == 0.8 and summ["delta"] == 1e-6
    assert summ["rounds"] == 1 and summ["rho"] == pytest.approx(1 / (2 * 0.8**2))
    assert summ["accounting"] == "zCDP, no subsampling amplification"


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"noise_multiplier": 0}, "noise_multiplier must be > 0"),
    ({"noise_multiplier": -1.0}, "noise_multiplier must be > 0"),
    ({"clip": 0}, "clip must be > 0"),
    ({"clip": float("inf")}, "clip must be a finite number"),
    ({"delta": 0}, r"delta must be in \(0, 1\)"),
    ({"delta": 1.0}, r"delta must be in \(0, 1\)"),
    ({"seed": -1}, "seed must be an integer"),
    ({"seed": 1.5}, "seed must be an integer"),
    ({"cohort": 0}, "cohort must be an integer >= 1"),
    ({"epsilon": 1.0}, "unexpected keyword"),
])
def test_bad_arguments_are_one_line_strategy_errors(kwargs, match):
    with pytest.raises(StrategyError, match=match) as err:
        load_strategy("dp-mean", **kwargs)
    assert "\n" not in str(err.value)


def test_divides_by_the_configured_cohort_not_by_the_replies_that_came():
    """DP-FedAvg's fixed denominator: two of a cohort of four answered (the others crashed), so
    the sum is divided by 4; the count of replies never enters the released value."""
    s = load_strategy("dp-mean", clip=10.0, noise_multiplier=1e-12)
    with pytest.raises(ValueError, match="needs the cohort size"):
        s.aggregate(1, _replies(ROWS[:2]))
    s.configure(clients_per_round=4)
    got = s.aggregate(1, _replies(ROWS[:2]))
    np.testing.assert_allclose(got, np.array([3.0 + 6.0, 4.0 + 8.0, 0.0]) / 4, atol=1e-9)
    assert s.summary()["cohort"] == 4
    explicit = load_strategy("dp-mean", cohort=2)
    explicit.configure(clients_per_round=4)  # an explicit argument wins
    assert explicit.cohort == 2
