"""The update log: the whole trained state as (seed, scalar) entries.

theta_t is a pure function of theta_0 (zeros) and the log: entry (seed, grad) taken with step
size `lr` and `q` queries per step applies  theta <- theta - (lr / q) * grad * z_seed.
Anyone holding the log rebuilds theta bit for bit: `apply_update` regenerates each z from its
seed, and float additions happen in log order.

`ThetaCache` keeps the latest rebuilt theta of a process so that a replay only pays for the
entries it has not applied yet (the log only grows).
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


def log_digest(entries: Sequence[LogEntry], previous: str = "") -> str:
    """Chained digest of log entries: equal digests mean equal histories."""
    h = hashlib.sha256(previous.encode())
    for e in entries:
        h.update(repr(e.to_row()).encode())
    return h.hexdigest()[:16]


class ThetaCache:
    """The most recent (log length, history digest, theta) this process rebuilt."""

    def __init__(self, dim: int, dtype: torch.dtype = torch.float32):
        self.dim, self.dtype = dim, dtype
        self._reset()
        self.replayed = 0  # entries applied by this cache: shows that replay cost stays bounded

    def _reset(self) -> None:
        self.length, self.digest = 0, log_digest([])
        self.theta = torch.zeros(self.dim, dtype=self.dtype)

    def rebuild(self, log: Sequence[LogEntry]) -> torch.Tensor:
        """theta for the full `log`; reuses the cached prefix when it is a prefix of `log`."""
        if len(log) < self.length or log_digest(log[: self.length]) != self.digest:
            self._reset()  # another history (another run): start over from theta_0
        tail = log[self.length:]
        replay(self.theta, tail)
        self.replayed += len(tail)
        self.length, self.digest = len(log), log_digest(log)
        return self.theta.clone()
