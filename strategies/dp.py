"""Client-level differentially private mean: clip each reply, sum, add Gaussian noise.

Accounting (conservative): a round is a Gaussian mechanism on the sum of clipped replies. Adding
or removing one client moves that sum by at most `clip` in L2, and the noise has std
`noise_multiplier * clip`, so a round is rho = 1 / (2 * noise_multiplier**2) zCDP. Rounds compose
additively, rho_total = rounds * rho, assuming a client takes part in every round and ignoring the
amplification that sampling clients would give. (epsilon, delta) follows from
epsilon = rho_total + 2 * sqrt(rho_total * ln(1 / delta)) (Bun & Steinke 2016, Prop. 1.3).

The sum is divided by the fixed expected cohort size (the run's `clients-per-round`), not by the
number of valid replies, as in DP-FedAvg (McMahan et al. 2018): the reply count depends on which
clients crashed, straggled or were rejected, so dividing by it would release a quantity the
accounting does not cover. Rounds with fewer replies are shrunk toward zero instead.
The noise comes from `seed` and the round so runs are reproducible; anyone who knows the seed can
remove it, so this measures the utility cost of DP in simulation, not a deployable guarantee.
"""

from __future__ import annotations

import math

import numpy as np

from strategies.base import ScalarReply, ScalarStrategy, as_float, stack
from strategies.clipped import clip_rows


class DPGaussianMean(ScalarStrategy):
    """(sum of clipped replies + N(0, (noise_multiplier * clip)^2) per scalar) / cohort size.

    Args:
        clip: the largest L2 norm one client's (K*q,) reply may have (the sensitivity), > 0.
        noise_multiplier: noise std as a multiple of clip, > 0; larger is more private.
        delta: the delta of the reported (epsilon, delta), in (0, 1).
        seed: an integer >= 0; with the round number it fixes the noise, so a rerun draws the
            same noise for every round, whatever rounds ran before it in the process.
        cohort: the denominator, an integer >= 1; by default the run's clients-per-round (the
            server passes it through `configure`).

    Unweighted: example counts are not clipped, so weighting by them would raise the sensitivity.
    """

    name = "dp-mean"
    state_keys = ("rounds",)

    def __init__(self, clip: float = 10.0, noise_multiplier: float = 1.0, delta: float = 1e-5,
                 seed: int = 0, cohort: int | None = None):
        self.clip = as_float("clip", clip)
        self.noise_multiplier = as_float("noise_multiplier", noise_multiplier)
        self.delta = as_float("delta", delta)
        if not self.clip > 0:
            raise ValueError(f"clip must be > 0, got {clip}")
        if not self.noise_multiplier > 0:
            raise ValueError(f"noise_multiplier must be > 0, got {noise_multiplier}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        self.seed = int(seed)
        if cohort is not None and (isinstance(cohort, bool) or not isinstance(cohort, int)
                                   or cohort < 1):
            raise ValueError(f"cohort must be an integer >= 1, got {cohort!r}")
        self.cohort = cohort
        self.rounds = 0  # noisy aggregates released so far: what the privacy budget counts

    def configure(self, *, clients_per_round: int) -> None:
        if self.cohort is None:  # an explicit `cohort` argument wins
            self.cohort = int(clients_per_round)

    def aggregate(self, server_round: int, replies: list[ScalarReply]) -> np.ndarray:
        if self.cohort is None:
            raise ValueError("dp-mean needs the cohort size: pass cohort= or call configure()")
        if len(replies) > self.cohort:
            raise ValueError(f"{len(replies)} replies for a cohort of {self.cohort}")
        grads, _ = stack(replies)
        clipped, _ = clip_rows(grads, self.clip)
        # a generator per (seed, round), not one shared stream: a round's noise does not depend on
        # how many rounds ran before it in this process
        rng = np.random.default_rng([self.seed, server_round])
        noise = rng.normal(0.0, self.noise_multiplier * self.clip, size=grads.shape[1])
        out = (clipped.sum(axis=0) + noise) / self.cohort
        self.rounds += 1
        return out

    def summary(self) -> dict:
        rho = self.rounds / (2 * self.noise_multiplier**2)
        epsilon = rho + 2 * math.sqrt(rho * math.log(1 / self.delta))
        return {"clip": self.clip, "noise_multiplier": self.noise_multiplier, "delta": self.delta,
                "cohort": self.cohort,
                "rounds": self.rounds, "rho": rho, "epsilon": epsilon,
                "accounting": "zCDP, no subsampling amplification"}
