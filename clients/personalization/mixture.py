"""mixture: the device predicts with alpha * v + (1 - alpha) * theta_t, a mixture of its own adapter v
and the global one (APFL: Deng, Kamani and Mahdavi, "Adaptive Personalized Federated Learning",
2020, arXiv 2003.13461; the mixture of parameters, as APFL's personalized model).

In each round a device is sampled for, after its global work, it takes `steps` steps on v for the
loss of the mixture: the run's estimator at m = alpha * v + (1 - alpha) * theta_t gives the step
of m, and since dm/dv = alpha, v moves by alpha times it (exact for P-RGE's projected gradients
and for first-order SGD alike). v starts at theta_t at the device's first round.

`alpha = "auto"`: v is trained at alpha = 0.5 and, at each evaluation, each device picks alpha
from {0, 0.25, 0.5, 0.75, 1} by its accuracy on the last fifth of its own training examples
(APFL adapts alpha on the training loss too; test examples are never used to choose).
"""

from __future__ import annotations

import torch

from clients.personalization.base import Device, Personalization

AUTO_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
AUTO_TRAIN_ALPHA = 0.5


class Mixture(Personalization):
    name = "mixture"

    def __init__(self, alpha: float | str = 0.5, steps: int | None = None):
        if alpha != "auto" and not (isinstance(alpha, (int, float)) and not isinstance(alpha, bool)
                                    and 0 <= alpha <= 1):
            raise ValueError(f"alpha must be a number in [0, 1] or \"auto\", got {alpha!r}")
        if steps is not None and (not isinstance(steps, int) or steps < 1):
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        self.alpha, self.steps = alpha, steps

    def train_alpha(self) -> float:
        return AUTO_TRAIN_ALPHA if self.alpha == "auto" else float(self.alpha)

    def on_round(self, device: Device, theta: torch.Tensor, server_round: int) -> None:
        v = device.load(server_round)
        v = theta.clone() if v is None else v.to(theta.dtype)
        a = self.train_alpha()
        for k in range(device.local_steps if self.steps is None else self.steps):
            mixed = a * v + (1 - a) * theta
            before = mixed.clone()
            device.train(mixed, 1, "mixture", server_round, device.partition_id, k)
            v += a * (mixed - before)
        device.save(server_round, v)

    def personal(self, device: Device, theta: torch.Tensor, server_round: int) -> torch.Tensor:
        v = device.load(server_round + 1)
        v = theta if v is None else v.to(theta.dtype)
        if self.alpha != "auto":
            return self.alpha * v + (1 - self.alpha) * theta
        scores = [device.evaluate(a * v + (1 - a) * theta, "train-tail") for a in AUTO_GRID]
        best = AUTO_GRID[scores.index(max(scores))]  # the smallest alpha among ties
        return best * v + (1 - best) * theta

    def describe(self) -> dict:
        return {"name": self.name, "alpha": self.alpha, "steps": self.steps}
