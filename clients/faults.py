"""Simulated device faults and adversarial clients, every draw derived from the run seed.

Per sampled client and round, three independent draws decide whether the device is offline for
the round (`dropout-prob`: the server does not reach it), crashes while training (`crash-prob`: it
answers with an error) or straggles (`straggle-prob`: it answers `straggle-s` seconds late, and a
`round-deadline-s` may discard it). A fixed set of clients, `byzantine-fraction` of them, is
adversarial from the start: it trains honestly, then corrupts what it sends (`byzantine-attack`):
its values, or (`examples-lie`) the example count that weights it in a mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from prge.perturb import derive_seed

ATTACKS = ("scale", "sign-flip", "random", "examples-lie")
LIED_EXAMPLES = 10**12  # what an `examples-lie` adversary claims to hold
CRASH_MESSAGE = "simulated device crash"


class SimulatedCrash(RuntimeError):
    """A device fault the config asked for: answered with an error reply, not a traceback."""


@dataclass(frozen=True)
class Faults:
    dropout: bool
    crash: bool
    straggle: bool


def draw_faults(cfg, server_round: int, partition_id: int) -> Faults:
    u = np.random.default_rng(derive_seed(cfg.seed, "faults", server_round, partition_id)).random(3)
    return Faults(bool(u[0] < cfg.dropout_prob), bool(u[1] < cfg.crash_prob),
                  bool(u[2] < cfg.straggle_prob))


@cache
def _adversaries(seed: int, num_clients: int, fraction: float) -> frozenset[int]:
    count = int(round(fraction * num_clients))
    order = np.random.default_rng(derive_seed(seed, "byzantine")).permutation(num_clients)
    return frozenset(int(p) for p in order[:count])


def adversaries(cfg) -> frozenset[int]:
    """Partition ids of the adversarial clients (the same for the whole run)."""
    return _adversaries(cfg.seed, cfg.num_clients, cfg.byzantine_fraction)


def corrupt(values: np.ndarray, cfg, server_round: int, partition_id: int) -> np.ndarray:
    """What an adversary sends instead of its honest `values` (scalars or an adapter change):
    `scale` multiplies them by byzantine-scale, `sign-flip` by -byzantine-scale, `random` draws
    Gaussian noise byzantine-scale times the honest values' RMS (plausible-looking garbage),
    `examples-lie` flips their sign and claims LIED_EXAMPLES training examples (`claimed_examples`)
    so as to take all the weight of an example-weighted mean."""
    s = cfg.byzantine_scale
    if cfg.byzantine_attack == "examples-lie":  # flipped values under a huge claimed weight
        return -values
    if cfg.byzantine_attack == "scale":
        return values * s
    if cfg.byzantine_attack == "sign-flip":
        return -values * s
    rng = np.random.default_rng(derive_seed(cfg.seed, "attack", server_round, partition_id))
    rms = float(np.sqrt(np.mean(values**2))) if values.size else 0.0
    return rng.normal(0.0, s * max(rms, 1e-12), size=values.shape)


def claimed_examples(cfg, partition_id: int, honest: int) -> int:
    """The training-example count a client reports: the truth, except from an `examples-lie`
    adversary."""
    if cfg.byzantine_attack == "examples-lie" and partition_id in adversaries(cfg):
        return LIED_EXAMPLES
    return honest
