"""Run directories: never overwritten, and every file written atomically or appended by line."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from clients.runconfig import ConfigError


def new_run_dir(parent: str | Path, prefix: str) -> Path:
    """A directory that did not exist: PARENT/PREFIX-YYYYmmdd-HHMMSS[-n] (mkdir is atomic)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = Path(parent) / (f"{prefix}-{stamp}" + (f"-{n}" if n else ""))
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise ConfigError(f"could not create a fresh run directory under {str(parent)!r}")


def claim_run_dir(parent: str | Path, prefix: str,
                  explicit: str | Path | None = None) -> tuple[Path, int]:
    """A run directory for a new run and its lock (see try_lock_dir), to hold until the run ends:
    `explicit` if given (absent, or empty but for a lock file), else a fresh one under PARENT.
    Emptiness is checked under the lock, so of two commands given one --out only the first to
    lock it may write there; checking first and locking after let both through."""
    if not explicit:
        path = new_run_dir(parent, prefix)
    else:
        path = Path(explicit)
        if path.exists() and not path.is_dir():
            raise ConfigError(f"run directory {str(path)!r} exists and is not a directory")
        _refuse_if_not_empty(path)  # before locking: a refused directory is left as it was
        path.mkdir(parents=True, exist_ok=True)
    lock = hold_run_dir(path)
    try:
        _refuse_if_not_empty(path)  # again under the lock: another command may have written
    except ConfigError:
        os.close(lock)
        raise
    return path, lock


def _refuse_if_not_empty(path: Path) -> None:
    if path.is_dir() and any(entry.name != ".lock" for entry in path.iterdir()):
        raise ConfigError(f"run directory {str(path)!r} already exists and is not empty")


def try_lock_dir(path: Path) -> int | None:
    """An exclusive lock on PATH/.lock, held while the returned descriptor is open, or None when
    another process holds it. The kernel releases a flock when its holder dies, however it died,
    so a killed command never blocks the resume of its own directory."""
    fd = os.open(Path(path) / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def hold_run_dir(path: Path) -> int:
    """try_lock_dir, or the one-line error a user sees when another command holds PATH."""
    lock = try_lock_dir(path)
    if lock is None:
        raise ConfigError(f"run directory {str(path)!r} is in use by another fedprge command")
    return lock


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


class JsonlWriter:
    """Appends one JSON object per line and flushes, so a killed run keeps every line written."""

    def __init__(self, path: Path):
        self.path = path
        self._f = path.open("a")

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record, sort_keys=True) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
