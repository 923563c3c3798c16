"""A run started by `fedprge run` ends when that command is gone, however it went.

Under Flower's runtime the ServerApp, Ray and the client processes live in a simulation process
that Flower's SuperExec started: the command's own stop (on success, failure, Ctrl-C) takes them
down through the SuperLink, but a command killed outright (SIGKILL, a crash) cannot. Without it,
the run would go on writing into its directory, and a `--resume` of it would race the orphan.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

import psutil

POLL_S = 0.25


def kill_own_group() -> None:
    """SIGKILL this process's group: the simulation process, Ray's daemons and the client
    processes (Flower starts them in one group)."""
    os.killpg(os.getpgrp(), signal.SIGKILL)


def stop_with_owner(owner_pid: int,
                    kill: Callable[[], None] = kill_own_group) -> threading.Thread:
    """From now on, `kill` (by default: this process's group) as soon as `owner_pid` has exited;
    returns the watching thread. The run directory is safe to stop at any moment: checkpoints
    are replaced atomically, logs appended by line."""
    try:
        owner = psutil.Process(owner_pid)  # is_running() also checks its start time: no PID reuse
    except psutil.Error:
        owner = None
    watcher = threading.Thread(target=watch_owner, args=(owner, kill),
                               name="fedprge-owner-watch", daemon=True)
    watcher.start()
    return watcher


def watch_owner(owner: psutil.Process | None, kill: Callable[[], None]) -> None:
    """Wait while `owner` runs, then `kill`. Nothing ends the wait without the kill: a watcher
    that died silently would leave the run writing into a directory whose lock is free."""
    try:
        while _running(owner):
            time.sleep(POLL_S)
    finally:
        kill()


def _running(owner: psutil.Process | None) -> bool:
    """Whether the owner still runs; any error telling it counts as gone (it may exit between
    two calls: NoSuchProcess; or no longer be ours to read: AccessDenied)."""
    if owner is None:
        return False
    try:
        return owner.is_running() and owner.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
