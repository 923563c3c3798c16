"""Kills: a run killed with SIGKILL part way and resumed, or a run that loses one client process
mid-message, ends exactly where an uninterrupted run with the same config ends (wall-clock fields
aside)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from simulation.checkpoint import keep_lines, load_checkpoint
from simulation.rundir import read_jsonl, try_lock_dir
from tests.simulation.test_cli import fedprge
from tests.simulation.test_federated import FED

ROUNDS = 6
# clipped-mean counts clipped replies across rounds: a resumed run must restore the counts
ARGS = [*FED, "--set", f"rounds={ROUNDS}", "--set", "strategy=clipped-mean",
        "--set", "strategy-args.clip=0.5"]


def _run_procs(pid: int) -> dict[int, str]:
    """pid -> command line (Ray sets it to the actor's state) of the command and every process
    it started: Flower's SuperLink and simulation process, Ray's daemons and actors."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    out = {}
    for proc in procs:
        try:
            out[proc.pid] = " ".join(proc.cmdline())
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return out


def _kill_run(pid: int) -> None:
    """SIGKILL the command and every process of its run at once."""
    _signal_run(pid, signal.SIGKILL)


def _start(out) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "simulation.cli", "run", *ARGS, "--out",
                             str(out), "--quiet"], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


RESENDS = ("resent", "messages_resent",  # a lost client process's message, sent once more
           "bytes_discovery")  # each start of a run asks every node for its partition


def _same(record: dict) -> dict:
    """A metrics or summary record without wall-clock fields and resend counts."""
    return {k: v for k, v in record.items() if not k.endswith("_s") and k not in RESENDS}


def _clean(path):
    return [_same(m) for m in read_jsonl(path)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of ARGS."""
    out = tmp_path_factory.mktemp("reference") / "run"
    proc = fedprge("run", *ARGS, "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _assert_same_run(got: Path, want: Path) -> None:
    assert _clean(got / "metrics.jsonl") == _clean(want / "metrics.jsonl")
    assert read_jsonl(got / "update_log.jsonl") == read_jsonl(want / "update_log.jsonl")
    w = json.loads((want / "summary.json").read_text())
    g = json.loads((got / "summary.json").read_text())
    assert g["final_theta_hash"] == w["final_theta_hash"]
    assert _same(g) == _same(w)
    assert json.loads((got / "clients.json").read_text()) == \
        json.loads((want / "clients.json").read_text())


def _signal_run(pid: int, sig: int) -> None:
    for p in _run_procs(pid):
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def _device_lengths(run: Path) -> dict[int, int]:
    """partition id -> log entries that simulated device holds in its storage (its cursor)."""
    out = {}
    for path in (run / "devices").glob("*.theta"):
        try:
            out[int(path.stem)] = int.from_bytes(path.read_bytes()[:8], "little")
        except (ValueError, FileNotFoundError):  # being replaced right now
            pass
    return out


def _ahead_of_checkpoint(run: Path, final: bool) -> bool:
    """A device holds more of the log than the last checkpoint says it does, and had some of it
    already: the state a kill leaves when it lands after a client stored its new log tail but
    before the server checkpointed the round. `final`: during personalization."""
    if not (run / "checkpoint.json").exists() or (run / "clients.json").exists():
        return False
    ckpt = load_checkpoint(run)
    if final != (ckpt.round == ROUNDS):
        return False
    return any(0 < ckpt.held.get(p, 0) < n for p, n in _device_lengths(run).items())


def _kill_when(run: Path, final: bool) -> None:
    """Start a run and SIGKILL it at the first moment `_ahead_of_checkpoint` holds. Each moment
    that looks right is confirmed with the whole run frozen (SIGSTOP), so the kill cannot land a
    moment later, after the checkpoint caught up."""
    proc = _start(run)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before the moment to kill it came"
        if _ahead_of_checkpoint(run, final):
            _signal_run(proc.pid, signal.SIGSTOP)
            if _ahead_of_checkpoint(run, final):
                _kill_run(proc.pid)
                proc.wait(timeout=60)
                return
            _signal_run(proc.pid, signal.SIGCONT)
        time.sleep(0.01)
    _kill_run(proc.pid)
    raise AssertionError("no moment to kill the run was seen")


@pytest.mark.parametrize("final", [False, True], ids=["mid-round", "personalization"])
def test_sigkilled_run_resumes_to_the_uninterrupted_result(tmp_path, reference, final):
    """Killed while a device already stored a log tail the checkpoint does not know of (in a
    training round, or while clients personalize after the last round), then resumed."""
    killed = tmp_path / "killed"
    _kill_when(killed, final)
    assert not (killed / "summary.json").exists()

    resumed = fedprge("run", "--resume", str(killed), "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_run(killed, reference)
    assert len(json.loads((killed / "environment.json").read_text())) == 2  # start + resume

    again = fedprge("run", "--resume", str(killed))
    assert again.returncode == 2 and "already finished" in again.stderr


def test_a_client_process_killed_mid_message_is_restarted_and_the_run_is_unchanged(
        tmp_path, reference):
    out = tmp_path / "lost-actor"
    proc = _start(out)
    deadline = time.monotonic() + 300
    victim = None
    while victim is None and time.monotonic() < deadline:
        # after round 1, the first client process seen running a message (its title says .run)
        if (out / "metrics.jsonl").exists() and len(read_jsonl(out / "metrics.jsonl")) >= 2:
            busy = [pid for pid, cmd in _run_procs(proc.pid).items()
                    if cmd.startswith("ray::ClientAppActor.run")]
            victim = busy[0] if busy else None
        assert proc.poll() is None, "the run ended before a client process could be killed"
        time.sleep(0.02)
    assert victim is not None, "no client process was seen running a message"
    os.kill(victim, signal.SIGKILL)
    try:
        _, err = proc.communicate(timeout=300)  # it must not hang
    except subprocess.TimeoutExpired:
        _kill_run(proc.pid)
        raise AssertionError("the run hung after one of its client processes was killed") from None
    assert proc.returncode == 0, err.decode()[-3000:]
    _assert_same_run(out, reference)
    # the lost message was sent again, and that is on record
    assert json.loads((out / "summary.json").read_text())["messages_resent"] >= 1
    assert json.loads((reference / "summary.json").read_text())["messages_resent"] == 0


def test_resume_errors_are_one_line(tmp_path):
    proc = fedprge("run", "--resume", str(tmp_path))
    assert proc.returncode == 2 and "not a run directory" in proc.stderr
    proc = fedprge("run", "--resume", str(tmp_path), "--set", "q=4")
    assert proc.returncode == 2 and "drop --config, --set and --out" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_live_run_is_not_resumed_by_a_second_command(tmp_path):
    """While one command holds a run directory, `--resume` of it is refused with one line and
    leaves it untouched; once the holder is gone (however it went), the lock is free."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "tiny", "engine": "eager", "rounds": 1}))
    held = try_lock_dir(run)  # as the live run's command holds it
    try:
        proc = fedprge("run", "--resume", str(run))
    finally:
        os.close(held)
    assert proc.returncode == 2 and "is in use by another fedprge command" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in run.iterdir()) == [".lock", "config.json"]  # nothing written
    os.close(try_lock_dir(run))  # released with its holder


