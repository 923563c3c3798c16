"""The round deadline: derived from the work of the rounds so far unless a number is given."""

from clients.runconfig import load_config
from simulation.deadline import FACTOR, FIRST_S, MIN_S, Deadlines


def test_auto_is_the_default_and_follows_the_slowest_complete_round():
    d = Deadlines(load_config().round_deadline_s)
    assert d.round() == FIRST_S  # nothing measured yet: loading models and programs
    d.observe(2.0, complete=True)
    assert d.round() == MIN_S  # 10 x 2 s is under the floor
    d.observe(30.0, complete=True)
    d.observe(5.0, complete=True)
    assert d.round() == FACTOR * 30.0
    d.observe(10_000.0, complete=False)  # cut by its deadline: not a measure of the work
    assert d.round() == FACTOR * 30.0


def test_personalization_waits_for_as_many_rounds_of_work_as_it_has_clients():
    d = Deadlines("auto")
    d.observe(30.0, complete=True)
    # 20 clients at 4 per round, 10 personal steps against 2 local ones: 5 x 5 rounds of work
    assert d.personalization(20, 4, 10, 2) == FACTOR * 30.0 * 25
    assert Deadlines("auto").personalization(20, 4, 10, 2) == FIRST_S


def test_a_number_fixes_the_deadline_and_zero_waits_forever():
    assert Deadlines(5.0).round() == 5.0
    assert Deadlines(0.0).round() is None
    assert Deadlines(0.0).personalization(20, 4, 10, 2) is None
    assert Deadlines(5.0).personalization(20, 4, 10, 2) == FIRST_S
