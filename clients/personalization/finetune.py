"""finetune: before each evaluation, N local steps from the global adapter on the device's own data
(FedAvg + fine-tuning: Wang et al., "Federated Evaluation of On-device Personalization", 2019,
arXiv 1910.10252; Yu et al., "Salvaging Federated Learning by Local Adaptation", 2020,
arXiv 2002.04758).

With P-RGE the personal adapter is theta_t plus N (seed, scalar) steps with the device's private
seeds: it is computed afresh at every evaluation, so the device keeps no state between them.
"""

from __future__ import annotations

import torch

from clients.personalization.base import Device, Personalization


class FineTune(Personalization):
    name = "finetune"

    def __init__(self, steps: int | None = None):
        if steps is not None and (not isinstance(steps, int) or steps < 0):
            raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
        self.steps = steps  # None: the run's `personal-steps`

    def personal(self, device: Device, theta: torch.Tensor, server_round: int) -> torch.Tensor:
        steps = device.personal_steps if self.steps is None else self.steps
        adapted = theta.clone()
        # the same private seeds and batches at every evaluation: ("personal", client)
        device.train(adapted, steps, "personal", device.partition_id)
        return adapted

    def describe(self) -> dict:
        return {"name": self.name, "steps": self.steps}
