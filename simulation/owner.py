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

import psutil

POLL_S = 0.25


def stop_with_owner(owner_pid: int) -> None:
    """From now on, SIGKILL this process's group (the simulation process, Ray's daemons and the
    client processes: Flower starts them in one group) as soon as `owner_pid` has exited. The run
    directory is safe to stop at any moment: checkpoints are replaced atomically, logs appended
    by line."""
    try:
        owner = psutil.Process(owner_pid)  # is_running() also checks its start time: no PID reuse
    except psutil.NoSuchProcess:
        owner = None

    def watch() -> None:
        while owner is not None and owner.is_running() and owner.status() != psutil.STATUS_ZOMBIE:
            time.sleep(POLL_S)
        os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=watch, name="fedprge-owner-watch", daemon=True).start()
