"""Coordinate-wise median of the scalars: robust to a minority of arbitrary replies."""

from __future__ import annotations

import numpy as np

from strategies.base import ScalarReply, ScalarStrategy, stack


class CoordinateMedian(ScalarStrategy):
    """Median over clients, seed by seed, ignoring example counts.

    Unweighted on purpose: weighting by the counts clients report would let one client that
    claims many examples move the median on its own. While fewer than half the replies are
    arbitrary, each aggregated scalar stays within the range of the honest clients' scalars.
    """

    name = "median"
    state_keys = ()

    def aggregate(self, server_round: int, replies: list[ScalarReply]) -> np.ndarray:
        grads, _ = stack(replies)
        return np.median(grads, axis=0)  # (K*q,); an even count averages the two middle values
