"""ditto: a personal adapter v trained beside the global one, pulled towards it (Li, Hu, Beirami and
Smith, "Ditto: Fair and Robust Federated Learning Through Personalization", ICML 2021,
arXiv 2012.04221).

In each round a device is sampled for, after its global work, it takes `steps` steps on

    h(v) = loss(v) + lam / 2 * ||v - theta_t||^2

from its stored v (theta_t at its first round): the loss's gradient estimated by the run's method
(P-RGE with the device's private seeds), the proximal term's gradient lam * (v - theta_t) added
exactly, both at the same v. v stays on the device; it is what the device predicts with.
"""

from __future__ import annotations

import torch

from clients.personalization.base import Device, Personalization


class Ditto(Personalization):
    name = "ditto"

    def __init__(self, lam: float = 0.1, steps: int | None = None):
        if not isinstance(lam, (int, float)) or isinstance(lam, bool) or lam < 0:
            raise ValueError(f"lam must be a number >= 0, got {lam!r}")
        if steps is not None and (not isinstance(steps, int) or steps < 1):
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        self.lam, self.steps = float(lam), steps  # steps None: the run's K

    def on_round(self, device: Device, theta: torch.Tensor, server_round: int) -> None:
        v = device.load(server_round)
        v = theta.clone() if v is None else v.to(theta.dtype)
        steps = device.local_steps if self.steps is None else self.steps
        for k in range(steps):
            prox = self.lam * (v - theta)  # at the v the loss's step is estimated at
            device.train(v, 1, "ditto", server_round, device.partition_id, k)
            v -= device.lr * prox
        device.save(server_round, v)

    def personal(self, device: Device, theta: torch.Tensor, server_round: int) -> torch.Tensor:
        v = device.load(server_round + 1)
        return theta if v is None else v.to(theta.dtype)  # never sampled: v would start at theta

    def describe(self) -> dict:
        return {"name": self.name, "lam": self.lam, "steps": self.steps}
