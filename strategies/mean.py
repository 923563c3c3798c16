"""Example-weighted mean of the scalars, seed by seed (FedAvg's rule applied to scalars)."""

from __future__ import annotations

import numpy as np

from strategies.base import ScalarReply, ScalarStrategy, as_float, stack


class WeightedMean(ScalarStrategy):
    """The example-weighted mean of the replies, seed by seed, times `server_lr`.

    Args:
        server_lr: the server's step size relative to the clients' (FedOpt's server learning
            rate): the log's entry for a seed moves theta `server_lr` times as far as the mean
            client did along it, > 0. A mean over several clients is a less noisy estimate than
            one client's, so it can afford a longer step.
    """

    name = "mean"
    state_keys = ()

    def __init__(self, server_lr: float = 1.0):
        self.server_lr = as_float("server_lr", server_lr)
        if not self.server_lr > 0:
            raise ValueError(f"server_lr must be > 0, got {server_lr}")

    def aggregate(self, server_round: int, replies: list[ScalarReply]) -> np.ndarray:
        grads, weights = stack(replies)
        # (K*q,); times 1.0 is exact, so the default leaves every run's log bit for bit as it was
        return self.server_lr * (weights @ grads / weights.sum())
