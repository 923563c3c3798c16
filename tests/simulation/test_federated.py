"""End-to-end federated runs on the tiny model: the real Flower simulation engine on Ray."""

import json

import pytest
import torch

from prge.update_log import LogEntry, replay, theta_hash
from simulation.config import load_config
from simulation.rundir import read_jsonl
from simulation.server_app import sample_cohort
from tests.simulation.test_cli import fedprge

ROUNDS, K, Q = 4, 2, 4
FED = ["--set", "model=tiny", "--set", "engine=eager",  # ExecuTorch: its own test below
       "--set", f"rounds={ROUNDS}", "--set", "num-clients=6",
       "--set", "clients-per-round=2", "--set", f"local-steps={K}", "--set", f"q={Q}",
       "--set", "lr=0.05", "--set", "eval-every=2", "--set", "eval-size=32",
       "--set", "personal-steps=1", "--set", "client-eval-size=8", "--set", "batch-size=8",
       "--set", "partition=iid"]


@pytest.fixture(scope="module")
def two_actor_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fed") / "run"
    proc = fedprge("run", *FED, "--set", "client-cpus=1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


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
        # K*q doubles plus a fixed envelope (metadata, keys, hash): see test_protocol
        assert 8 * K * Q < per_reply < 8 * K * Q + 600
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
    proc = fedprge("run", *FED, "--set", "client-cpus=2", "--out", str(other), "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]

    def clean(path):
        return [{k: v for k, v in m.items() if not k.endswith("_s")} for m in read_jsonl(path)]

    assert clean(out / "metrics.jsonl") == clean(other / "metrics.jsonl")
    assert json.loads((out / "clients.json").read_text()) == \
        json.loads((other / "clients.json").read_text())


def test_federated_run_through_the_executorch_engine(tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "run"
    proc = fedprge("run", *FED, "--set", "engine=executorch", "--set", f"cache={cache}",
                   "--set", "rounds=2", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # lowered once by the driver (2q copies and 1), then only loaded by the clients and server
    assert len(list((cache / "programs").glob("*.pte"))) == 2
    rounds = [m for m in read_jsonl(out / "metrics.jsonl") if m["round"] > 0]
    assert all(m["replies"] == 2 and m["rejected"] == 0 for m in rounds)


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
