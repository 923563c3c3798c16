"""A strategy's state read back from a checkpoint: JSON from disk, so `load_state_dict` refuses
unknown keys and values of another JSON type with one ValueError sentence, and then changes
nothing; a refused value must never reach `aggregate` and break every later round."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.majority_vote import MajorityVote
from strategies.base import ScalarReply, ScalarStrategy
from strategies.loader import BUILT_IN, load_strategy

FUZZ = settings(max_examples=200, deadline=None)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=4), inner, max_size=4), max_leaves=8)


class Stateful(ScalarStrategy):
    """One state attribute of each JSON type a strategy may keep."""

    state_keys = ("count", "budget", "history", "per_client", "note", "momentum", "frozen")

    def __init__(self):
        self.count, self.budget, self.history, self.per_client = 0, 1.5, [], {}
        self.note, self.momentum, self.frozen = "start", None, False

    def aggregate(self, server_round, replies):
        out = np.mean([r.grads for r in replies], axis=0)
        self.count += 1
        self.budget -= 0.25
        self.history.append(float(out[0]))
        self.per_client.update({str(r.partition_id): r.num_examples for r in replies})
        self.note, self.momentum, self.frozen = f"round {server_round}", out.tolist(), True
        return out


def _replies():
    return [ScalarReply(i, np.full(4, 0.5 * (i + 1)), 10, 0.0) for i in range(3)]


# classes, not instances: each example starts from a fresh strategy
CLASSES = [BUILT_IN[name] for name in sorted(BUILT_IN)] + [MajorityVote, Stateful]


def test_a_string_where_a_number_was_is_refused_and_changes_nothing():
    dp = load_strategy("dp-mean", cohort=3)
    with pytest.raises(ValueError, match="'rounds'"):
        dp.load_state_dict({"rounds": "5"})
    assert dp.state_dict() == {"rounds": 0}
    dp.aggregate(1, _replies())  # still a number: the next round and the budget still work
    assert dp.summary()["rounds"] == 1


@pytest.mark.parametrize("state", [
    {"clipped": 5, "replies": "9"},  # the good key first: all or nothing
    {"clipped": 5, "replies": True},  # a bool is not a count
    {"clipped": 5, "replies": 9.0},  # a float where an int was
    {"clipped": 5, "replies": None},
    {"clipped": 5, "replies": [9]},
    {"clipped": 5, "clip": 0.0},  # not state: an argument of the run
])
def test_a_refused_state_sets_no_attribute(state):
    clipped = load_strategy("clipped-mean")
    with pytest.raises(ValueError) as err:
        clipped.load_state_dict(state)
    assert "\n" not in str(err.value)
    assert clipped.state_dict() == {"clipped": 0, "replies": 0} and clipped.clip == 10.0


@pytest.mark.parametrize("state", [None, [["rounds", 3]], "rounds", {3: 1}])
def test_a_state_that_is_not_an_object_of_names_is_refused(state):
    with pytest.raises(ValueError):
        load_strategy("dp-mean").load_state_dict(state)


def test_a_strategy_without_state_keys_refuses_any_state():
    with pytest.raises(ValueError, match="'count'"):
        ScalarStrategy().load_state_dict({"count": 1})


def test_every_json_type_round_trips_and_an_int_where_a_float_was_becomes_a_float():
    state = {"count": 4, "budget": 2, "history": [0.5, 1], "per_client": {"3": 2.0},
             "note": "later", "momentum": [0.25], "frozen": True}
    s = Stateful()
    s.load_state_dict(json.loads(json.dumps(state)))
    assert s.state_dict() == state and isinstance(s.budget, float)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_the_real_state_of_every_strategy_round_trips_through_a_checkpoint(cls):
    strategy = cls()
    strategy.configure(clients_per_round=3)
    for server_round in (1, 2):
        strategy.aggregate(server_round, _replies())
    saved = json.loads(json.dumps(strategy.state_dict()))
    fresh = cls()
    fresh.load_state_dict(saved)
    assert fresh.state_dict() == strategy.state_dict()


@FUZZ
@given(st.sampled_from(CLASSES),
       st.one_of(JSON, st.dictionaries(st.sampled_from(Stateful.state_keys + ("clipped", "replies",
                                                                               "rounds", "ties")),
                                       JSON, max_size=4)))
def test_any_json_state_is_taken_whole_with_matching_types_or_refused_whole(cls, state):
    strategy = cls()
    before = strategy.state_dict()
    try:
        strategy.load_state_dict(state)
    except ValueError as err:
        assert "\n" not in str(err) and strategy.state_dict() == before
        return
    after = strategy.state_dict()
    for key, value in after.items():
        assert key in state or value == before[key]
        assert before[key] is None or type(value) is type(before[key])
