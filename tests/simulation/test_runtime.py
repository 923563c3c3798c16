"""`fedprge run` on Flower's supported runtime (a local SuperLink) gives exactly what Flower's
deprecated in-process `run_simulation` gave for the same config, and cleans up after itself."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from clients.runconfig import load_config
from simulation.rundir import read_jsonl
from tests.simulation.test_federated import FED

ROOT = Path(__file__).resolve().parents[2]


def _same(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.endswith("_s")}  # wall-clock fields aside


RUNTIME = ("flower-superlink", "flower-superexec", "flwr-simulation", "raylet", "gcs_server",
           "ClientAppActor")


def _runtime_pids() -> set[int]:
    """Live processes of Flower's runtime or Ray, whoever started them."""
    pids = set()
    for p in psutil.process_iter(["cmdline", "status"]):
        line = " ".join(p.info["cmdline"] or [])
        if p.info["status"] != psutil.STATUS_ZOMBIE and any(n in line for n in RUNTIME):
            pids.add(p.pid)
    return pids


def test_supported_runtime_equals_the_in_process_one(tmp_path, two_actor_run):
    new, _ = two_actor_run  # FED with two actors, on the SuperLink runtime
    cfg = load_config(None, [*[FED[i + 1] for i in range(0, len(FED), 2)], "ray-cpus=2"])
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    old = tmp_path / "in-process"
    ref = subprocess.run([sys.executable, "-m", "tests.simulation.in_process",
                          str(tmp_path / "config.json"), str(old)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]

    assert [_same(m) for m in read_jsonl(new / "metrics.jsonl")] == \
        [_same(m) for m in read_jsonl(old / "metrics.jsonl")]
    assert read_jsonl(new / "update_log.jsonl") == read_jsonl(old / "update_log.jsonl")
    for name in ("summary.json", "clients.json"):
        got, want = (json.loads((d / name).read_text()) for d in (new, old))
        assert (_same(got) if name == "summary.json" else got) == \
            (_same(want) if name == "summary.json" else want)


def _start(out, *sets) -> subprocess.Popen:
    """A FED run; SIGINT back to its default first (a shell's background job ignores it, and a
    Python started that way would ignore Ctrl-C too)."""
    args = [a for kv in sets for a in ("--set", kv)]
    return subprocess.Popen([sys.executable, "-m", "simulation.cli", "run", *FED, *args, "--out",
                             str(out), "--quiet"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _after_round(out, n: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while (len(read_jsonl(out / "metrics.jsonl")) if (out / "metrics.jsonl").exists() else 0) <= n:
        assert proc.poll() is None and time.monotonic() < deadline, "the run never got there"
        time.sleep(0.1)


def test_a_dead_simulation_process_ends_the_command_with_one_line(tmp_path):
    before = _runtime_pids()
    out = tmp_path / "run"
    proc = _start(out, "rounds=100")
    _after_round(out, 0, proc)  # the zero-shot record: the runtime is up
    (sim,) = [p for p in psutil.Process(proc.pid).children(recursive=True)
              if "flwr-simulation" in " ".join(p.cmdline())]
    sim.kill()  # as the OOM killer would
    _, err = proc.communicate(timeout=60)  # Flower itself would wait for a heartbeat timeout
    assert proc.returncode == 1
    assert err.strip().splitlines()[-1].startswith("fedprge: error: the simulation stopped before "
                                                   f"finishing; see {out.resolve()}/flower.log")
    assert f"fedprge run --resume {out.resolve()}" in err
    assert _runtime_pids() - before == set()


def test_a_run_does_not_outlive_its_command_even_killed_outright(tmp_path):
    before = _runtime_pids()
    out = tmp_path / "run"
    proc = _start(out, "rounds=100")
    _after_round(out, 0, proc)  # the zero-shot record: the runtime is up
    proc.kill()  # SIGKILL: the command cannot stop anything itself
    proc.wait()
    deadline = time.monotonic() + 20
    while _runtime_pids() - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _runtime_pids() - before == set()
    rounds = len(read_jsonl(out / "metrics.jsonl"))
    time.sleep(3)
    assert len(read_jsonl(out / "metrics.jsonl")) == rounds  # nothing goes on writing the run


def test_ctrl_c_stops_the_run_and_everything_it_started(tmp_path):
    before = _runtime_pids()
    out = tmp_path / "run"
    proc = _start(out, "rounds=100")
    _after_round(out, 0, proc)  # the zero-shot record: the runtime is up
    proc.send_signal(signal.SIGINT)  # what the terminal sends the command on Ctrl-C
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "fedprge: interrupted"
    assert _runtime_pids() - before == set()
