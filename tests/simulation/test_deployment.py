"""Beyond one process: Flower's deployment engine on loopback. A SuperLink and three SuperNodes
run as separate processes, each SuperNode told its data partition with `--node-config`, and
`flwr run . <federation>` runs the product's app on them (one round, every node), as a
deployment across machines would (docs/how-to/flwr-run-and-ray-cluster.md)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from simulation.rundir import read_jsonl

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NODES = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(stack: ExitStack, args: list[str], log: Path, env: dict) -> subprocess.Popen:
    """A Flower process in its own session, killed with everything it started at the end."""
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)

    def stop():
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    stack.callback(stop)
    return proc


def _wait_for(log: Path, text: str, count: int, proc: subprocess.Popen, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while log.read_text(errors="replace").count(text) < count:
        assert proc.poll() is None, log.read_text()[-2000:]
        assert time.monotonic() < deadline, f"no {text!r} in {log}: " + log.read_text()[-2000:]
        time.sleep(0.2)


def test_a_superlink_and_three_supernodes_on_loopback_run_the_app(tmp_path):
    home, out, logs = tmp_path / "flwr-home", tmp_path / "runs", tmp_path / "logs"
    home.mkdir()
    logs.mkdir()
    port = _free_port()
    # the federation `flwr run . loopback` names: where its SuperLink listens
    (home / "config.toml").write_text(
        f'[superlink.loopback]\naddress = "127.0.0.1:{port}"\ninsecure = true\n')
    env = dict(os.environ, FLWR_HOME=str(home), FLWR_TELEMETRY_ENABLED="0",
               FLWR_DISABLE_UPDATE_CHECK="1", PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    with ExitStack() as stack:
        # without --disable-runtime-dependency-installation the SuperLink installs the app's
        # requirements with uv into a fresh environment, and resolves torch to the CUDA build
        link = _start(stack, [str(BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1",
                              "--port", str(port), "--disable-runtime-dependency-installation"],
                      logs / "superlink.log", env)
        _wait_for(logs / "superlink.log", "Uvicorn running", 1, link)
        for i in range(NODES):
            _start(stack, [str(BIN / "flower-supernode"), "--insecure", "--superlink",
                           f"127.0.0.1:{port}", "--port", str(_free_port()), "--node-config",
                           f"partition-id={i} num-partitions={NODES}"],
                   logs / f"supernode-{i}.log", env)
        _wait_for(logs / "superlink.log", "Activated node_id", NODES, link)
        run = subprocess.run(
            [str(BIN / "flwr"), "run", ".", "loopback", "--stream", "--run-config",
             f"rounds=1 num-clients={NODES} clients-per-round={NODES} engine='eager' "
             f"runs-dir='{out}'"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (run_dir,) = out.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    rounds = [m for m in read_jsonl(run_dir / "metrics.jsonl") if m["round"] > 0]
    assert [m["replies"] for m in rounds] == [NODES]  # every node answered
    assert summary["log_len"] == 2 * 8  # K x q (pyproject's run config)
    clients = json.loads((run_dir / "clients.json").read_text())
    assert sorted(c["client"] for c in clients) == list(range(NODES))
    assert all("personal_acc" in c for c in clients)
