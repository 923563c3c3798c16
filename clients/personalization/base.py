"""The personalization plug-in API: what a device does for its own adapter, beside the federation.

The server aggregates (strategies/); the device personalizes (here). A method is a class with two
hooks, both run on the device:

- `on_round(device, theta, server_round)`: after the device's work for a training round it was
  sampled for (theta: the global adapter theta_t it trained from; its reply is already built, so
  nothing a hook does reaches the server);
- `personal(device, theta, server_round)`: the adapter the device predicts with at an evaluation
  after round `server_round` (theta: the global theta_t then).

Personal state lives on the device, never on the wire: `device.load(server_round)` and
`device.save(server_round, state)` keep one float32 vector per device in its storage, next to its
copy of the global adapter, so it survives kill and resume. A round run twice (the server resumed
from the checkpoint before it) loads the state the first run started from, so a resumed run
continues the uninterrupted one exactly.

A method's work must not depend on the numbers it computes (how many steps, which evaluations):
the server counts each device's FLOPs for the virtual clock by running the same hooks on a
device that counts instead of computing (simulation/device_work.py).
"""

from __future__ import annotations

from typing import Protocol

import torch


class Device(Protocol):
    """What a personalization method may use on a device (clients/personal_device.py)."""

    partition_id: int
    local_steps: int  # K of the run
    personal_steps: int  # the run's `personal-steps`
    lr: float  # the step size of the device's local steps in this round (fo: fo-lr)

    def train(self, theta: torch.Tensor, steps: int, *path) -> None:
        """`steps` local steps of the run's method on the device's training examples, in place:
        P-RGE with seeds derived from (run seed, *path), or first-order SGD for method=fo. The
        batches are drawn from (run seed, *path) too: a path names the steps uniquely."""

    def evaluate(self, theta: torch.Tensor, split: str = "test") -> float:
        """Accuracy of `theta` on the device's own test examples (`test`) or on the last fifth
        of its training examples (`train-tail`, for choosing a method's setting: never choose
        on the test examples)."""

    def coordinates(self, targets: list[str]) -> torch.Tensor:
        """(D,) bool mask of theta's coordinates holding these adapter targets' B (q ... down,
        head), in every adapted layer."""

    def load(self, server_round: int) -> torch.Tensor | None:
        """The personal state saved at the latest round before `server_round` (None: none yet)."""

    def save(self, server_round: int, state: torch.Tensor) -> None:
        """Keep `state` (any length, float32) as the personal state after `server_round`."""


class Personalization:
    """Base class: the global adapter is the personal one (`none`). Subclass it, set `name`, and
    override the hooks; keyword arguments come from `personalization-args`."""

    name = "none"

    def on_round(self, device: Device, theta: torch.Tensor, server_round: int) -> None:
        """Work on the personal state in a round the device was sampled for (default: none)."""

    def personal(self, device: Device, theta: torch.Tensor, server_round: int) -> torch.Tensor:
        """The adapter to evaluate as this device's personalized model (default: theta)."""
        return theta

    def validate(self, cfg) -> None:
        """Raise ValueError (one sentence) when the method cannot run with this run config;
        called once before a run starts."""

    def describe(self) -> dict:
        """The method's settings, for the run's summary."""
        return {"name": self.name}
