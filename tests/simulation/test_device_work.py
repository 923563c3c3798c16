"""The server's count of a device's work equals PyTorch's count of the work the device really does:
a real ClientWorker round under FlopCounterMode, on the tiny model, for each way a step runs."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from clients.runconfig import load_config
from clients.worker import ClientWorker
from prge.perturb import derive_seed
from simulation.device_work import DeviceWork

SETS = ["model=tiny", "engine=eager", "num-clients=3", "clients-per-round=2", "partition=iid",
        "local-steps=2", "q=2", "batch-size=4", "client-eval-size=4", "personal-steps=2", "targets=q,v,down"]


def _counted(fn, *args) -> int:
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return int(counter.get_total_flops())


@pytest.mark.parametrize("sets", [
    [],  # lazy fill, packed suffix
    ["prefix-cache-fill=upfront"],
    ["suffix-layout=padded"],
    ["mode=sequential"],
    ["layers=all"],  # no frozen prefix: the whole model per step
    ["method=fo"],
    ["method=fo", "prefix-cache-fill=upfront"],
    ["batch-order=length"],
    ["personalization=ditto"],  # a second adapter's K steps in each round
    ["personalization=local", "method=fo"],
    ["personalization=mixture", "personalization-args.alpha=auto"],  # 5 evaluations to choose
    ["personalization=split"],
], ids=lambda s: ",".join(s) or "default")
def test_the_servers_count_is_what_the_device_runs(sets):
    cfg = load_config(None, [*SETS, *sets])
    worker = ClientWorker(cfg)
    work = DeviceWork(cfg, worker.setup, worker.partitions)
    dim, q, k = worker.setup.scorer.dim, cfg.q, cfg.local_steps
    # K more steps per round of Ditto's or local's own adapter
    steps = 2 * k if cfg.personalization in ("ditto", "local", "mixture", "split") else k
    vector = 2 * dim * steps if cfg.method == "fo" else 6 * q * dim * steps  # not matrix products
    theta = torch.zeros(dim)
    for server_round, pid in ((1, 0), (2, 0), (2, 1)):  # a second round: no second fill
        seeds = [derive_seed(cfg.seed, "round", server_round, j) for j in range(k * q)]
        if cfg.method == "fo":
            real = _counted(worker.train_dense, pid, theta, server_round, cfg.eps, cfg.lr)
        else:
            real = _counted(worker.train, pid, theta.clone(), server_round, seeds, cfg.eps, cfg.lr)
        assert work.train_round(pid, server_round, 0) - vector == real
    if cfg.method != "fo":  # personalization: its method's work and two evaluations
        real = _counted(worker.personalize, 2, theta, cfg.personal_steps)
        # finetune's personal steps (Ditto and local evaluate the adapter they trained)
        vector = 6 * q * dim * cfg.personal_steps * (cfg.personalization == "finetune")
        assert work.personalize(2, 0, cfg.rounds) - vector == real


def test_replaying_log_entries_is_counted_per_entry():
    cfg = load_config(None, SETS)
    worker = ClientWorker(cfg)
    work = DeviceWork(cfg, worker.setup, worker.partitions)
    other = DeviceWork(cfg, worker.setup, worker.partitions)
    assert work.train_round(0, 1, 10) - other.train_round(0, 1, 0) == 10 * 2 * worker.setup.scorer.dim


def test_memory_grows_with_the_examples_cached_and_first_order_activations():
    prge = load_config(None, SETS)
    worker = ClientWorker(prge)
    work = DeviceWork(prge, worker.setup, worker.partitions)
    fo = DeviceWork(load_config(None, [*SETS, "method=fo"]), worker.setup, worker.partitions)
    int8 = DeviceWork(load_config(None, [*SETS, "engine=executorch", "quantize=int8"]),
                      worker.setup, worker.partitions)
    weights = sum(t.numel() * 4 for t in worker.setup.scorer.state_dict().values())
    assert work.weight_bytes == weights
    assert int8.weight_bytes < weights / 2
    assert work.memory_bytes(0) > weights  # prefix rows and adapter copies on top
    assert fo.memory_bytes(0) > work.memory_bytes(0) - 4 * work.dim * 2 * prge.q
