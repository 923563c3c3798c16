"""The wire format between the server and an edge client: derived seeds and packed scalars.

Both sides know the run seed, K and q (the run config), so seeds never cross the wire: entry j of
round r's block is the direction z(derive_seed(run seed, "round", r, j)), j = 0 .. K*q - 1
(`round_seeds`). The update log grows by one block of K*q entries per round whose aggregate was
applied, so the tail a client lacks is a list of blocks: their rounds, step sizes and scalars.

Scalars travel as packed bytes at `scalar-bits` (`encode_scalars`), one block at a time:
    32  float32, 4 bytes each (the default)
    16  float16, 2 bytes each
     8  one signed byte e, then int8 values v: x = v * 2**e, with e the smallest exponent such
        that max|x| / 2**e <= 127 (e >= -128) and v = round(x / 2**e) (halves to even)
A power-of-two scale makes the rule idempotent (encoding decoded values gives the same bytes), so
the server can send again what it logged. The server aggregates the decoded client scalars in
float64, rounds the aggregate by the same rule and logs exactly that: what it replays is what
every client replays.

Server -> client, message type "train" (one ConfigRecord, "ins"): how the client catches up with
the log, either a log tail
    log-start     int          index of the first log entry sent (what the client already holds)
    log-rounds    list[int]    the round of each block of the tail (K*q entries each)
    log-lrs       list[float]  the step size of each block
    log-grads     bytes        the tail's aggregated scalars, block after block, packed
or a snapshot of the global adapter (run config `catch-up`: log, snapshot, or auto = whichever
message is smaller for this client)
    snapshot-at   int          the log length theta_t stands for
    snapshot      bytes        theta_t, D little-endian float32 (theta's own dtype, so the
                               client holds bit for bit the server's theta and the hash check
                               stays exact; float16 would change theta, so it is not offered)
then
    server-round  int
    eps, lr       float        this round's perturbation size and step size
Client -> server (one ConfigRecord, "res"):
    server-round  int
    grads         bytes        K*q projected gradients, step-major, packed
    num-examples  int          training examples the client holds
    train-loss    float
    theta-hash    str          hash of the theta_t the client rebuilt from the log, under its
                               base model and frozen A (prge.update_log.state_hash)
The "evaluate" message carries the same log fields plus `personal-steps`; its reply carries
accuracies. q is part of the run config; every entry's update divides by it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch

from prge.perturb import derive_seed
from prge.update_log import LogEntry

SCALAR_BITS = (32, 16, 8)
CATCH_UP = ("auto", "log", "snapshot")


class ProtocolError(ValueError):
    """A malformed message (one sentence, used as the rejection reason)."""


class WrongLengthError(ProtocolError):
    """A tensor field of the wrong size (a reply for another model or adapter)."""


def round_seeds(run_seed: int, server_round: int, n: int) -> list[int]:
    """The K*q seeds of a round's block, step-major: what both sides derive, never send."""
    return [derive_seed(run_seed, "round", server_round, j) for j in range(n)]


# -- packed scalars -------------------------------------------------------------------------------


def packed_size(n: int, bits: int) -> int:
    return {32: 4 * n, 16: 2 * n, 8: 1 + n}[bits]


def _exponent(m: float) -> int:
    """The smallest e in [-128, 127] with m / 2**e <= 127 (m = max |x| >= 0, finite)."""
    if m == 0:
        return -128
    e = min(127, max(-128, math.ceil(math.log2(m) - math.log2(127))))
    while e < 127 and m / 2.0**e > 127:  # log2 rounding
        e += 1
    while e > -128 and m / 2.0 ** (e - 1) <= 127:
        e -= 1
    return e


def encode_scalars(values, bits: int) -> bytes:
    """One block of scalars as packed bytes (see the module docstring for the rules)."""
    x = np.asarray(values, dtype=np.float64)
    if bits == 32:
        return x.astype("<f4").tobytes()
    if bits == 16:
        return x.astype("<f2").tobytes()
    if not np.isfinite(x).all():  # an int8 block has no code for inf or NaN
        raise ProtocolError("scalars to pack as int8 are not finite")
    e = _exponent(float(np.abs(x).max()) if x.size else 0.0)
    v = np.clip(np.rint(x / 2.0**e), -127, 127).astype(np.int8)
    return np.int8(e).tobytes() + v.tobytes()


def decode_scalars(data, bits: int, n: int) -> np.ndarray:
    """(n,) float64 from one packed block; a wrong type or size is a ProtocolError."""
    if not isinstance(data, bytes):
        raise ProtocolError(f"scalar field has type {type(data).__name__}")
    if len(data) != packed_size(n, bits):
        raise WrongLengthError(f"scalar field holds {len(data)} bytes, expected "
                               f"{packed_size(n, bits)}")
    if bits == 32:
        return np.frombuffer(data, dtype="<f4").astype(np.float64)
    if bits == 16:
        return np.frombuffer(data, dtype="<f2").astype(np.float64)
    e = int(np.frombuffer(data[:1], dtype=np.int8)[0])
    return np.frombuffer(data[1:], dtype=np.int8).astype(np.float64) * 2.0**e


def quantize(values, bits: int) -> np.ndarray:
    """What `values` become on the wire: the values the server logs and clients replay."""
    x = np.asarray(values, dtype=np.float64)
    return decode_scalars(encode_scalars(x, bits), bits, x.size)


# -- messages -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CatchUp:
    """What a client needs to reach the server's theta_t: the log from `start` (`tail`), or, when
    `snapshot` is set, theta_t itself (float32 bytes) standing for a log of `start` entries."""

    start: int
    tail: list[LogEntry]
    snapshot: bytes | None = None


