"""The round deadline: derived from the work of the rounds so far unless a number is given."""

from clients.runconfig import load_config
from simulation.deadline import Deadlines


def test_auto_is_the_default_and_follows_the_slowest_complete_round():
    cfg = load_config()
    d = Deadlines.of(cfg)
    assert d.round() == cfg.round_deadline_first_s  # nothing measured yet: models, programs
    d.observe(2.0, complete=True)
    assert d.round() == cfg.round_deadline_min_s  # 10 x 2 s is under the floor
    d.observe(30.0, complete=True)
    d.observe(5.0, complete=True)
    assert d.round() == cfg.round_deadline_factor * 30.0
    d.observe(10_000.0, complete=False)  # cut by its deadline: not a measure of the work
    assert d.round() == cfg.round_deadline_factor * 30.0


def test_the_auto_rule_is_set_by_its_config_keys():
    cfg = load_config(None, ["round-deadline-factor=2", "round-deadline-min-s=1",
                             "round-deadline-first-s=30"])
    d = Deadlines.of(cfg)
    assert d.round() == 30.0
    d.observe(3.0, complete=True)
    assert d.round() == 6.0


def test_personalization_waits_a_cohorts_rounds_of_work_per_cohort():
    d = Deadlines("auto")
    d.observe(300.0, complete=True)
    # 10 personal steps against 2 local ones: 5 rounds of work per cohort
    assert d.personalization(10, 2) == 10.0 * 300.0 * 5
    assert Deadlines("auto").personalization(10, 2) == 900.0  # nothing measured: start-up


def test_a_number_fixes_the_deadline_and_zero_waits_forever():
    assert Deadlines(5.0).round() == 5.0
    assert Deadlines(0.0).round() is None
    assert Deadlines(0.0).personalization(10, 2) is None
    # a fixed deadline holds for personalization too (it was at least 900 s whatever was set)
    assert Deadlines(5.0).personalization(10, 2) == 5.0
