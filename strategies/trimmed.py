"""Coordinate-wise trimmed mean: drop the extremes of each scalar, average the rest."""

from __future__ import annotations

import math

import numpy as np

from strategies.base import ScalarReply, ScalarStrategy, as_float, stack


class TrimmedMean(ScalarStrategy):
    """Per seed, sort the clients' scalars, cut floor(trim * n) from each end, average the rest.

    Args:
        trim: fraction of the n replies cut from EACH end, per coordinate, in [0, 0.5). With
            few clients floor(trim * n) may be 0 (no trimming, a plain mean); at least one
            value is always kept. trim=0 is the unweighted mean.

    Unweighted, like the median: example counts are self-reported and would let one client
    outweigh the trimming.
    """

    name = "trimmed-mean"
    state_keys = ()

    def __init__(self, trim: float = 0.2):
        self.trim = as_float("trim", trim)
        if not 0.0 <= self.trim < 0.5:
            raise ValueError(f"trim must be in [0, 0.5), got {trim}")

    def aggregate(self, server_round: int, replies: list[ScalarReply]) -> np.ndarray:
        grads, _ = stack(replies)
        n = len(grads)
        # the 1e-9 stops float rounding from cutting one less (0.29 * 100 is 28.999...); the min
        # keeps at least one value whatever that rounding does
        cut = min(math.floor(self.trim * n + 1e-9), (n - 1) // 2)
        kept = np.sort(grads, axis=0)[cut : n - cut]
        # rounding in the sum can push the mean of equal values one ulp past them: clamp it back
        return np.clip(kept.mean(axis=0), kept[0], kept[-1])

    def summary(self) -> dict:
        return {"trim": self.trim}
