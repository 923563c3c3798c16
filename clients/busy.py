"""Which client processes are in the middle of a message, so that a run can stop those still
working once it is over.

Flower's simulation waits for every message it handed out before it shuts down, so a client that
never returns (a hung device, or a straggler sleeping past its deadline) would keep the finished
run from exiting. While a client process handles a message it keeps a marker in the devices'
directory, named by its PID and its start time (so that a PID reused by another process is never
mistaken for it); when the run is over, `stop_busy` kills the processes whose markers remain.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

BUSY_DIR = ".busy"


def _started(pid: int) -> str:
    return f"{psutil.Process(pid).create_time():.3f}"


@contextmanager
def busy(device_dir: Path | None, partition_id: int) -> Iterator[None]:
    """Mark this process busy with a message of `partition_id` for the duration of the block."""
    if device_dir is None:
        yield
        return
    marker = Path(device_dir) / BUSY_DIR / f"{os.getpid()}_{_started(os.getpid())}_{partition_id}"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    try:
        yield
    finally:
        marker.unlink(missing_ok=True)


def stop_busy(device_dir: Path) -> list[int]:
    """SIGKILL every other process still marked busy; returns the partitions they were serving."""
    served = []
    for marker in sorted((Path(device_dir) / BUSY_DIR).glob("*_*_*")):
        pid_text, started, partition = marker.name.split("_")
        pid = int(pid_text)
        try:
            alive = pid != os.getpid() and _started(pid) == started
            if alive:
                os.kill(pid, signal.SIGKILL)
                served.append(int(partition))
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass  # it ended on its own (or died earlier, leaving its marker behind)
        marker.unlink(missing_ok=True)
    return served
