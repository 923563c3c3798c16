"""Aggregation over scalar replies: the one thing a strategy decides.

Every round, each sampled client returns K*q projected gradients computed with the round's shared
seeds (the same seeds for every client). A strategy turns the valid replies into one aggregated
scalar per seed; the server appends (seed, scalar) to the update log and every client replays it.

To write your own, subclass `ScalarStrategy` and implement `aggregate`; keep any state across rounds
on `self` (one instance lives for the whole run) and report it from `summary`. Load it with
`--set strategy=package.module:ClassName`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ScalarReply:
    """One client's valid reply (already checked by the server: finite, right length, right round)."""

    partition_id: int
    grads: np.ndarray  # (K*q,) float64, step-major: grads[k*q + i] belongs to seed k*q + i
    num_examples: int
    train_loss: float


class ScalarStrategy:
    """Base class: `aggregate` gets >= 1 valid replies and returns (K*q,) finite float64 scalars."""

    name = "base"

    def aggregate(self, server_round: int, replies: list[ScalarReply]) -> np.ndarray:
        raise NotImplementedError

    def summary(self) -> dict[str, Any]:
        """Run-level figures to record (e.g. a privacy budget); empty by default."""
        return {}


def stack(replies: list[ScalarReply]) -> tuple[np.ndarray, np.ndarray]:
    """(clients, K*q) scalars and (clients,) example counts."""
    grads = np.stack([r.grads for r in replies]).astype(np.float64)
    weights = np.array([r.num_examples for r in replies], dtype=np.float64)
    return grads, weights
