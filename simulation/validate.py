"""Validation of one client reply before aggregation: a pure function of the reply's record.

A reply that fails any check is rejected with a short reason (counted per round in metrics.jsonl)
and never reaches the strategy, so the update log and theta stay exactly what the valid replies
make them. The checks, in order: decodable with the right keys and types (`malformed`), the right
size (`wrong-length`), this round (`wrong-round`), finite (`non-finite`), no value beyond
`max_abs` (`too-large`: a bound on absurd magnitudes, far above honest scalars), at least one
training example (`no-examples`) and no more than the client's partition holds
(`too-many-examples`: the count weights a mean, so a lie would steer it), and built on the
server's own theta (`hash-mismatch`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from clients.faults import CRASH_MESSAGE
from clients.protocol import (
    ProtocolError,
    WrongLengthError,
    decode_dense_res,
    decode_train_res,
)

# How Ray names a client process that died while it held the message.
_ACTOR_DEATHS = ("ActorDiedError", "RayActorError", "ActorUnavailableError")


def error_reason(text: str) -> str:
    """The per-round reason for an error reply: a simulated device crash (`crash`), a client
    process that died while it held the message (`actor-lost`), or anything the client raised."""
    if CRASH_MESSAGE in text:
        return "crash"
    if any(name in text for name in _ACTOR_DEATHS):
        return "actor-lost"
    return "client-error"


def validate_reply(record: Any, *, server_round: int, expected_hash: str, dense: bool, size: int,
                   max_abs: float, max_examples: int | None = None, bits: int = 32,
                   ) -> tuple[tuple[np.ndarray, int, float] | None, str | None]:
    """((values (size,) float64, num_examples, train_loss), None) if valid, else (None, reason).
    `size` is K*q scalars for P-RGE, the adapter dimension for the dense methods;
    `max_examples` the training examples the simulator gave this client (None: not checked).
    Never raises."""
    try:
        if dense:
            res = decode_dense_res(record, size)
        else:
            res = decode_train_res(record, size, bits)
    except WrongLengthError:
        return None, "wrong-length"
    except (ProtocolError, KeyError, TypeError, ValueError, AttributeError):
        return None, "malformed"
    values = res.delta.double().numpy() if dense else np.asarray(res.grads, dtype=np.float64)
    if len(values) != size:
        return None, "wrong-length"
    if res.server_round != server_round:
        return None, "wrong-round"
    if not np.isfinite(values).all() or not math.isfinite(res.train_loss):
        return None, "non-finite"
    if values.size and np.abs(values).max() > max_abs:
        return None, "too-large"
    if res.num_examples < 1:
        return None, "no-examples"
    if max_examples is not None and res.num_examples > max_examples:
        return None, "too-many-examples"
    if res.theta_hash != expected_hash:
        return None, "hash-mismatch"
    return (values, res.num_examples, res.train_loss), None


def validate_eval_reply(record: Any) -> dict | None:
    """A personalization reply's scores as clients.json holds them, or None when it is malformed
    (a wrong type, a count below 0, an accuracy outside [0, 1]). Never raises."""
    try:
        n = record["num-test"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            return None
        out: dict = {"num_test": n}
        if "global-acc" not in record and "personal-acc" not in record:
            return out
        for key in ("global-acc", "personal-acc"):
            x = record[key]
            if isinstance(x, bool) or not isinstance(x, int | float) or not 0 <= x <= 1:
                return None
            out[key.replace("-", "_")] = float(x)
        return out
    except (KeyError, TypeError, AttributeError):
        return None
