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
The noise comes from the run's seed, `seed` and the round, so a rerun draws the same noise and two
run seeds draw different noise; anyone who knows the seeds can remove it, so this measures the
utility cost of DP in simulation, not a deployable guarantee. For the same reason the server
leaves figures of the raw replies (train loss, rejection reasons) out of the round's metrics.
"""

from __future__ import annotations

import math

import numpy as np

from prge.perturb import derive_seed
from strategies.base import ScalarReply, ScalarStrategy, as_float, stack
from strategies.clipped import clip_rows


class DPGaussianMean(ScalarStrategy):
    """(sum of clipped replies + N(0, (noise_multiplier * clip)^2) per scalar) / cohort size.

    Args:
        clip: the largest L2 norm one client's (K*q,) reply may have (the sensitivity), > 0.
        noise_multiplier: noise std as a multiple of clip, > 0; larger is more private.
        delta: the delta of the reported (epsilon, delta), in (0, 1).
        seed: an integer >= 0 that picks another noise stream within a run: the run's seed (set
            by the server) is always mixed in, with the round, so a rerun draws the same noise
            for every round, whatever rounds ran before it, and two run seeds draw different noise.
        cohort: the denominator, an integer >= 1; by default the run's clients-per-round (the
            server passes it through `configure`).

    Unweighted: example counts are not clipped, so weighting by them would raise the sensitivity.
    """

    name = "dp-mean"
    state_keys = ("rounds",)
    releases_client_statistics = False  # an un-noised mean train loss would bypass the noise

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
        # a generator per (run seed, seed, round), not one shared stream: a round's noise does not
        # depend on how many rounds ran before it, and the run seed makes a sweep's seeds differ
        rng = np.random.default_rng(derive_seed(self.run_seed, self.name, self.seed, server_round))
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
