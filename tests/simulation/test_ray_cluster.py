"""`ray-address`: attach a simulation to a Ray cluster that is already running."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.simulation.test_cli import fedprge


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_attaches_to_a_running_ray_head(tmp_path):
    port = _free_port()
    ray = str(Path(sys.executable).parent / "ray")
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    # Ray's unix socket paths must stay short: pytest's tmp_path is too deep for them.
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    head = subprocess.Popen(
        [ray, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--num-cpus=2", "--include-dashboard=false", f"--temp-dir={ray_tmp}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait for the head's GCS port
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert head.poll() is None, "ray start exited early"
            time.sleep(0.5)
        out = tmp_path / "run"
        proc = fedprge("run", "--set", "model=tiny", "--set", "engine=eager", "--set", "rounds=2",
                       "--set", "num-clients=4", "--set", "local-steps=2",
                       "--set", "clients-per-round=2", "--set", "q=4", "--set", "eval-size=32",
                       "--set", "personal-steps=0", "--set", "client-eval-size=0",
                       "--set", f"ray-address=127.0.0.1:{port}", "--out", str(out), "--quiet")
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["log_len"] == 2 * 2 * 4
    finally:
        _stop(head)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert head.poll() is not None


def _stop(head: subprocess.Popen) -> None:
    """SIGTERM the head's process group (the head and the Ray daemons it started)."""
    for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 30)):
        try:
            os.killpg(head.pid, sig)
        except ProcessLookupError:
            return
        try:
            head.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
