"""The reply validator: arbitrary input never raises, and only sound replies get through to the
strategy, so the aggregate equals what the valid replies alone give."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.protocol import (
    DenseRes,
    TrainRes,
    decode_scalars,
    encode_dense_res,
    encode_scalars,
    encode_train_res,
    quantize,
)
from simulation.validate import error_reason, validate_reply
from strategies import ScalarReply
from strategies.loader import BUILT_IN, load_strategy

SIZE, ROUND, HASH, MAX_ABS, MAX_N = 6, 3, "abc123", 1e6, 1000
KEYS = ["server-round", "grads", "num-examples", "train-loss", "theta-hash", "delta"]
anything = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5),
                     st.binary(max_size=40), st.lists(st.floats(), max_size=8))


def _check(record, dense=False):
    return validate_reply(record, server_round=ROUND, expected_hash=HASH, dense=dense,
                          size=SIZE, max_abs=MAX_ABS, max_examples=MAX_N)


@settings(max_examples=300, deadline=None)
@given(st.one_of(anything, st.dictionaries(st.sampled_from(KEYS), anything)), st.booleans())
def test_arbitrary_records_never_raise_and_never_pass_unsound_values(record, dense):
    ok, reason = _check(record, dense)
    assert (ok is None) != (reason is None)
    if ok is not None:
        values, n, loss = ok
        assert values.shape == (SIZE,) and np.isfinite(values).all()
        assert np.abs(values).max() <= MAX_ABS and 1 <= n <= MAX_N and np.isfinite(loss)


def _valid(values, n):
    return encode_train_res(TrainRes(ROUND, list(values), n, 0.5, HASH), 32)


def _grads(record, change):
    """The record with its packed grads decoded, changed by `change`, and packed again."""
    values = decode_scalars(record["grads"], 32, SIZE)
    return {**record, "grads": encode_scalars(change(values), 32)}


CORRUPTIONS = {
    "non-finite": lambda r: _grads(r, lambda v: np.r_[np.nan, v[1:]]),
    "too-large": lambda r: _grads(r, lambda v: np.r_[1e9, v[1:]]),
    "wrong-length": lambda r: {**r, "grads": r["grads"][:-4]},
    "wrong-round": lambda r: {**r, "server-round": ROUND + 1},
    "hash-mismatch": lambda r: {**r, "theta-hash": "other"},
    "no-examples": lambda r: {**r, "num-examples": 0},
    "too-many-examples": lambda r: {**r, "num-examples": MAX_N + 1},
    "malformed": lambda r: {k: v for k, v in r.items() if k != "train-loss"},
}

finite = st.floats(-1e5, 1e5, allow_nan=False)
reply_values = st.lists(finite, min_size=SIZE, max_size=SIZE)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(reply_values, st.integers(1, 1000)), min_size=1, max_size=8),
       st.lists(st.tuples(reply_values, st.integers(1, 1000), st.sampled_from(sorted(CORRUPTIONS))),
                max_size=8),
       st.randoms(use_true_random=False))
def test_bad_replies_never_change_the_aggregate(good, bad, rnd):
    records = [(_valid(v, n), None) for v, n in good]
    records += [(CORRUPTIONS[kind](_valid(v, n)), kind) for v, n, kind in bad]
    rnd.shuffle(records)
    accepted = []
    for i, (record, kind) in enumerate(records):
        ok, reason = _check(record)
        assert reason == kind  # each corruption is caught, and named
        if ok is not None:
            accepted.append(ScalarReply(i, *ok))
    alone = [ScalarReply(i, quantize(v, 32), n, 0.5)  # what the wire carries of them
             for i, (v, n) in enumerate(good)]
    for name in BUILT_IN:
        with_bad, clean = load_strategy(name), load_strategy(name)
        for s in (with_bad, clean):
            s.configure(clients_per_round=len(good))
        with_bad = with_bad.aggregate(ROUND, sorted(accepted, key=_key))
        clean = clean.aggregate(ROUND, sorted(alone, key=_key))
        assert np.isfinite(with_bad).all()
        np.testing.assert_allclose(with_bad, clean, rtol=1e-12, atol=1e-9)


def _key(reply):  # the same order for both lists, whatever the shuffle did
    return (tuple(reply.grads), reply.num_examples)


def test_dense_reply_of_another_adapter_size_is_wrong_length():
    rec = encode_dense_res(DenseRes(ROUND, torch.ones(SIZE + 1), 3, 0.1, HASH))
    assert _check(rec, dense=True) == (None, "wrong-length")
    rec = encode_dense_res(DenseRes(ROUND, torch.ones(SIZE), 3, 0.1, HASH))
    ok, reason = _check(rec, dense=True)
    assert reason is None and np.array_equal(ok[0], np.ones(SIZE))


def _flower_error_reason(ex: Exception) -> str:
    """The reason text Flower's simulation engine puts in an error reply for `ex`."""
    return str(type(ex)) + ":<'" + str(ex) + "'>"


def test_error_replies_are_named_by_their_cause():
    from flwr.clientapp.client_app import ClientAppException
    from ray.exceptions import ActorDiedError

    from clients.faults import CRASH_MESSAGE

    assert error_reason(_flower_error_reason(ActorDiedError())) == "actor-lost"
    assert error_reason(_flower_error_reason(ClientAppException(CRASH_MESSAGE))) == "crash"
    assert error_reason(_flower_error_reason(ClientAppException("ValueError: bad"))) == \
        "client-error"


EVAL_KEYS = ["num-test", "global-acc", "personal-acc"]


@settings(max_examples=300, deadline=None)
@given(st.one_of(anything, st.dictionaries(st.sampled_from(EVAL_KEYS), anything)))
def test_arbitrary_evaluate_replies_never_raise_and_never_pass_unsound_scores(record):
    """What personalization reads from each client: one malformed reply killed the server after
    all rounds, with no summary; now it costs that client's row only."""
    from simulation.validate import validate_eval_reply

    scores = validate_eval_reply(record)
    if scores is not None:
        assert isinstance(scores["num_test"], int) and scores["num_test"] >= 0
        for key in ("global_acc", "personal_acc"):
            assert key not in scores or 0.0 <= scores[key] <= 1.0


def test_evaluate_replies_as_clients_send_them_pass():
    from simulation.validate import validate_eval_reply

    assert validate_eval_reply({"num-test": 4, "global-acc": 0.5, "personal-acc": 1}) == {
        "num_test": 4, "global_acc": 0.5, "personal_acc": 1.0}
    assert validate_eval_reply({"num-test": 0}) == {"num_test": 0}
    assert validate_eval_reply({"num-test": 4, "global-acc": 0.5}) is None  # half a pair
    assert validate_eval_reply({"num-test": 4, "global-acc": float("nan"),
                                "personal-acc": 0.5}) is None
