"""Example-weighted mean after bounding each client's whole reply to an L2 norm."""

from __future__ import annotations

import numpy as np

from strategies.base import ScalarReply, ScalarStrategy, as_float, stack


def clip_rows(grads: np.ndarray, clip: float) -> tuple[np.ndarray, np.ndarray]:
    """Each row scaled down to L2 norm <= clip (shorter rows unchanged); also which rows were cut."""
    norms = np.linalg.norm(grads, axis=1)
    # clip / max(norm, clip) is 1 for short rows and never divides by zero (clip > 0)
    scale = clip / np.maximum(norms, clip)
    return grads * scale[:, None], norms > clip


class ClippedMean(ScalarStrategy):
    """Scale each reply's (K*q,) vector down to L2 norm <= clip, then take the example-weighted mean.

    Clipping the whole vector (not each scalar) keeps its direction across the round's seeds, and
    bounds how far one client can move the aggregate: by at most its weight share times clip.

    Args:
        clip: the largest L2 norm one client's reply may have, > 0.
    """

    name = "clipped-mean"
    state_keys = ("clipped", "replies")

    def __init__(self, clip: float = 10.0):
        self.clip = as_float("clip", clip)
        if not self.clip > 0:
            raise ValueError(f"clip must be > 0, got {clip}")
        self.clipped = 0  # replies scaled down, over the whole run
        self.replies = 0  # replies seen, over the whole run

    def aggregate(self, server_round: int, replies: list[ScalarReply]) -> np.ndarray:
        grads, weights = stack(replies)
        clipped, cut = clip_rows(grads, self.clip)
        out = weights @ clipped / weights.sum()  # a convex combination: its norm stays <= clip
        self.clipped += int(cut.sum())
        self.replies += len(replies)
        return out

    def summary(self) -> dict:
        return {"clip": self.clip, "clipped": self.clipped, "replies": self.replies}
