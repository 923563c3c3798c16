"""The wire format between the server and an edge client: seeds and scalars only.

Server -> client, message type "train" (one ConfigRecord, "ins"):
    server-round  int
    log-start     int          index of the first log entry sent (what the client already holds)
    log-seeds     list[int]    seeds of the log entries the client has not seen
    log-grads     list[float]  their aggregated projected gradients
    log-lrs       list[float]  step size in force for each entry
    seeds         list[int]    K*q seeds for this round's local steps (step-major)
    eps, lr       float
Client -> server (one ConfigRecord, "res"):
    server-round  int
    grads         list[float]  K*q projected gradients, same order as `seeds`
    num-examples  int          training examples the client holds
    train-loss    float
    theta-hash    str          hash of the theta_t the client rebuilt from the log, under
                               its base model and frozen A (prge.update_log.state_hash)
The "evaluate" message carries the same log fields plus `personal-steps`; its reply carries
accuracies. q is part of the run config; every entry's update divides by it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from prge.update_log import LogEntry


class ProtocolError(ValueError):
    """A malformed message (one sentence, used as the rejection reason)."""


class WrongLengthError(ProtocolError):
    """A tensor field of the wrong size (a reply for another model or adapter)."""


@dataclass(frozen=True)
class TrainIns:
    server_round: int
    log_start: int
    log_tail: list[LogEntry]
    seeds: list[int]
    eps: float
    lr: float


@dataclass(frozen=True)
class TrainRes:
    server_round: int
    grads: list[float]
    num_examples: int
    train_loss: float
    theta_hash: str


def encode_log(start: int, tail: list[LogEntry]) -> dict:
    return {"log-start": start, "log-seeds": [e.seed for e in tail],
            "log-grads": [e.grad for e in tail], "log-lrs": [e.lr for e in tail]}


def decode_log(rec, q: int) -> tuple[int, list[LogEntry]]:
    seeds, grads, lrs = list(rec["log-seeds"]), list(rec["log-grads"]), list(rec["log-lrs"])
    if not len(seeds) == len(grads) == len(lrs):
        raise ProtocolError("log fields have different lengths")
    return int(rec["log-start"]), [LogEntry(int(s), float(g), float(lr), q)
                                   for s, g, lr in zip(seeds, grads, lrs, strict=True)]


def encode_train_ins(ins: TrainIns) -> dict:
    return {"server-round": ins.server_round, **encode_log(ins.log_start, ins.log_tail),
            "seeds": list(ins.seeds), "eps": float(ins.eps), "lr": float(ins.lr)}


def decode_train_ins(rec, q: int) -> TrainIns:
    start, tail = decode_log(rec, q)
    return TrainIns(int(rec["server-round"]), start, tail, [int(s) for s in rec["seeds"]],
                    float(rec["eps"]), float(rec["lr"]))


def encode_train_res(res: TrainRes) -> dict:
    return {"server-round": res.server_round, "grads": [float(g) for g in res.grads],
            "num-examples": int(res.num_examples), "train-loss": float(res.train_loss),
            "theta-hash": res.theta_hash}


RES_FIELDS = {"server-round": int, "grads": list, "num-examples": int, "train-loss": float,
              "theta-hash": str}


def _check_fields(rec, fields: dict) -> None:
    """Missing keys and wrong types are protocol errors (values are checked by the server)."""
    for key, typ in fields.items():
        if typ is None:  # a field this kind of reply does not carry
            continue
        if key not in rec:
            raise ProtocolError(f"reply lacks {key!r}")
        value = rec[key]
        ok = isinstance(value, typ) and not isinstance(value, bool)
        if typ is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok:
            raise ProtocolError(f"reply field {key!r} has type {type(value).__name__}")


def decode_train_res(rec) -> TrainRes:
    """Parse a reply, rejecting missing keys and wrong types (values are checked by the server)."""
    _check_fields(rec, RES_FIELDS)
    grads = rec["grads"]
    if not all(isinstance(g, int | float) and not isinstance(g, bool) for g in grads):
        raise ProtocolError("reply field 'grads' holds non-numbers")
    return TrainRes(rec["server-round"], [float(g) for g in grads], rec["num-examples"],
                    float(rec["train-loss"]), rec["theta-hash"])


# -- dense baselines (method = fo | zo-dense): the adapter itself crosses the wire ----------------
# Server -> client "train": server-round, lr, eps, theta (bytes: float32 B's, D x 4 bytes).
# Client -> server "res": server-round, delta (bytes: float32, theta_local - theta), num-examples,
# train-loss, theta-hash (of the theta received, under the client's model). float32 is what a
# device would send.


def encode_tensor(t: torch.Tensor) -> bytes:
    return t.detach().to(torch.float32).contiguous().numpy().tobytes()


def decode_tensor(data: bytes, dim: int) -> torch.Tensor:
    if not isinstance(data, bytes):
        raise ProtocolError(f"tensor field has type {type(data).__name__}")
    if len(data) != 4 * dim:
        raise WrongLengthError(f"tensor field holds {len(data)} bytes, expected {4 * dim}")
    return torch.from_numpy(np.frombuffer(data, dtype=np.float32).copy())


@dataclass(frozen=True)
class DenseRes:
    server_round: int
    delta: torch.Tensor  # (D,) float32
    num_examples: int
    train_loss: float
    theta_hash: str


def encode_dense_res(res: DenseRes) -> dict:
    return {"server-round": res.server_round, "delta": encode_tensor(res.delta),
            "num-examples": int(res.num_examples), "train-loss": float(res.train_loss),
            "theta-hash": res.theta_hash}


def decode_dense_res(rec, dim: int) -> DenseRes:
    _check_fields(rec, {**RES_FIELDS, "grads": None, "delta": bytes})
    return DenseRes(rec["server-round"], decode_tensor(rec["delta"], dim), rec["num-examples"],
                    float(rec["train-loss"]), rec["theta-hash"])
