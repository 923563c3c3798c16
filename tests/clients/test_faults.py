"""Fault and adversary draws: deterministic from the run seed, at the configured rates."""

import numpy as np

from clients.faults import LIED_EXAMPLES, adversaries, claimed_examples, corrupt, draw_faults
from clients.runconfig import load_config


def _cfg(*sets):
    return load_config(None, list(sets))


def test_fault_draws_are_seeded_and_match_their_rates():
    cfg = _cfg("dropout-prob=0.1", "crash-prob=0.3", "straggle-prob=0.5")
    draws = [draw_faults(cfg, r, p) for r in range(1, 101) for p in range(20)]
    assert draws == [draw_faults(cfg, r, p) for r in range(1, 101) for p in range(20)]
    for attr, rate in (("dropout", 0.1), ("crash", 0.3), ("straggle", 0.5)):
        observed = np.mean([getattr(d, attr) for d in draws])
        assert abs(observed - rate) < 0.04, (attr, observed)
    other = _cfg("seed=1", "dropout-prob=0.1", "crash-prob=0.3", "straggle-prob=0.5")
    assert draws != [draw_faults(other, r, p) for r in range(1, 101) for p in range(20)]
    assert not any(draw_faults(_cfg(), r, 0).crash for r in range(1, 200))  # off by default


def test_adversaries_are_a_fixed_seeded_fraction():
    cfg = _cfg("num-clients=20", "byzantine-fraction=0.2")
    bad = adversaries(cfg)
    assert len(bad) == 4 and bad <= set(range(20))
    assert adversaries(_cfg("num-clients=20", "byzantine-fraction=0.2")) == bad
    assert adversaries(_cfg("num-clients=20", "byzantine-fraction=0.2", "seed=3")) != bad
    assert adversaries(_cfg("num-clients=20")) == frozenset()


def test_attacks():
    honest = np.array([1.0, -2.0, 0.5])
    scaled = corrupt(honest, _cfg("byzantine-attack=scale", "byzantine-scale=100"), 1, 0)
    np.testing.assert_array_equal(scaled, [100.0, -200.0, 50.0])
    flipped = corrupt(honest, _cfg("byzantine-attack=sign-flip", "byzantine-scale=1"), 1, 0)
    np.testing.assert_array_equal(flipped, -honest)
    cfg = _cfg("byzantine-attack=random", "byzantine-scale=10")
    big = np.ones(20000)
    noise = corrupt(big, cfg, 2, 5)
    np.testing.assert_array_equal(noise, corrupt(big, cfg, 2, 5))  # seeded
    assert abs(noise.std() - 10.0) < 0.3 and abs(noise.mean()) < 0.3


def test_examples_lie_claims_a_huge_count_for_flipped_values():
    cfg = _cfg("num-clients=10", "byzantine-fraction=0.3", "byzantine-attack=examples-lie")
    bad = adversaries(cfg)
    assert [claimed_examples(cfg, p, 40) for p in range(10)] == \
        [LIED_EXAMPLES if p in bad else 40 for p in range(10)]
    np.testing.assert_array_equal(corrupt(np.array([1.0, -2.0]), cfg, 1, 0), [-1.0, 2.0])
    honest = _cfg("num-clients=10", "byzantine-fraction=0.3", "byzantine-attack=scale")
    assert all(claimed_examples(honest, p, 40) == 40 for p in range(10))  # other attacks: truth