@dataclass(frozen=True)
class TrainIns:
    server_round: int
    catch_up: CatchUp
    seeds: list[int]  # this round's, derived by the client
    eps: float
    lr: float


@dataclass(frozen=True)
class TrainRes:
    server_round: int
    grads: list[float]
    num_examples: int
    train_loss: float
    theta_hash: str


@dataclass(frozen=True)
class Wire:
    """What both sides know from the run config: how to read a log tail and a reply."""

    run_seed: int
    block: int  # K*q entries per round
    q: int
    bits: int = 32

    @classmethod
    def of(cls, cfg) -> Wire:
        """From a run config (its seed, local-steps, q and scalar-bits keys)."""
        return cls(cfg.seed, cfg.local_steps * cfg.q, cfg.q, cfg.scalar_bits)


def encode_log(start: int, tail: list[LogEntry], rounds: list[int], wire: Wire) -> dict:
    """The tail from `start` (whole blocks), with the round of each block."""
    blocks = [tail[i:i + wire.block] for i in range(0, len(tail), wire.block)]
    if len(blocks) != len(rounds) or any(len(b) != wire.block for b in blocks):
        raise ValueError(f"a log tail of {len(tail)} entries is not {len(rounds)} blocks")
    return {"log-start": start, "log-rounds": list(rounds),
            "log-lrs": [float(b[0].lr) for b in blocks],
            "log-grads": b"".join(encode_scalars([e.grad for e in b], wire.bits) for b in blocks)}


def encode_snapshot(length: int, theta: torch.Tensor) -> dict:
    """theta_t as the catch-up: it stands for the first `length` log entries."""
    return {"snapshot-at": int(length), "snapshot": encode_tensor(theta)}


def decode_log(rec, wire: Wire) -> CatchUp:
    """The catch-up a message carries: a snapshot or a log tail (checked, not yet applied)."""
    if "snapshot" in rec:
        if not isinstance(rec["snapshot"], bytes):
            raise ProtocolError(f"snapshot has type {type(rec['snapshot']).__name__}")
        return CatchUp(int(rec["snapshot-at"]), [], rec["snapshot"])
    rounds, lrs, data = list(rec["log-rounds"]), list(rec["log-lrs"]), rec["log-grads"]
    if len(rounds) != len(lrs):
        raise ProtocolError("log fields have different lengths")
    if not isinstance(data, bytes):
        raise ProtocolError(f"log-grads has type {type(data).__name__}")
    size = packed_size(wire.block, wire.bits)
    if len(data) != size * len(rounds):
        raise ProtocolError(f"log-grads holds {len(data)} bytes for {len(rounds)} blocks")
    tail = []
    for i, (r, lr) in enumerate(zip(rounds, lrs, strict=True)):
        grads = decode_scalars(data[i * size:(i + 1) * size], wire.bits, wire.block)
        tail += [LogEntry(s, float(g), float(lr), wire.q)
                 for s, g in zip(round_seeds(wire.run_seed, int(r), wire.block), grads, strict=True)]
    return CatchUp(int(rec["log-start"]), tail)


def encode_train_ins(server_round: int, catch_up: dict, eps: float, lr: float) -> dict:
    """A train message: `catch_up` is encode_log's or encode_snapshot's record."""
    return {"server-round": server_round, **catch_up, "eps": float(eps), "lr": float(lr)}


def decode_train_ins(rec, wire: Wire) -> TrainIns:
    server_round = int(rec["server-round"])
    return TrainIns(server_round, decode_log(rec, wire),
                    round_seeds(wire.run_seed, server_round, wire.block), float(rec["eps"]),
                    float(rec["lr"]))


def encode_train_res(res: TrainRes, bits: int) -> dict:
    return {"server-round": res.server_round, "grads": encode_scalars(res.grads, bits),
            "num-examples": int(res.num_examples), "train-loss": float(res.train_loss),
            "theta-hash": res.theta_hash}


RES_FIELDS = {"server-round": int, "grads": bytes, "num-examples": int, "train-loss": float,
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


def decode_train_res(rec, size: int, bits: int) -> TrainRes:
    """Parse a reply of `size` packed scalars, rejecting missing keys, wrong types and a wrong
    byte count (values are checked by the server)."""
    _check_fields(rec, RES_FIELDS)
    grads = decode_scalars(rec["grads"], bits, size)
    return TrainRes(rec["server-round"], grads.tolist(), rec["num-examples"],
                    float(rec["train-loss"]), rec["theta-hash"])
# -- what a device holds -------------------------------------------------------------------------
# A device that fails while it handles a message answers with an error whose reason ends with the
# log position it holds now (its cursor): the server then knows exactly where its next tail starts,
# however far the message got before the failure. A "query" message asking `cursor` gets the same
# number as a reply field (`cursor`; -1 when the device cannot say).

_CURSOR_NOTE = re.compile(r" \[device holds (\d+) log entries\]$")


def with_cursor(reason: str, cursor: int | None) -> str:
    """An error reason that tells the server what the device holds (None: it cannot say)."""
    return reason if cursor is None else f"{reason} [device holds {int(cursor)} log entries]"


def split_cursor(reason: str) -> tuple[str, int | None]:
    """(the reason without the note, the cursor it reports or None)."""
    m = _CURSOR_NOTE.search(reason)
    if m is None:
        return reason, None
    return reason[:m.start()], int(m.group(1))


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