def test_keep_lines_drops_what_came_after_the_checkpoint(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"round": 0}\n{"round": 1}\n{"round": 2}\n')
    keep_lines(path, 2)
    assert read_jsonl(path) == [{"round": 0}, {"round": 1}]


def test_checkpoints_are_data_only_and_keep_the_strategys_state(tmp_path):
    import numpy as np

    from simulation.checkpoint import Checkpoint, save_checkpoint

    for r in (1, 2):
        save_checkpoint(tmp_path, Checkpoint(
            round=r, theta=np.arange(3, dtype=np.float32) * r, log_len=4 * r, metrics_lines=r + 1,
            held={0: 4, 7: 8}, totals={"bytes_up": 10}, strategy_state={"clipped": 3},
            zero_eval={"test_acc": 0.5}, last_eval={}, elapsed_s=1.5))
    back = load_checkpoint(tmp_path)
    assert back.round == 2 and back.held == {0: 4, 7: 8} and back.strategy_state == {"clipped": 3}
    np.testing.assert_array_equal(back.theta, [0.0, 2.0, 4.0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2.npy", "checkpoint.json"]


def test_a_pickled_checkpoint_is_never_loaded(tmp_path):
    """Resuming a run directory must not run code from it: a legacy checkpoint.pkl is refused
    with one line, and the payload it carries never runs."""
    import pickle

    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "tiny"}))
    (run / "checkpoint.pkl").write_bytes(pickle.dumps(Payload()))
    proc = fedprge("run", "--resume", str(run))
    assert proc.returncode == 2 and "not loaded (unpickling can run code)" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "pwned").exists()


def test_strategies_say_what_their_state_is_or_that_they_cannot():
    from strategies import ScalarStrategy
    from strategies.loader import BUILT_IN

    assert ScalarStrategy().state_dict() is None  # the server then warns and starts it afresh
    for cls in BUILT_IN.values():  # every built-in says what its state is
        assert cls().state_dict() is not None
    clipped = BUILT_IN["clipped-mean"]()
    clipped.load_state_dict({"clipped": 5, "replies": 9})
    assert clipped.summary()["clipped"] == 5 and clipped.state_dict() == {"clipped": 5, "replies": 9}
