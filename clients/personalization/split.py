"""split: some adapter parts are the device's own and never leave it; the rest is federated
(FedPer: Arivazhagan et al., "Federated Learning with Personalization Layers", 2019,
arXiv 1912.00818; FedRep: Collins et al., "Exploiting Shared Representations for Personalized
Federated Learning", ICML 2021, arXiv 2102.07112).

`parts` names adapter targets (default ["down"]: the B of the last MLP projection in each adapted
layer; "head" for the label-word rows of the LM head). The device predicts with theta_t whose
`parts` coordinates are replaced by its own. In each round it is sampled for, after its global
work, it trains its own coordinates FedRep-style, with the federated ones fixed at theta_t:
`steps` steps of the run's estimator on that adapter, keeping only the change of its own
coordinates (with P-RGE an unbiased estimate of their gradient: E[z z^T] = I). The federated
part is the global adapter's, trained by the protocol as with any method; the server's values of
the personal coordinates are never used by a device.
"""

from __future__ import annotations

import torch

from clients.personalization.base import Device, Personalization
from prge.lora_fa import normalize_targets


class Split(Personalization):
    name = "split"

    def __init__(self, parts: list[str] | str = ("down",), steps: int | None = None):
        parts = [parts] if isinstance(parts, str) else list(parts)
        if not parts or not all(isinstance(p, str) for p in parts):
            raise ValueError(f"parts must name adapter targets, got {parts!r}")
        parts = list(normalize_targets(parts))  # an unknown name is an AdapterError
        if steps is not None and (not isinstance(steps, int) or steps < 1):
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        self.parts, self.steps = parts, steps

    def validate(self, cfg) -> None:
        missing = [p for p in self.parts if p not in cfg.targets]
        if missing:
            raise ValueError(f"parts {', '.join(missing)} are not among the run's targets "
                             f"({', '.join(cfg.targets)})")

    def _adapter(self, device: Device, theta: torch.Tensor, own: torch.Tensor | None,
                 mask: torch.Tensor) -> torch.Tensor:
        """theta_t with the device's own coordinates (theta_0's zeros before it has any)."""
        mine = theta.clone()
        mine[mask] = 0.0 if own is None else own.to(theta.dtype)
        return mine

    def on_round(self, device: Device, theta: torch.Tensor, server_round: int) -> None:
        mask = device.coordinates(self.parts)
        adapter = self._adapter(device, theta, device.load(server_round), mask)
        for k in range(device.local_steps if self.steps is None else self.steps):
            device.train(adapter, 1, "split", server_round, device.partition_id, k)
            adapter[~mask] = theta[~mask]  # the federated coordinates stay theta_t's
        device.save(server_round, adapter[mask])

    def personal(self, device: Device, theta: torch.Tensor, server_round: int) -> torch.Tensor:
        mask = device.coordinates(self.parts)
        return self._adapter(device, theta, device.load(server_round + 1), mask)

    def describe(self) -> dict:
        return {"name": self.name, "parts": self.parts, "steps": self.steps}
