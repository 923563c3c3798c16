"""End-to-end federated runs on the tiny model: the real Flower simulation engine on Ray."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from clients.faults import draw_faults
from clients.runconfig import load_config
from prge.update_log import LogEntry, replay, theta_hash
from simulation.rundir import read_jsonl
from simulation.server_app import sample_cohort
from strategies import ScalarStrategy
from tests.simulation.test_cli import fedprge

ROUNDS, K, Q = 4, 2, 4
FED = ["--set", "model=tiny", "--set", "engine=eager",  # ExecuTorch: its own test below
       "--set", f"rounds={ROUNDS}", "--set", "num-clients=6",
       "--set", "clients-per-round=2", "--set", f"local-steps={K}", "--set", f"q={Q}",
       "--set", "lr=0.05", "--set", "eval-every=2", "--set", "eval-size=32",
       "--set", "personal-steps=1", "--set", "client-eval-size=8", "--set", "batch-size=8",
       "--set", "partition=iid",
       # every layer adapted (no frozen prefix) at a constant lr: the tests that want a prefix
       # cache or a schedule set them
       "--set", "layers=all", "--set", "lr-schedule=constant"]


def _fed_run(out, *sets, no_tracebacks: bool = False) -> list[dict]:
    """A FED run with extra `--set key=value`s; returns its per-round metrics (round >= 1).
    `no_tracebacks`: also check that nothing printed a traceback (expected faults are quiet)."""
    args = [a for kv in sets for a in ("--set", kv)]
    proc = fedprge("run", *FED, *args, "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (no_tracebacks and "Traceback" in proc.stderr), proc.stderr[-3000:]
    return [m for m in read_jsonl(out / "metrics.jsonl") if m["round"] > 0]


def _replayed(out) -> torch.Tensor:
    """theta rebuilt from the run's update log alone."""
    entries = [LogEntry(e["seed"], e["grad"], e["lr"], e["q"])
               for e in read_jsonl(out / "update_log.jsonl")]
    dim = json.loads((out / "summary.json").read_text())["adapter_dim"]
    return replay(torch.zeros(dim), entries)


def test_every_client_rebuilds_the_servers_theta_each_round(two_actor_run):
    out, _ = two_actor_run
    metrics = read_jsonl(out / "metrics.jsonl")
    rounds = [m for m in metrics if m["round"] > 0]
    assert [m["round"] for m in rounds] == list(range(1, ROUNDS + 1))
    # a reply is only aggregated if the client's theta hash equals the server's
    assert all(m["replies"] == 2 and m["rejected"] == 0 for m in rounds)
    assert [m["log_len"] for m in rounds] == [K * Q * t for t in range(1, ROUNDS + 1)]
    assert len({m["theta_hash"] for m in metrics}) == ROUNDS + 1
    # some client sat out rounds and then caught up from the log tail alone
    cfg = load_config(None, [a for a in FED if a != "--set"])
    seen_in = {}
    for t in range(1, ROUNDS + 1):
        for pid in sample_cohort(cfg, t):
            seen_in.setdefault(pid, []).append(t)
    assert any(rs[-1] - rs[0] >= len(rs) for rs in seen_in.values() if len(rs) > 1)


def test_update_log_alone_rebuilds_the_final_theta(two_actor_run):
    out, _ = two_actor_run
    summary = json.loads((out / "summary.json").read_text())
    entries = [LogEntry(e["seed"], e["grad"], e["lr"], e["q"])
               for e in read_jsonl(out / "update_log.jsonl")]
    assert len(entries) == ROUNDS * K * Q
    theta = replay(torch.zeros(summary["adapter_dim"]), entries)
    assert theta_hash(theta) == summary["final_theta_hash"]


