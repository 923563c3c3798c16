"""A run whose every client fails stops with their error, on the command line as a user sees it;
a resumed run with stragglers keeps the uninterrupted run's deadlines, log for log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from clients.faults import draw_faults
from clients.runconfig import load_config
from simulation.rundir import read_jsonl
from simulation.server_app import sample_cohort
from tests.simulation.test_cli import fedprge
from tests.simulation.test_federated import FED
from tests.simulation.test_resume import _assert_same_run, _kill_run

# Loaded by every Python process that has its folder on PYTHONPATH (the command, Flower's
# simulation process, Ray's client processes): once clients/worker.py is imported, every local
# training raises, as a client with a bug would.
BROKEN_CLIENT = '''
import importlib.abc, importlib.util, sys

class _Break(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "clients.worker":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            def boom(*args, **kwargs):
                raise RuntimeError("boom")
            module.ClientWorker.train = boom

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, _Break())
'''


def test_a_run_whose_clients_all_fail_exits_non_zero_with_their_error(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BROKEN_CLIENT)
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(site), TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, "-m", "simulation.cli", "run", *FED, "--set",
                           "rounds=6", "--set", "max-failed-rounds=2", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("fedprge: error: ") and "RuntimeError: boom" in last, last
    assert "no client sent a valid reply in 2 rounds in a row (rounds 1-2)" in last
    assert f"fedprge run --resume {out}" in last
    rounds = [m for m in read_jsonl(out / "metrics.jsonl") if m["round"] > 0]
    assert [m["errors"] for m in rounds] == [{"client-error": "RuntimeError: boom"}] * 2
    assert not (out / "summary.json").exists()
    # resumable: test_server_faults.py resumes such a run, once fixed, to its end
    assert json.loads((out / "checkpoint.json").read_text())["round"] == 2


STRAGGLING = ["--set", "rounds=5", "--set", "straggle-prob=0.2", "--set", "straggle-s=45",
              "--set", "round-deadline-factor=2", "--set", "round-deadline-min-s=15",
              "--set", "round-deadline-first-s=120", "--set", "personal-steps=0",
              "--set", "client-eval-size=0"]


def _straggling_seed() -> int:
    """A seed whose only straggler is sampled in round 3: the first round of the resumed process
    below, which decides its fate with the deadline it restored."""
    for seed in range(300):
        cfg = load_config(None, [a for a in [*FED, *STRAGGLING] if a != "--set"] + [f"seed={seed}"])
        late = [(t, p) for t in range(1, cfg.rounds + 1) for p in sample_cohort(cfg, t)
                if draw_faults(cfg, t, p).straggle]
        if [t for t, _ in late] == [3]:
            return seed
    raise AssertionError("no seed fits")


def test_a_resumed_run_drops_the_straggler_the_uninterrupted_run_dropped(tmp_path):
    """The uninterrupted run's round 3 deadline is 2 x its slowest complete round (at least 15 s);
    the straggler answers 45 s late and is dropped. Killed after round 2 and resumed, the run must
    drop it too: before the slowest round was checkpointed, the resumed process gave its first
    round the first-round allowance (120 s here) and aggregated the straggler."""
    args = [*FED, *STRAGGLING, "--set", f"seed={_straggling_seed()}"]
    reference = tmp_path / "reference"
    proc = fedprge("run", *args, "--out", str(reference), "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    late = [m.get("rejected_reasons", {}).get("late", 0) for m in read_jsonl(
        reference / "metrics.jsonl")]
    assert late == [0, 0, 0, 1, 0, 0]
    killed = tmp_path / "killed"
    run = subprocess.Popen([sys.executable, "-m", "simulation.cli", "run", *args, "--out",
                            str(killed), "--quiet"], start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not ((killed / "metrics.jsonl").exists()
               and len(read_jsonl(killed / "metrics.jsonl")) >= 3):  # rounds 0, 1, 2 recorded
        assert run.poll() is None and time.monotonic() < deadline, "the run ended too early"
        time.sleep(0.05)
    _kill_run(run.pid)
    run.wait(timeout=60)
    if run.returncode != -signal.SIGKILL:
        raise AssertionError(f"the run exited on its own ({run.returncode})")
    resumed = fedprge("run", "--resume", str(killed), "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_run(killed, reference)
