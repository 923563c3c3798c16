"""local: each device trains its own adapter alone, from theta_0, with K local steps in every round
it is sampled for, and predicts with it; it never uses the global adapter (the lower reference of
personalized FL: what a client gets without federating, as in Ditto's and pFedMe's tables).

The federation itself runs as with any method (the same messages and bytes): only the adapter a
device predicts with differs.
"""

from __future__ import annotations

import torch

from clients.personalization.base import Device, Personalization


class LocalOnly(Personalization):
    name = "local"

    def __init__(self, steps: int | None = None):
        if steps is not None and (not isinstance(steps, int) or steps < 1):
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        self.steps = steps  # None: the run's K (`local-steps`)

    def on_round(self, device: Device, theta: torch.Tensor, server_round: int) -> None:
        own = device.load(server_round)
        own = torch.zeros_like(theta) if own is None else own.to(theta.dtype)
        steps = device.local_steps if self.steps is None else self.steps
        device.train(own, steps, "local", server_round, device.partition_id)
        device.save(server_round, own)

    def personal(self, device: Device, theta: torch.Tensor, server_round: int) -> torch.Tensor:
        own = device.load(server_round + 1)
        return torch.zeros_like(theta) if own is None else own.to(theta.dtype)

    def describe(self) -> dict:
        return {"name": self.name, "steps": self.steps}
