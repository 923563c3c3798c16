"""What each simulated device computes, in FLOPs, counted by the server from shapes alone.

The virtual clock (simulation/virtual_clock.py) needs a client's work as a number that is the same
on every machine and after every resume, so it is never measured: the server rebuilds the very
batches the device draws (`clients.worker.batch_indices`, a function of the run seed), tokenizes
them with the same encoder, and counts each forward with `prge.flops.FlopCounter` (PyTorch's FLOP
counter over the scorer's own graph, checked against real forwards in tests/prge/test_flops.py).

Per round, a device's work is:
- its frozen-prefix fill, when the run uses the prefix cache: all its examples when it first
  works (`prefix-cache-fill = upfront`, in the fill's own batches), or (`lazy`) the examples of
  each batch it never filled before; each device fills an example once (it keeps the rows in
  its storage), whatever the simulator's processes share;
- K local steps: P-RGE's one forward of the 2q copies on the batch (packed real tokens when the
  suffix layout is packed; the whole model without a prefix cache; 2q forwards of one copy in
  sequential mode), or `fo`'s forward and backward;
- vector work on the adapter, 2 FLOPs per number: rebuilding theta from the log entries it
  catches up with (one direction each), the 2q perturbed copies and the update of each step.
  Drawing the directions (the RNG) is not counted.
The personalization method's work (clients/personalization/) is counted by running its own hooks
on a `CountingDevice`, which counts each step and evaluation a hook asks for instead of doing it:
its work in each round a device is sampled for (Ditto's personal steps), and at each client
evaluation what it does to build the personal adapter (finetune's steps) plus the evaluations of
the global and the personal adapter on the device's test examples.

Not counted: elementwise work inside the model (norms, activations, softmax; a few percent),
memory traffic, and the engine's padding of a batch to its program's fixed row count.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from clients.partition import ClientData
from clients.personalization import load_personalization
from clients.runconfig import Config
from clients.worker import batch_indices
from prge.evaluate import eval_order
from prge.flops import FlopCounter
from prge.prefix_cache import PrefixCachedEngine, warm_order

QUANT_BYTES = {"none": 4.0, "int8": 1.0, "int4": 0.5}  # bytes per decoder-linear weight


@dataclass
class DeviceData:
    """One device's examples as the counter needs them: prompt lengths, and for each example the
    first example with the same prompt (the prefix cache keys rows by their token ids)."""

    train: list
    test: list  # the test examples it evaluates on
    lengths: np.ndarray  # (train + test,) prompt tokens
    canonical: np.ndarray  # (train + test,) position of the first example with the same prompt

    @cached_property
    def distinct(self) -> int:
        """How many distinct prompts: the prefix rows a full fill holds."""
        return len(np.unique(self.canonical))


class CountingDevice:
    """A device (clients/personalization/base.py `Device`) that counts the FLOPs of the steps and
    evaluations a personalization hook asks for instead of computing them. It holds no state: a
    method's work must not depend on the numbers it holds or computes."""

    def __init__(self, work: DeviceWork, pid: int, personal_steps: int):
        self.work, self.partition_id = work, pid
        self.local_steps, self.personal_steps = work.cfg.local_steps, personal_steps
        self.lr, self.flops = 0.0, 0

    def train(self, theta, steps: int, *path) -> None:
        self.flops += self.work._steps(self.partition_id, steps, self.work.cfg.method == "fo",
                                       *path)

    def evaluate(self, theta, split: str = "test") -> float:
        self.flops += self.work._evaluation(self.partition_id, split)
        return 0.0

    def coordinates(self, targets: list[str]) -> torch.Tensor:
        return self.work.setup.scorer.layout.mask(targets)

    def load(self, server_round: int) -> None:
        return None

    def save(self, server_round: int, state) -> None:
        pass


