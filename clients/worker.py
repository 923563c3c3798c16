"""What one simulated edge device does, independent of Flower: rebuild theta_t from the update log,
run K local P-RGE steps on its own data with the server's seeds, and personalize (the run's
personalization method's hooks, clients/personalization/).

A process (a Ray actor) serves many simulated clients one after another, so everything heavy is
cached per process: the model and engine (`worker_for`) and the partition of the data. theta is
not: each device replays the log on its own copy (clients/device.py), as a real device would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from clients.build import Setup, build
from clients.faults import (
    CRASH_MESSAGE,
    SimulatedCrash,
    adversaries,
    claimed_examples,
    corrupt,
    draw_faults,
)
from clients.partition import ClientData, run_partitions
from clients.personal_device import OnDevice
from clients.personal_store import MemoryStore, PersonalStore
from clients.personalization import load_personalization
from clients.runconfig import Config
from prge.batching import group_by_length
from prge.estimator import prge_step
from prge.first_order import fo_step
from prge.perturb import derive_seed
from prge.prefix_cache import PrefixCachedEngine, warm_examples
from prge.scorer import model_fingerprint
from prge.update_log import state_hash


@dataclass(frozen=True)
class LocalResult:
    grads: list[float]  # K*q projected gradients, step-major
    num_examples: int
    train_loss: float
    theta_hash: str


def batch_indices(cfg: Config, num_train: int, steps: int, lengths: Callable[[], np.ndarray],
                  *path) -> list[np.ndarray]:
    """The training-example indices of `steps` local steps: each batch drawn without replacement
    from the client's examples; with batch-order=length, the same examples regrouped by length
    (`lengths()`: tokens of each training example). A function of the run seed and `path`
    (round, client) only: the server counts a device's work from the very same batches."""
    size = min(cfg.batch_size, num_train)
    drawn = [np.random.default_rng(derive_seed(cfg.seed, "local-batch", *path, k))
             .choice(num_train, size=size, replace=False) for k in range(steps)]
    if cfg.batch_order == "length":
        rng = np.random.default_rng(derive_seed(cfg.seed, "length-order", *path))
        drawn = group_by_length(drawn, lengths(), rng)
    return drawn


