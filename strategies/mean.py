"""Example-weighted mean of the scalars, seed by seed (FedAvg's rule applied to scalars)."""

from __future__ import annotations

import numpy as np

from strategies.base import ScalarReply, ScalarStrategy, stack


class WeightedMean(ScalarStrategy):
    name = "mean"
    state_keys = ()

    def aggregate(self, server_round: int, replies: list[ScalarReply]) -> np.ndarray:
        grads, weights = stack(replies)
        return weights @ grads / weights.sum()  # (K*q,)