def test_bytes_are_seeds_and_scalars(two_actor_run):
    out, proc = two_actor_run
    rounds = [m for m in read_jsonl(out / "metrics.jsonl") if m["round"] > 0]
    for m in rounds:
        per_reply = m["bytes_up"] / m["replies"]
        # K*q float32 scalars plus a fixed envelope (metadata, keys, hash): see test_protocol
        assert 4 * K * Q < per_reply < 4 * K * Q + 600
    # downloads grow with the log tail a client has not seen, never with the adapter size
    summary = json.loads((out / "summary.json").read_text())
    assert summary["bytes_down"] < 8 * 3 * K * Q * ROUNDS * 2 + 2 * ROUNDS * 1200
    assert summary["bytes_down"] < 4 * summary["adapter_dim"]
    assert "bytes up per client per round" in proc.stdout


def test_personalization_is_reported_per_client(two_actor_run):
    out, _ = two_actor_run
    clients = json.loads((out / "clients.json").read_text())
    assert [c["client"] for c in clients] == list(range(6))
    assert all(0 <= c["global_acc"] <= 1 and 0 <= c["personal_acc"] <= 1 for c in clients)


def test_same_seed_same_metrics_with_one_or_two_ray_actors(two_actor_run, tmp_path):
    out, _ = two_actor_run
    other = tmp_path / "one-actor"
    proc = fedprge("run", *FED, "--set", "ray-cpus=1", "--out", str(other), "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]

    def clean(path):
        return [{k: v for k, v in m.items() if not k.endswith("_s")} for m in read_jsonl(path)]

    assert clean(out / "metrics.jsonl") == clean(other / "metrics.jsonl")
    assert json.loads((out / "clients.json").read_text()) == \
        json.loads((other / "clients.json").read_text())


def test_snapshot_catch_up_changes_the_bytes_not_the_run(two_actor_run, tmp_path):
    """Devices sent theta_t itself rebuild the same theta as devices sent the log: same hashes,
    accuracies and clients, other download bytes. (At this adapter size and log length `auto`
    chose the log for every message, each one no larger than its snapshot.)"""
    out, _ = two_actor_run
    snap = tmp_path / "snapshot"
    got = _fed_run(snap, "catch-up=snapshot")
    want = [m for m in read_jsonl(out / "metrics.jsonl") if m["round"] > 0]
    moved = ("bytes_down", "log_entries_down", "snapshots_down")

    def clean(rows):
        return [{k: v for k, v in m.items() if not k.endswith("_s") and k not in moved}
                for m in rows]

    assert clean(got) == clean(want)

    def scores(path):  # each evaluation message's bytes differ with the catch-up, by design
        return [{k: v for k, v in c.items() if k not in ("bytes_down", "bytes_up")}
                for c in json.loads((path / "clients.json").read_text())]

    assert scores(snap) == scores(out)
    assert all(m["log_entries_down"] == 0 for m in got) and sum(m["snapshots_down"] for m in got)
    assert all(m["snapshots_down"] == 0 for m in want) and sum(m["log_entries_down"] for m in want)
    assert all(a["bytes_down"] <= b["bytes_down"] for a, b in zip(want, got, strict=True))


def test_federated_run_through_the_executorch_engine(tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "run"
    proc = fedprge("run", *FED, "--set", "engine=executorch", "--set", f"cache={cache}",
                   "--set", "rounds=2", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # lowered once by the driver (2q copies and 1), then only loaded by the clients and server
    assert len(list((cache / "programs").glob("*.pte"))) == 2
    rounds = [m for m in read_jsonl(out / "metrics.jsonl") if m["round"] > 0]
    assert all(m["replies"] == 2 and m["rejected"] == 0 for m in rounds)
    # library deprecations, XNNPACK's CPU probing, client processes' output and Flower's debug
    # records stay off the terminal even after lowering (which gives the root logger a handler)
    for noise in ("DeprecationWarning", "ExperimentalWarning", "ClientAppActor", "DEBUG:flwr",
                  "[cpuinfo_utils.cpp"):
        assert noise not in proc.stderr, proc.stderr[-3000:]


@pytest.mark.parametrize("method", ["fo", "zo-dense"])
def test_dense_baselines_share_the_runner_and_upload_the_adapter(tmp_path, method):
    out = tmp_path / method
    proc = fedprge("run", *FED, "--set", f"method={method}", "--set", "fo-lr=0.5",
                   "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    metrics = read_jsonl(out / "metrics.jsonl")
    rounds = [m for m in metrics if m["round"] > 0]
    # every client's reply was made from the server's own theta (hash checked) and aggregated
    assert all(m["replies"] == 2 and m["rejected"] == 0 for m in rounds)
    assert len({m["theta_hash"] for m in metrics}) == ROUNDS + 1  # theta moved every round
    dim = summary["adapter_dim"]
    for m in rounds:  # the dense B (float32) each way, plus the same kind of envelope
        assert 4 * dim < m["bytes_up"] / m["replies"] < 4 * dim + 600
        assert 4 * dim < m["bytes_down"] / 2 < 4 * dim + 600
    assert summary["log_len"] == 0 and summary["final_theta_hash"] == rounds[-1]["theta_hash"]
    clients = json.loads((out / "clients.json").read_text())
    assert all(0 <= c["personal_acc"] <= 1 for c in clients)


def test_crashing_and_offline_clients_are_counted_and_never_corrupt_theta(tmp_path):
    out = tmp_path / "faulty"
    rounds = _fed_run(out, "crash-prob=0.3", "dropout-prob=0.5", "rounds=6", no_tracebacks=True)
    crashes = sum(m.get("rejected_reasons", {}).get("crash", 0) for m in rounds)
    dropped = sum(m["dropped"] for m in rounds)
    assert crashes > 0 and dropped > 0
    # every reached client either crashed or was aggregated: nothing else went wrong
    assert all(m["replies"] + m["rejected"] + m["dropped"] == 2 for m in rounds)
    assert all(set(m.get("rejected_reasons", {})) <= {"crash"} for m in rounds)
    theta = _replayed(out)
    assert len(read_jsonl(out / "update_log.jsonl")) == \
        K * Q * sum(1 for m in rounds if m["replies"] > 0)
    assert torch.isfinite(theta).all()
    assert theta_hash(theta) == json.loads((out / "summary.json").read_text())["final_theta_hash"]


def test_replies_after_the_round_deadline_are_discarded(tmp_path):
    out = tmp_path / "late"
    # simulated delays: an hour past a 30 s deadline, and the run does not wait for it
    t0 = time.monotonic()
    rounds = _fed_run(out, "straggle-prob=1", "straggle-s=3600", "round-deadline-s=30",
                      "rounds=2", "personal-steps=0", "client-eval-size=0")
    assert time.monotonic() - t0 < 600  # slept stragglers would take two hours
    assert [m["rejected_reasons"] for m in rounds] == [{"late": 2}, {"late": 2}]
    assert json.loads((out / "summary.json").read_text())["log_len"] == 0  # nothing applied


def test_int8_scalars_on_the_wire_are_what_the_log_holds_and_clients_replay(tmp_path):
    """scalar-bits=8: a byte per scalar up, and the log holds the aggregate as the wire carries
    it (a power-of-two step per round's block), so every client rebuilt the server's theta."""
    out = tmp_path / "int8"
    rounds = _fed_run(out, "scalar-bits=8", "personal-steps=0", "client-eval-size=0")
    assert all(m["replies"] == 2 and "rejected_reasons" not in m for m in rounds)  # no mismatch
    for m in rounds:
        assert K * Q < m["bytes_up"] / m["replies"] < K * Q + 600
    log = read_jsonl(out / "update_log.jsonl")
    for r in {e["round"] for e in log}:
        grads = np.array([e["grad"] for e in log if e["round"] == r])
        step = 2.0 ** np.ceil(np.log2(np.abs(grads).max() / 127))
        assert np.array_equal(grads / step, np.rint(grads / step))  # on the int8 grid
        assert np.abs(grads / step).max() <= 127
    summary = json.loads((out / "summary.json").read_text())
    assert theta_hash(_replayed(out)) == summary["final_theta_hash"]


def _hung_seed(sets: list[str]) -> tuple[int, int]:
    """(seed, client) for a run whose only hang is that client's, in round 2."""
    for seed in range(300):
        cfg = load_config(None, [*sets, f"seed={seed}"])
        hung = [(t, p) for t in range(1, cfg.rounds + 1) for p in sample_cohort(cfg, t)
                if draw_faults(cfg, t, p).hang]
        if [t for t, _ in hung] == [2]:
            return seed, hung[0][1]
    raise AssertionError("no seed fits")


def test_a_hung_client_cannot_stall_the_run(tmp_path):
    """One client hangs in round 2 (its process blocks). The server's wait (12 s; round 1, where
    the client processes load the model, waits round-deadline-first-s) cuts it off as `timeout`,
    and when the rounds are over its process is stopped so that the run exits."""
    out = tmp_path / "hung"
    sets = ["num-clients=3", "clients-per-round=2", "hang-prob=0.2", "rounds=3",
            "round-deadline-s=12", "personal-steps=0", "client-eval-size=0"]
    seed, hung = _hung_seed(sets)
    args = [a for kv in [*sets, f"seed={seed}"] for a in ("--set", kv)]
    proc = subprocess.run([sys.executable, "-m", "simulation.cli", "run", *FED, *args, "--out",
                           str(out), "--quiet"], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rounds = [m for m in read_jsonl(out / "metrics.jsonl") if m["round"] > 0]
    assert [m.get("rejected_reasons", {}) for m in rounds] == [{}, {"timeout": 1}, {}]
    assert ("stopped the processes of 1 client(s) still busy after their deadline: "
            f"[{hung}]") in proc.stderr


def test_byzantine_clients_are_simulated_and_the_median_absorbs_them(tmp_path):
    out = tmp_path / "byz"
    rounds = _fed_run(out, "byzantine-fraction=0.34", "strategy=median", "clients-per-round=3")
    assert sum(m["adversaries_in_cohort"] for m in rounds) > 0
    assert all(m["replies"] == 3 for m in rounds)  # scaled scalars are valid-looking: accepted
    # with at most one adversary among 3, the median lies between two honest scalars: the size
    # of honest ones (a few units here), far below the x100 attack
    outvoted = {m["round"] for m in rounds if m["adversaries_in_cohort"] == 1}
    grads = [abs(e["grad"]) for e in read_jsonl(out / "update_log.jsonl") if e["round"] in outvoted]
    assert outvoted and grads and max(grads) < 50


def test_a_client_claiming_more_examples_than_it_holds_is_rejected(tmp_path):
    """examples-lie adversaries claim 10**12 examples to take the mean's weight: the server knows
    each partition's size, so every such reply is rejected and named, and the rest aggregate."""
    out = tmp_path / "lie"
    rounds = _fed_run(out, "byzantine-fraction=0.34", "byzantine-attack=examples-lie",
                      "clients-per-round=3", "personal-steps=0", "client-eval-size=0")
    lies = [m.get("rejected_reasons", {}).get("too-many-examples", 0) for m in rounds]
    assert lies == [m["adversaries_in_cohort"] for m in rounds] and sum(lies) > 0
    assert all(m["replies"] == 3 - n for m, n in zip(rounds, lies, strict=True))


class Flaky(ScalarStrategy):
    """Raises in round 2, returns NaN in round 3, the mean otherwise; and fails any round whose
    replies are not in partition order (arrival order would make float sums irreproducible)."""

    def aggregate(self, server_round, replies):
        pids = [r.partition_id for r in replies]
        assert pids == sorted(pids), f"replies out of order: {pids}"
        if server_round == 2:
            raise ZeroDivisionError("plug-in bug")
        grads = np.mean([r.grads for r in replies], axis=0)
        return grads * np.nan if server_round == 3 else grads


def test_a_failing_strategy_loses_its_round_and_nothing_else(tmp_path):
    out = tmp_path / "flaky"
    rounds = {m["round"]: m for m in _fed_run(out, "strategy=tests.simulation.test_federated:Flaky",
                                              "personal-steps=0", "client-eval-size=0")}
    assert rounds[2]["aggregate_error"] == "ZeroDivisionError: plug-in bug"
    assert rounds[3]["aggregate_rejected"] is True
    assert [rounds[t]["log_len"] for t in (1, 2, 3, 4)] == [K * Q, K * Q, K * Q, 2 * K * Q]
    assert rounds[2]["theta_hash"] == rounds[1]["theta_hash"] == rounds[3]["theta_hash"]
    summary = json.loads((out / "summary.json").read_text())
    assert theta_hash(_replayed(out)) == summary["final_theta_hash"]


def test_suffix_adapter_run_lowers_prefix_and_suffix_programs_once(tmp_path):
    """layers=last-1 through ExecuTorch: the driver lowers the prefix program and one suffix
    program per token bucket and copy count before the clients start; they only load them."""
    cache, out = tmp_path / "cache", tmp_path / "run"
    proc = fedprge("run", *FED, "--set", "engine=executorch", "--set", f"cache={cache}",
                   "--set", "layers=last-1", "--set", "max-length=32", "--set", "rounds=2",
                   "--set", "prefix-cache-fill=upfront",
                   "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # prefix + {16, 32} tokens x {2q, 1} copies
    assert len(list((cache / "programs").glob("*.pte"))) == 1 + 2 * 2
    rounds = [m for m in read_jsonl(out / "metrics.jsonl") if m["round"] > 0]
    assert all(m["replies"] == 2 and m["rejected"] == 0 for m in rounds)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prefix_cache"]["entries"] == 32  # the server's evaluation set, cached once
    assert summary["client_steps"] == 2 * 2 * K  # rounds x replies x local steps
    assert np.isfinite(_replayed(out).numpy()).all()
    # each device that trained or was evaluated keeps its hidden states in its own storage
    stores = sorted((out / "devices").glob("*.prefix.npz"))
    assert len(stores) == 6  # personalization reaches every client
    with np.load(stores[0], allow_pickle=False) as stored:
        assert len(stored.files) > 0 and stored[stored.files[0]].shape[1] == 64  # tiny hidden


def test_devices_add_virtual_time_through_the_real_runtime(two_actor_run, tmp_path):
    """FED with devices=phones on the SuperLink and Ray: the same training, bytes and clients'
    accuracy as without, plus the devices' time in the metrics, summary and printed summary."""
    out, _ = two_actor_run
    timed = tmp_path / "phones"
    proc = fedprge("run", *FED, "--set", "ray-cpus=2", "--set", "devices=phones",
                   "--out", str(timed))
    assert proc.returncode == 0, proc.stderr[-3000:]
    virtual = ("virtual_s", "round_virtual_s", "round_flops", "devices_work")

    def clean(path):
        return [{k: v for k, v in m.items() if not k.endswith("_s") and k not in virtual}
                for m in read_jsonl(path)]

    assert clean(timed / "metrics.jsonl") == clean(out / "metrics.jsonl")
    rounds = [m for m in read_jsonl(timed / "metrics.jsonl") if m["round"] > 0]
    assert all(m["round_virtual_s"] > 0 for m in rounds)
    assert [len(m["devices_work"]) for m in rounds] == [m["replies"] for m in rounds]
    summary = json.loads((timed / "summary.json").read_text())
    assert summary["virtual_s"] == rounds[-1]["virtual_s"] and summary["energy_j"] > 0
    assert "virtual time on the devices (rounds)" in proc.stdout