class ClientWorker:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        if not cfg.threads:  # one torch thread per reserved core: clients must not oversubscribe
            torch.set_num_threads(max(1, int(cfg.client_cpus)))
        self.setup: Setup = build(cfg)
        self._data: dict[int, ClientData] = {}
        self._lengths: dict[int, np.ndarray] = {}  # partition -> tokens per training example
        self.method = load_personalization(cfg.personalization, **cfg.personalization_args)
        self._memory: dict[int, MemoryStore] = {}  # personal state of devices without storage

    def device(self, data: ClientData, personal: Path | None, lr: float,
               personal_steps: int | None = None) -> OnDevice:
        """The device as the personalization method sees it; its personal state in `personal`
        (the device's storage), else in this process's memory."""
        store = (PersonalStore(personal) if personal is not None
                 else self._memory.setdefault(data.partition_id, MemoryStore()))
        steps = self.cfg.personal_steps if personal_steps is None else personal_steps
        return OnDevice(self, data, store, lr, steps)

    def state_hash(self, theta: torch.Tensor) -> str:
        """The hash a reply carries: theta under this device's base model and A."""
        return state_hash(theta, model_fingerprint(self.setup.scorer))

    @cached_property
    def partitions(self) -> list[ClientData]:
        return run_partitions(self.setup.task.train, self.cfg)

    def data(self, partition_id: int, store: Path | None = None) -> ClientData:
        """The client's data; on first use its frozen prefixes are cached (read from `store`,
        the device's storage, when an earlier visit wrote them there)."""
        if partition_id not in self._data:
            data = self.partitions[partition_id]
            if self.cfg.prefix_cache_fill == "upfront":
                # the device computes its examples' frozen prefix once, when it first trains
                test = data.test[: self.cfg.client_eval_size or None]
                warm_examples(self.setup.engine, self.setup.encoder, list(data.train) + list(test),
                              store=store)
            self._data[partition_id] = data
        return self._data[partition_id]

    def _batches(self, data: ClientData, steps: int, *path) -> list:
        """The encoded batches of `steps` local steps (`batch_indices`)."""
        def lengths() -> np.ndarray:
            if data.partition_id not in self._lengths:  # tokenized once per device, not per round
                self._lengths[data.partition_id] = self.setup.encoder.lengths(data.train)
            return self._lengths[data.partition_id]

        drawn = batch_indices(self.cfg, len(data.train), steps, lengths, *path)
        return [self.setup.encoder.encode([data.train[i] for i in idx]) for idx in drawn]

    def local_steps(self, theta: torch.Tensor, data: ClientData, seeds: list[int], eps: float,
                    lr: float, *path) -> tuple[list[float], list[float]]:
        """K = len(seeds) / q P-RGE steps on the client's data; theta is updated in place."""
        q = self.cfg.q
        grads, losses = [], []
        for k, batch in enumerate(self._batches(data, len(seeds) // q, *path)):
            result = prge_step(self.setup.engine, batch, theta, seeds[k * q:(k + 1) * q], eps=eps,
                               lr=lr, mode=self.cfg.mode)
            grads.extend(result.grads)
            losses.append(result.loss)
        return grads, losses

    def fo_steps(self, theta: torch.Tensor, data: ClientData, steps: int, lr: float,
                 *path) -> list[float]:
        """`steps` first-order SGD steps (backprop into B) on the client's data, in place."""
        engine, losses = self.setup.engine, []
        for batch in self._batches(data, steps, *path):
            # from the device's frozen-prefix cache when it has one: backprop through the suffix
            hidden = engine.cache.hidden(batch) if isinstance(engine, PrefixCachedEngine) else None
            losses.append(fo_step(self.setup.scorer, batch, theta, lr, hidden))
        return losses

    def behave(self, values: np.ndarray, server_round: int, partition_id: int) -> np.ndarray:
        """The simulated device's faults around an honest result: a crash raises, a hung device
        blocks until its process is stopped, an adversary corrupts what it sends
        (clients/faults.py). A straggler answers at once: its delay is simulated by the server."""
        faults = draw_faults(self.cfg, server_round, partition_id)
        if faults.crash:
            raise SimulatedCrash(f"{CRASH_MESSAGE} (round {server_round}, client {partition_id})")
        while faults.hang:  # the busy marker stays: the run stops this process when it ends
            time.sleep(3600)
        if partition_id in adversaries(self.cfg):
            return corrupt(values, self.cfg, server_round, partition_id)
        return values

    def train(self, partition_id: int, theta: torch.Tensor, server_round: int, seeds: list[int],
              eps: float, lr: float, store: Path | None = None,
              personal: Path | None = None) -> LocalResult:
        """K P-RGE steps from theta_t (the device's copy, changed in place), then the
        personalization method's round (its state in `personal`)."""
        rebuilt = self.state_hash(theta)
        start = theta.clone()  # theta_t: the personalization method's reference
        data = self.data(partition_id, store)
        grads, losses = self.local_steps(theta, data, seeds, eps, lr, server_round, partition_id)
        sent = self.behave(np.asarray(grads, dtype=np.float64), server_round, partition_id)
        n = claimed_examples(self.cfg, partition_id, len(data.train))
        self.method.on_round(self.device(data, personal, lr), start, server_round)
        return LocalResult(sent.tolist(), n, float(np.mean(losses)), rebuilt)

    def train_dense(self, partition_id: int, theta: torch.Tensor, server_round: int, eps: float,
                    lr: float, store: Path | None = None,
                    personal: Path | None = None) -> tuple[torch.Tensor, int, float]:
        """The dense baselines: K local steps from the received theta, returning the change of
        theta itself (what FedAvg uploads). `zo-dense` takes P-RGE steps with the client's own
        seeds (FedZO-style); `fo` takes first-order SGD steps."""
        data = self.data(partition_id, store)
        local = theta.clone()
        if self.cfg.method == "fo":
            losses = self.fo_steps(local, data, self.cfg.local_steps, lr, server_round, partition_id)
        else:
            seeds = [derive_seed(self.cfg.seed, "zo-dense", server_round, partition_id, j)
                     for j in range(self.cfg.local_steps * self.cfg.q)]
            _, losses = self.local_steps(local, data, seeds, eps, lr, server_round, partition_id)
        delta = self.behave((local - theta).double().numpy(), server_round, partition_id)
        n = claimed_examples(self.cfg, partition_id, len(data.train))
        self.method.on_round(self.device(data, personal, lr), theta, server_round)
        return torch.from_numpy(delta).to(theta.dtype), n, float(np.mean(losses))

    def personalize(self, partition_id: int, theta: torch.Tensor, steps: int,
                    store: Path | None = None, server_round: int | None = None,
                    personal: Path | None = None, newcomer: bool = False) -> dict:
        """Global vs personalized accuracy on the client's own test data, after `server_round`
        (the run's last by default): the personalization method builds the personal adapter
        from theta_t and the device's own state (with `finetune`, `steps` local steps with the
        device's private seeds; clients/personalization/). Nothing personal is returned.

        A newcomer (it never trained) joins afresh at each evaluation: its method's round of
        work on a state of its own that starts empty and is not kept, then its personal adapter."""
        cfg = self.cfg
        data = self.data(partition_id, store)
        lr = cfg.fo_lr if cfg.method == "fo" else cfg.lr
        at = cfg.rounds if server_round is None else server_round
        if newcomer:
            device = OnDevice(self, data, MemoryStore(), lr, steps)
            self.method.on_round(device, theta, at)
        else:
            device = self.device(data, personal, lr, steps)
        adapted = self.method.personal(device, theta, at)
        test = device.examples("test")
        out = {"num-test": len(test)}
        if test:
            # both always (with `none` they are one adapter): the device's work must not depend
            # on what the method holds (simulation/device_work.py counts it)
            out.update({"global-acc": device.evaluate(theta),
                        "personal-acc": device.evaluate(adapted)})
        return out


_WORKERS: dict[str, ClientWorker] = {}


def _key(cfg: Config) -> str:
    return json.dumps(cfg.to_dict(), sort_keys=True)


def built_worker(cfg: Config) -> ClientWorker | None:
    """This process's worker for the run config if it was built, else None (never builds)."""
    return _WORKERS.get(_key(cfg))


def worker_for(cfg: Config) -> ClientWorker:
    """The process-wide worker for this run config (built once per process)."""
    key = _key(cfg)
    if key not in _WORKERS:
        _WORKERS.clear()  # one run per process at a time: free the previous model
        _WORKERS[key] = ClientWorker(cfg)
    return _WORKERS[key]
