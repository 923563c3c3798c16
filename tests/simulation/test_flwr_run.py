"""`flwr run .` drives the same ServerApp/ClientApp through Flower's own local SuperLink."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from simulation.rundir import read_jsonl

ROOT = Path(__file__).resolve().parents[2]


def _superlink_pids(flwr_home: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "flower-superlink" in cmd and str(flwr_home) in cmd:
                pids.append(int(proc.name))
    return pids


def _hung_seed() -> int:
    """A seed whose run (5 clients, 2 a round, 2 rounds) has one hung device, in round 2."""
    from clients.faults import draw_faults
    from clients.runconfig import load_config
    from simulation.server_app import sample_cohort

    for seed in range(300):
        cfg = load_config(None, ["rounds=2", "num-clients=5", "clients-per-round=2",
                                 "hang-prob=0.3", f"seed={seed}"])
        hung = [t for t in (1, 2) for p in sample_cohort(cfg, t) if draw_faults(cfg, t, p).hang]
        if hung == [2]:
            return seed
    raise AssertionError("no seed fits")


def test_flwr_run_completes_and_writes_a_run_directory(tmp_path):
    """...with a device that hangs in round 2: the deadline cuts it off and its
    process is stopped when the rounds are over (Flower would wait for it), and the devices'
    state, kept in a folder of the Flower run, is gone with the run."""
    from clients.app import default_device_dir

    home, out = tmp_path / "flwr-home", tmp_path / "runs"
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, FLWR_HOME=str(home), FLWR_TELEMETRY_ENABLED="0",
               FLWR_DISABLE_UPDATE_CHECK="1", FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
               PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))
    flwr = str(Path(bin_dir) / "flwr")
    try:
        # --stream: the command returns when the run has ended
        start = subprocess.run(
            [flwr, "run", ".", "--stream", "--federation-config", "num-supernodes=5",
             "--run-config", f"rounds=2 num-clients=5 clients-per-round=2 engine='eager' runs-dir='{out}' "
             f"seed={_hung_seed()} hang-prob=0.3 round-deadline-s=12"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert start.returncode == 0, start.stdout + start.stderr
        listing = subprocess.run([flwr, "list", "--format", "json"], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=60)
        (run,) = json.loads(listing.stdout)["runs"]
        assert run["status"] == "finished:completed", run
        (run_dir,) = out.iterdir()
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["rounds"] == 2 and summary["log_len"] == 2 * 2 * 8
        rounds = [m for m in read_jsonl(run_dir / "metrics.jsonl") if m["round"] > 0]
        assert [m.get("rejected_reasons", {}) for m in rounds] == [{}, {"timeout": 1}]
        assert not default_device_dir(int(run["run-id"])).exists()
    finally:
        for pid in _superlink_pids(home):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while _superlink_pids(home) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _superlink_pids(home)
