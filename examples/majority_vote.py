"""A custom strategy written only against fedprge's public interface: a sign majority vote.

Each seed's scalar becomes (the sign most clients agree on) x (the median magnitude), scaled by
`scale`. Like signSGD with majority vote, a minority of clients, however large their scalars,
cannot flip a seed's direction or blow up its step.

    fedprge run --config configs/run-tiny.toml --set strategy=examples.majority_vote:MajorityVote \
        --set strategy-args.scale=0.5
"""

from __future__ import annotations

import numpy as np

from strategies import ScalarReply, ScalarStrategy


class MajorityVote(ScalarStrategy):
    name = "majority-vote"
    state_keys = ("ties",)

    def __init__(self, scale: float = 1.0):
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale = float(scale)
        self.ties = 0  # seeds where the vote was split evenly (stepped 0): state across rounds

    def aggregate(self, server_round: int, replies: list[ScalarReply]) -> np.ndarray:
        grads = np.stack([r.grads for r in replies])  # (clients, K*q)
        votes = np.sign(grads).sum(axis=0)  # (K*q,) positive: most clients say "up"
        self.ties += int(np.count_nonzero(votes == 0))
        magnitude = np.median(np.abs(grads), axis=0)
        return self.scale * np.sign(votes) * magnitude

    def summary(self) -> dict:
        return {"scale": self.scale, "tied_seeds": self.ties}
