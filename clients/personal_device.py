"""A simulated device as a personalization method sees it (clients/personalization/base.py):
its own data, the run's local step, its evaluation, and its personal state's storage."""

from __future__ import annotations

import torch

from clients.partition import ClientData
from prge.evaluate import evaluate
from prge.perturb import derive_seed


class OnDevice:
    def __init__(self, worker, data: ClientData, store, lr: float, personal_steps: int):
        cfg = worker.cfg
        self.worker, self.data, self.store, self.lr = worker, data, store, lr
        self.partition_id = data.partition_id
        self.local_steps, self.personal_steps = cfg.local_steps, personal_steps

    def train(self, theta: torch.Tensor, steps: int, *path) -> None:
        w, cfg = self.worker, self.worker.cfg
        if not steps:
            return
        if cfg.method == "fo":
            w.fo_steps(theta, self.data, steps, self.lr, *path)
            return
        seeds = [derive_seed(cfg.seed, *path, i) for i in range(steps * cfg.q)]
        w.local_steps(theta, self.data, seeds, cfg.eps, self.lr, *path)

    def examples(self, split: str) -> list:
        if split == "test":
            return list(self.data.test[: self.worker.cfg.client_eval_size or None])
        if split == "train-tail":
            return list(self.data.train[-max(1, len(self.data.train) // 5):])
        raise ValueError(f"unknown split {split!r}: test or train-tail")

    def evaluate(self, theta: torch.Tensor, split: str = "test") -> float:
        setup = self.worker.setup
        return evaluate(setup.engine, setup.encoder, self.examples(split), theta).acc

    def coordinates(self, targets: list[str]) -> torch.Tensor:
        return self.worker.setup.scorer.layout.mask(targets)

    def load(self, server_round: int) -> torch.Tensor | None:
        return self.store.load(server_round)

    def save(self, server_round: int, state: torch.Tensor) -> None:
        self.store.save(server_round, state)
