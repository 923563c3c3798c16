"""The update log: the whole trained state as (seed, scalar) entries.

theta_t is a pure function of theta_0 (zeros) and the log: entry (seed, grad) taken with step
size `lr` and `q` queries per step applies  theta <- theta - (lr / q) * grad * z_seed.
Anyone holding the log rebuilds theta bit for bit: `apply_update` regenerates each z from its
seed, and float additions happen in log order. The log only grows, so whoever holds theta at some
position catches up by replaying the entries after it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from prge.estimator import apply_update
from prge.perturb import SEED_BITS


@dataclass(frozen=True)
class LogEntry:
    seed: int
    grad: float  # aggregated projected gradient
    lr: float  # step size in force
    q: int  # queries per step (the update divides by q)

    def to_row(self) -> list:
        return [self.seed, self.grad, self.lr, self.q]

    @classmethod
    def from_row(cls, row: Sequence) -> LogEntry:
        seed, grad, lr, q = row
        return cls(int(seed), float(grad), float(lr), int(q))


ROW_FIELDS = ("round", "seed", "grad", "lr", "q")  # one update_log.jsonl row


def entries_from_rows(rows: Iterable[Any]) -> list[LogEntry]:
    """The log from update_log.jsonl rows (dicts with ROW_FIELDS), checked as untrusted data: a
    row that does not fit would break every later replay (q=0 divides by zero, a NaN grad spreads
    into theta), so it is a one-sentence ValueError naming its line (1-based) and field."""
    return [_entry_from_row(line, row) for line, row in enumerate(rows, start=1)]


def _entry_from_row(line: int, row: Any) -> LogEntry:
    if not isinstance(row, dict):
        raise ValueError(f"update log line {line} is not a JSON object")
    missing = [key for key in ROW_FIELDS if key not in row]
    if missing:
        raise ValueError(f"update log line {line} has no {missing[0]!r}")
    _check_int(line, "round", row["round"], 1, None)
    _check_int(line, "seed", row["seed"], 0, 2**SEED_BITS)  # derive_seed's range
    _check_int(line, "q", row["q"], 1, None)
    return LogEntry(row["seed"], _finite(line, "grad", row["grad"]),
                    _finite(line, "lr", row["lr"]), row["q"])


def _check_int(line: int, key: str, value: Any, low: int, high: int | None) -> None:
    """Require an int in [low, high) (no upper bound for None); a bool is not an int here."""
    if (isinstance(value, bool) or not isinstance(value, int) or value < low
            or (high is not None and value >= high)):
        bound = f">= {low}" if high is None else f"in [{low}, {high})"
        raise ValueError(f"update log line {line}: {key!r} must be an integer {bound}, "
                         f"got {_short(value)}")


def _finite(line: int, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not _is_finite(value):
        raise ValueError(f"update log line {line}: {key!r} must be a finite number, "
                         f"got {_short(value)}")
    return float(value)


def _is_finite(value: int | float) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int beyond float's range
        return False


def _short(value: Any) -> str:
    """repr(value), cut so that an error stays one readable line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def replay(theta: torch.Tensor, entries: Sequence[LogEntry]) -> torch.Tensor:
    """Apply `entries` to theta in place, in order."""
    for e in entries:
        apply_update(theta, [e.seed], [e.grad], lr=e.lr / e.q)
    return theta


def theta_hash(theta: torch.Tensor) -> str:
    """A short, exact fingerprint of theta (its bytes), to check that replays agree."""
    data = theta.detach().contiguous().cpu().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def state_hash(theta: torch.Tensor, model: str) -> str:
    """What a reply's `theta-hash` carries: theta's bytes under the model they adapt (`model`,
    `prge.scorer.model_fingerprint`: base weights and frozen A), so a client that rebuilt the
    right theta on another base model or another A still fails the server's check."""
    h = hashlib.sha256(model.encode())
    h.update(theta.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]
