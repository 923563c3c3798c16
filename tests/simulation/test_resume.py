"""Kill and resume: a run killed with SIGKILL part way and resumed ends exactly where an
uninterrupted run with the same config ends (wall-clock fields aside)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from simulation.checkpoint import keep_lines, load_checkpoint
from simulation.rundir import read_jsonl
from tests.simulation.test_cli import fedprge
from tests.simulation.test_federated import FED

ARGS = [*FED, "--set", "rounds=6", "--set", "strategy=trimmed-mean"]  # a strategy with state


def _kill_session(sid: int) -> None:
    """SIGKILL every process of the run's session: the driver and Ray's daemons and actors."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if os.getsid(int(proc.name)) == sid:
                    os.kill(int(proc.name), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _clean(path):
    return [{k: v for k, v in m.items() if not k.endswith("_s")} for m in read_jsonl(path)]


def test_sigkilled_run_resumes_to_the_uninterrupted_result(tmp_path):
    reference = tmp_path / "reference"
    assert fedprge("run", *ARGS, "--out", str(reference), "--quiet").returncode == 0

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "simulation.cli", "run", *ARGS, "--out",
                             str(killed), "--quiet"], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # part way: three rounds checkpointed, three to go
        ckpt = load_checkpoint(killed) if (killed / "checkpoint.pkl").exists() else None
        if ckpt is not None and ckpt.round >= 3:
            break
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.1)
    _kill_session(proc.pid)
    proc.wait(timeout=60)
    assert not (killed / "summary.json").exists()

    resumed = fedprge("run", "--resume", str(killed), "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _clean(killed / "metrics.jsonl") == _clean(reference / "metrics.jsonl")
    assert read_jsonl(killed / "update_log.jsonl") == read_jsonl(reference / "update_log.jsonl")
    want = json.loads((reference / "summary.json").read_text())
    got = json.loads((killed / "summary.json").read_text())
    assert got["final_theta_hash"] == want["final_theta_hash"]
    assert {k: v for k, v in got.items() if not k.endswith("_s")} == \
        {k: v for k, v in want.items() if not k.endswith("_s")}
    assert json.loads((killed / "clients.json").read_text()) == \
        json.loads((reference / "clients.json").read_text())

    again = fedprge("run", "--resume", str(killed))
    assert again.returncode == 2 and "already finished" in again.stderr


def test_resume_errors_are_one_line(tmp_path):
    proc = fedprge("run", "--resume", str(tmp_path))
    assert proc.returncode == 2 and "not a run directory" in proc.stderr
    proc = fedprge("run", "--resume", str(tmp_path), "--set", "q=4")
    assert proc.returncode == 2 and "drop --config, --set and --out" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_keep_lines_drops_what_came_after_the_checkpoint(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"round": 0}\n{"round": 1}\n{"round": 2}\n')
    keep_lines(path, 2)
    assert read_jsonl(path) == [{"round": 0}, {"round": 1}]


def test_an_unpicklable_strategy_is_checkpointed_without_its_state(tmp_path):
    import numpy as np

    from simulation.checkpoint import Checkpoint, save_checkpoint

    class Unpicklable:
        fn = staticmethod(lambda: None)

        def __init__(self):
            self.local = lambda: None  # lambdas do not pickle

    ckpt = Checkpoint(round=2, theta=np.zeros(3, dtype=np.float32), log_len=4, metrics_lines=3,
                      held={0: 4}, totals={"bytes_up": 10}, strategy=Unpicklable(), zero_eval={},
                      last_eval={}, elapsed_s=1.5)
    save_checkpoint(tmp_path, ckpt)
    back = load_checkpoint(tmp_path)
    assert back.strategy is None and back.round == 2 and back.held == {0: 4}