class DeviceWork:
    def __init__(self, cfg: Config, setup, partitions: list[ClientData]):
        self.cfg, self.setup, self.partitions = cfg, setup, partitions
        self.method = load_personalization(cfg.personalization, **cfg.personalization_args)
        self.counter = FlopCounter(setup.scorer)
        self.cached = isinstance(setup.engine, PrefixCachedEngine)
        self.packed = self.cached and cfg.suffix_layout == "packed"
        self.dim = int(setup.scorer.dim)
        # canonical positions whose prefix each device holds; "all" once an up-front fill ran
        self.filled: dict[int, set[int]] = {}
        self._data: dict[int, DeviceData] = {}
        self._memory: dict[int, int] = {}

    # -- state (checkpointed) -----------------------------------------------------------------
    def state(self) -> dict:
        return {str(p): sorted(s) for p, s in sorted(self.filled.items())}

    def restore(self, state: dict) -> None:
        self.filled = {int(p): set(int(i) for i in s) for p, s in state.items()}

    # -- a device's data ----------------------------------------------------------------------
    def data(self, pid: int) -> DeviceData:
        if pid not in self._data:
            part = self.partitions[pid]
            test = list(part.test[: self.cfg.client_eval_size or None])
            examples = list(part.train) + test
            ids = [tuple(self.setup.encoder.prompt_ids(ex)) for ex in examples]
            first: dict[tuple, int] = {}
            canonical = np.array([first.setdefault(key, i) for i, key in enumerate(ids)])
            self._data[pid] = DeviceData(list(part.train), test,
                                         np.array([len(k) for k in ids]), canonical)
        return self._data[pid]

    # -- the pieces ---------------------------------------------------------------------------
    def _fill(self, pid: int, positions) -> int:
        """FLOPs of filling the prefixes of these positions that the device does not hold (one
        batch, padded to the longest missing prompt, as the cache computes them)."""
        if not self.cached:
            return 0
        d, held = self.data(pid), self.filled.setdefault(pid, set())
        missing = sorted({int(d.canonical[p]) for p in positions} - held)
        if not missing:
            return 0
        held.update(missing)
        return self.counter.prefix(len(missing), int(d.lengths[missing].max()))

    def _first_fill(self, pid: int) -> int:
        """The up-front fill of all the device's examples, at its first work."""
        if self.cfg.prefix_cache_fill != "upfront" or not self.cached:
            return 0
        d = self.data(pid)
        if len(self.filled.get(pid, ())) == d.distinct:
            return 0  # filled at an earlier contact
        examples = d.train + d.test
        position = {id(ex): i for i, ex in enumerate(examples)}
        return sum(self._fill(pid, [position[id(ex)] for ex in chunk])
                   for chunk in warm_order(examples))

    def _forward(self, pid: int, positions, copies: int) -> int:
        """One forward of `copies` adapter copies on these examples (lazy fills included)."""
        d = self.data(pid)
        lengths = d.lengths[list(positions)]
        n, t = len(lengths), self.setup.encoder.padded_length(int(lengths.max()))
        if not self.cached:
            return self.counter.forward(n, t, copies)
        fill = self._fill(pid, positions)
        return fill + self.counter.suffix(n, t, copies, int(lengths.sum()) if self.packed else None)

    def _steps(self, pid: int, steps: int, first_order: bool, *path) -> int:
        d, q = self.data(pid), self.cfg.q
        flops = 0
        batches = batch_indices(self.cfg, len(d.train), steps,
                                lambda: d.lengths[: len(d.train)], *path)
        for idx in batches:
            if first_order:
                lengths = d.lengths[idx]
                t = self.setup.encoder.padded_length(int(lengths.max()))
                flops += self._fill(pid, idx) + self.counter.first_order(len(idx), t, self.cached)
                flops += 2 * self.dim  # the SGD update
            elif self.cfg.mode == "sequential":
                flops += sum(self._forward(pid, idx, 1) for _ in range(2 * q))
                flops += 6 * q * self.dim
            else:
                flops += self._forward(pid, idx, 2 * q) + 6 * q * self.dim  # copies + update
        return flops

    def _evaluation(self, pid: int, split: str = "test") -> int:
        """One evaluation of one adapter on the device's test examples, or (`train-tail`) on
        the last fifth of its training examples (clients/personal_device.py)."""
        d = self.data(pid)
        if split == "test":
            examples, base = d.test, len(d.train)
        else:
            n = max(1, len(d.train) // 5)
            examples, base = d.train[-n:], len(d.train) - n
        return sum(self._forward(pid, [base + i for i in idx], 1) for idx in eval_order(examples))

    # -- what the server asks -----------------------------------------------------------------
    def train_round(self, pid: int, server_round: int, entries_replayed: int) -> int:
        """FLOPs of a device's round: fill, catch-up replay, K local steps and the
        personalization method's work in the round."""
        flops = self._first_fill(pid) + 2 * self.dim * entries_replayed
        flops += self._steps(pid, self.cfg.local_steps, self.cfg.method == "fo", server_round, pid)
        device = CountingDevice(self, pid, self.cfg.personal_steps)
        self.method.on_round(device, self._theta, server_round)
        return flops + device.flops

    def personalize(self, pid: int, entries_replayed: int, server_round: int,
                    newcomer: bool = False) -> int:
        """FLOPs of a client evaluation: what the method does to build the personal adapter (a
        newcomer first does its round of work) and the evaluations of the global and the
        personal adapter."""
        flops = self._first_fill(pid) + 2 * self.dim * entries_replayed
        device = CountingDevice(self, pid, self.cfg.personal_steps)
        if newcomer:
            self.method.on_round(device, self._theta, server_round)
        self.method.personal(device, self._theta, server_round)
        # the global adapter's, then the personal one's (the first fills what the cache lacks)
        return flops + device.flops + self._evaluation(pid) + self._evaluation(pid)

    @cached_property
    def _theta(self) -> torch.Tensor:
        """The adapter the counting hooks are given: its values never matter, its size does."""
        return torch.zeros(self.dim)

    def memory_bytes(self, pid: int) -> int:
        """What the device must hold to work: the program's weights at their stored width, the
        prefix rows of all its examples (fp32), theta and its 2q perturbed copies, and for `fo`
        the activations of a backward at the batch and the longest prompt. A constant of the
        device: computed once (the server asks every round it is sampled)."""
        if pid not in self._memory:
            self._memory[pid] = self._memory_need(pid)
        return self._memory[pid]

    def _memory_need(self, pid: int) -> int:
        d = self.data(pid)
        need = self.weight_bytes + 4 * self.dim * (2 * self.cfg.q + 1)
        if self.cached:
            hidden = int(self.setup.scorer.embed.weight.shape[1])
            unique = np.unique(d.canonical)
            need += 4 * hidden * int(d.lengths[unique].sum())
        if self.cfg.method == "fo":
            t = self.setup.encoder.padded_length(int(d.lengths.max()))
            need += self.counter.first_order_saved_bytes(
                min(self.cfg.batch_size, len(d.train)), t, self.cached)
        return int(need)

    @property
    def weight_bytes(self) -> int:
        """The frozen model's bytes: decoder linears at the quantized width, the embedding at
        one byte per number when quantized, the rest (norms, A, label head) fp32; quantization
        scales are not counted."""
        if not hasattr(self, "_weight_bytes"):
            width = QUANT_BYTES[self.cfg.quantize]
            total = 0.0
            for name, tensor in self.setup.scorer.state_dict().items():
                if name.startswith("layers.") and name.endswith("weight") and tensor.dim() == 2:
                    total += width * tensor.numel()
                elif name == "embed.weight":
                    total += (4.0 if width == 4.0 else 1.0) * tensor.numel()
                else:
                    total += 4.0 * tensor.numel()
            self._weight_bytes = int(total)
        return self._weight_bytes
