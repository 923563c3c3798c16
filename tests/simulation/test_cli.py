"""The `fedprge` command as a user runs it: a subprocess, exit codes, run directories."""

import json
import os
import subprocess
import sys

import pytest

from simulation.rundir import read_jsonl

TINY = ["--set", "model=tiny", "--set", "steps=6", "--set", "eval-every-steps=3", "--set", "q=4",
        "--set", "eval-size=64", "--set", "batch-size=8", "--set", "lr=0.05", "--set", "threads=1",
        "--set", "engine=eager",  # the ExecuTorch path has its own test below
        "--set", "layers=all"]  # no frozen prefix: the tests that want one set last-1


def fedprge(*args, cwd=None):
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, "-m", "simulation.cli", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=600)


def test_train_writes_a_run_directory(tmp_path):
    out = tmp_path / "run"
    proc = fedprge("train", *TINY, "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "tiny" and config["q"] == 4
    [env] = json.loads((out / "environment.json").read_text())  # what "bit for bit" is scoped to
    assert env["versions"]["torch"].startswith("2.") and env["versions"]["flwr"] and env["cpu"]
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(7))
    assert [m["step"] for m in metrics if "test_acc" in m] == [0, 3, 6]
    log = read_jsonl(out / "update_log.jsonl")
    assert len(log) == 6 * 4 and all(isinstance(e["seed"], int) for e in log)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_acc"] == metrics[-1]["test_acc"]


def test_same_seed_same_metrics_and_existing_run_dir_refused(tmp_path):
    def clean(path):
        return [{k: v for k, v in m.items() if not k.endswith("_s")} for m in read_jsonl(path)]

    a, b = tmp_path / "a", tmp_path / "b"
    assert fedprge("train", *TINY, "--out", str(a), "--quiet").returncode == 0
    assert fedprge("train", *TINY, "--out", str(b), "--quiet").returncode == 0
    assert clean(a / "metrics.jsonl") == clean(b / "metrics.jsonl")
    again = fedprge("train", *TINY, "--out", str(a), "--quiet")
    assert again.returncode == 2 and "already exists" in again.stderr


@pytest.mark.parametrize("args, message", [
    (["--set", "nope=1"], "unknown config key 'nope'"),
    (["--set", "q=1.5"], "q='1.5' is not a valid int"),
    (["--set", "model=/no/such/model/dir"], "does not exist"),
    (["--config", "/no/such.toml"], "does not exist"),
])
def test_user_errors_are_one_line_and_exit_2(args, message):
    proc = fedprge("train", *args)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("fedprge:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_train_through_the_executorch_engine(tmp_path):
    env_cache = tmp_path / "cache"
    args = [*TINY, "--set", "steps=2", "--set", "eval-every-steps=2", "--set", f"cache={env_cache}"]
    et_run, eager_run = tmp_path / "et", tmp_path / "eager"
    proc = fedprge("train", *args, "--set", "engine=executorch", "--out", str(et_run), "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((env_cache / "programs").glob("*.pte"))) == 2  # 2q copies, and 1 for eval
    assert fedprge("train", *args, "--out", str(eager_run), "--quiet").returncode == 0
    a, b = read_jsonl(et_run / "metrics.jsonl"), read_jsonl(eager_run / "metrics.jsonl")
    for m_et, m_eager in zip(a, b, strict=True):
        if "test_acc" in m_eager:
            assert m_et["test_acc"] == m_eager["test_acc"]
            assert abs(m_et["test_loss"] - m_eager["test_loss"]) < 1e-4


def test_train_from_the_prefix_cache_equals_train_without_it(tmp_path):
    """layers=last-1: the frozen layer's output is computed once per example and cached; the
    steps only run the suffix. Same scalars and accuracies as without the cache."""
    args = [*TINY, "--set", "layers=last-1", "--set", "train-size=40"]
    cached, plain, lazy = tmp_path / "cached", tmp_path / "plain", tmp_path / "lazy"
    proc = fedprge("train", *args, "--set", "prefix-cache-fill=upfront", "--out", str(cached),
                   "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert fedprge("train", *args, "--out", str(lazy), "--quiet").returncode == 0
    proc = fedprge("train", *args, "--set", "prefix-cache=off", "--out", str(plain), "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = read_jsonl(cached / "update_log.jsonl"), read_jsonl(plain / "update_log.jsonl")
    assert [e["seed"] for e in a] == [e["seed"] for e in b]
    for x, y in zip(a, b, strict=True):
        assert abs(x["grad"] - y["grad"]) <= 1e-3 * max(1.0, abs(y["grad"]))
    for m, n in zip(read_jsonl(cached / "metrics.jsonl"), read_jsonl(plain / "metrics.jsonl"),
                    strict=True):
        assert m.get("test_acc") == n.get("test_acc")
    summary = json.loads((cached / "summary.json").read_text())
    cache = summary["prefix_cache"]
    assert cache["entries"] == 40 + 64 == cache["misses"]  # train + eval, each computed once
    assert cache["hits"] >= 6 * 8 and cache["bytes_per_example"] > 0
    assert "prefix_cache" not in json.loads((plain / "summary.json").read_text())
    # lazy (the default): only the examples the steps drew (6 x 8 of 40) and the evaluation set
    lazy_cache = json.loads((lazy / "summary.json").read_text())["prefix_cache"]
    assert 64 < lazy_cache["entries"] == lazy_cache["misses"] <= 40 + 64
    assert [m.get("test_acc") for m in read_jsonl(lazy / "metrics.jsonl")] == \
        [m.get("test_acc") for m in read_jsonl(cached / "metrics.jsonl")]
