"""Flower's supported simulation runtime, driven the way `flwr run` drives it.

`fedprge run` starts a private SuperLink (simulation runtime, Ray backend) for each run, writes the
run as a small Flower App (a pyproject.toml naming the installed ServerApp and ClientApp, with the
resolved config in its run config), submits it with `flwr run ... --stream`, and stops the
SuperLink, and every process it started, when the run ends, fails or is interrupted.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

HOST = "127.0.0.1"
CONNECTION = "fedprge"  # the SuperLink connection's name in the private FLWR_HOME
START_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0  # a SuperLink asked to stop has this long to take its children down
START_ATTEMPTS = 3  # a free port can be taken by another process before the SuperLink binds it
PR_SET_PDEATHSIG = 1  # prctl(2)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+Z\s+")


class RuntimeStartError(RuntimeError):
    """The SuperLink or the submission failed (one sentence, naming the log to read)."""


def _tool(name: str) -> str:
    """Flower's console scripts next to this interpreter (the SuperLink spawns the others by name
    from PATH, so the environment's bin directory is also put first on PATH)."""
    path = Path(sys.executable).parent / name
    if not path.is_file():
        raise RuntimeStartError(f"{name} is not installed next to {sys.executable} "
                                "(install flwr[simulation] in this environment)")
    return str(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _last_problem(path: Path) -> str:
    """The last line of the log that reports an error, else its last line, without colour codes
    and timestamps."""
    lines = [ANSI.sub("", ln).strip() for ln in path.read_text(errors="replace").splitlines()]
    lines = [ln for ln in lines if ln]
    errors = [ln for ln in lines if "ERROR" in ln or "Error" in ln]
    line = (errors or lines or ["(no output)"])[-1]
    return TIMESTAMP.sub("", line)[:300]


def _toml_string(text: str) -> str:
    # JSON's escapes (\" \\ \n \uXXXX) are all valid in a TOML basic string
    return json.dumps(text)


def write_app(app_dir: Path, run_config: dict[str, str | bool]) -> Path:
    """A Flower App holding no code: its components are the installed fedprge apps (the ClientApp
    with restartable client processes), and its run config is `run_config` (the runner's keys:
    see clients.runconfig.RUNNER_KEYS)."""
    app_dir.mkdir(parents=True, exist_ok=True)
    values = "\n".join(f"{key} = {_toml_string(v) if isinstance(v, str) else str(v).lower()}"
                       for key, v in run_config.items())
    (app_dir / "pyproject.toml").write_text(f"""\
[project]
name = "fedprge-run"
version = "0.1.0"
description = "One fedprge run: the installed fedprge ServerApp and ClientApp"
license = "Apache-2.0"

[tool.flwr.app]
publisher = "fedprge"

[tool.flwr.app.components]
serverapp = "simulation.server_app:app"
clientapp = "simulation.restartable_clients:app"

[tool.flwr.app.config]
{values}
""")
    return app_dir


@dataclass
class SuperLink:
    proc: subprocess.Popen
    env: dict[str, str]
    log: Path


def _environment(home: Path, extra: dict[str, str]) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0",
            "RAY_USAGE_STATS_ENABLED": "0", "TOKENIZERS_PARALLELISM": "false",
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), **extra}


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it when the fedprge process dies, even by SIGKILL, so
    that a killed run never goes on without the command that owns it (Linux; elsewhere the
    command's own stop on exit and Ctrl-C remains)."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _listening(pid: int, port: int) -> bool:
    """Whether process `pid` itself listens on `port` (another process holding the port, which
    a plain connect would reach, does not count)."""
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns)


def _wait_listening(link: SuperLink, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if link.proc.poll() is not None:
            raise RuntimeStartError(f"Flower's SuperLink exited at start ({_last_problem(link.log)}); "
                                    f"see {link.log}")
        if _listening(link.proc.pid, port):
            return
        time.sleep(0.1)
    raise RuntimeStartError(f"Flower's SuperLink did not listen on port {port} within "
                            f"{START_TIMEOUT_S:.0f} s; see {link.log}")


@contextmanager
def local_superlink(work: Path, log: Path, extra_env: dict[str, str]) -> Iterator[SuperLink]:
    """A SuperLink on a free local port with the simulation runtime; FLWR_HOME is WORK/home (a
    private connection named CONNECTION, so the user's own Flower config is never touched). A
    port taken by another process between choosing and binding it costs one more try."""
    for attempt in range(START_ATTEMPTS):
        link, port = _start_superlink(work, log, extra_env)
        try:
            _wait_listening(link, port)
            break
        except RuntimeStartError:
            stop_tree(link.proc.pid)
            if link.proc.poll() is None or attempt == START_ATTEMPTS - 1:
                raise
    try:
        yield link
    finally:
        stop_tree(link.proc.pid)


def _start_superlink(work: Path, log: Path, extra_env: dict[str, str]) -> tuple[SuperLink, int]:
    home = work / "home"
    home.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    (home / "config.toml").write_text(f'[superlink]\ndefault = "{CONNECTION}"\n\n'
                                      f'[superlink.{CONNECTION}]\naddress = "{HOST}:{port}"\n'
                                      "insecure = true\n")
    env = _environment(home, extra_env)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [_tool("flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess",
             "--disable-runtime-dependency-installation", "--host", HOST, "--port", str(port),
             "--database", str(work / "state.db")],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,  # Ctrl-C reaches fedprge, which stops it in order
            preexec_fn=_die_with_parent)
    return SuperLink(proc, env, log), port


def submit(link: SuperLink, app_dir: Path, federation: dict[str, object], log: Path
           ) -> subprocess.Popen:
    """`flwr run APP fedprge --stream`: it exits when the run has finished; Flower's log of the
    run (the ServerApp's output, the runtime's lines) goes to LOG."""
    spec = " ".join(f"{k}={json.dumps(v) if isinstance(v, str) else str(v).lower()}"
                    for k, v in federation.items())
    with log.open("ab") as out:
        return subprocess.Popen(
            [_tool("flwr"), "run", str(app_dir), CONNECTION, "--federation-config", spec,
             "--stream"], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=link.env, start_new_session=True, preexec_fn=_die_with_parent)


def stop_tree(pid: int) -> None:
    """SIGTERM `pid` and every process it started; see `stop_all`. Flower's SuperExec and Ray's
    daemons start their own sessions, so the tree is taken from the process table, not from a
    process group."""
    try:
        root = psutil.Process(pid)
        stop_all([root, *root.children(recursive=True)])
    except psutil.NoSuchProcess:
        return


def stop_all(procs: list[psutil.Process]) -> None:
    """SIGTERM them, give them STOP_GRACE_S to end (the SuperLink stops its SuperExec, the
    simulation shuts Ray down), then SIGKILL what is left of them and of what they started."""
    _signal_all(procs, signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=STOP_GRACE_S)
    for proc in alive:  # and whatever they started meanwhile
        try:
            procs.extend(proc.children(recursive=True))
        except psutil.NoSuchProcess:
            pass
    _signal_all(procs, signal.SIGKILL)
    psutil.wait_procs(procs, timeout=5)


def kill_all(procs: list[psutil.Process]) -> None:
    """SIGKILL those still running (orphans: nothing of theirs is worth a graceful stop)."""
    _signal_all(procs, signal.SIGKILL)
    psutil.wait_procs(procs, timeout=5)


def _signal_all(procs: list[psutil.Process], sig: int) -> None:
    for proc in procs:
        try:
            proc.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
