"""The update log: the whole trained state as (seed, scalar) entries.

theta_t is a pure function of theta_0 (zeros) and the log: entry (seed, grad) taken with step
size `lr` and `q` queries per step applies  theta <- theta - (lr / q) * grad * z_seed.
Anyone holding the log rebuilds theta bit for bit: `apply_update` regenerates each z from its
seed, and float additions happen in log order. The log only grows, so whoever holds theta at some
position catches up by replaying the entries after it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from prge.estimator import apply_update


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
