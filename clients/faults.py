"""Simulated device faults and adversarial clients, every draw derived from the run seed.

Per sampled client and round, independent draws decide whether the device is offline for the
round (`dropout-prob`: the server does not reach it), crashes while training (`crash-prob`: it
answers with an error), straggles (`straggle-prob`: its reply arrives `straggle-s` simulated
seconds after the round's work, and is `late` when that is past the round's deadline) or hangs
(`hang-prob`: it takes the message and never answers, until the run stops its process).

A straggler's delay is simulated, not slept: the server judges it from the same seeded draw
(simulation/server_app.py), so whether a reply is late never depends on this host's speed, on
how busy its client processes were, or on a kill and resume. A hang is real (the client process
blocks), because what it exercises is the host's guard: the server's wait, the cursor query
that follows, and the stopping of busy processes at the end of the run.

A fixed set of clients, `byzantine-fraction` of them, is adversarial from the start: it trains
honestly, then corrupts what it sends (`byzantine-attack`): its values, or (`examples-lie`) the
example count that weights it in a mean.
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
    hang: bool = False


def draw_faults(cfg, server_round: int, partition_id: int) -> Faults:
    # one stream per client and round; a fourth draw appended leaves the first three (and so
    # every earlier run's faults) as they were
    u = np.random.default_rng(derive_seed(cfg.seed, "faults", server_round, partition_id)).random(4)
    return Faults(bool(u[0] < cfg.dropout_prob), bool(u[1] < cfg.crash_prob),
                  bool(u[2] < cfg.straggle_prob), bool(u[3] < cfg.hang_prob))


def simulated_delay_s(cfg, server_round: int, partition_id: int) -> float:
    """Seconds after the round's work that this client's reply arrives, in simulated time."""
    return cfg.straggle_s if draw_faults(cfg, server_round, partition_id).straggle else 0.0


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
