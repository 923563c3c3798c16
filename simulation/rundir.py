"""Run directories: never overwritten, and every file written atomically or appended by line."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from clients.runconfig import ConfigError


def new_run_dir(parent: str | Path, prefix: str, explicit: str | Path | None = None) -> Path:
    """`explicit` if given (must be absent or empty), else PARENT/PREFIX-YYYYmmdd-HHMMSS[-n]."""
    if explicit:
        path = Path(explicit)
        if path.exists() and any(path.iterdir()):
            raise ConfigError(f"run directory {str(path)!r} already exists and is not empty")
        path.mkdir(parents=True, exist_ok=True)
        return path
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = Path(parent) / (f"{prefix}-{stamp}" + (f"-{n}" if n else ""))
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise ConfigError(f"could not create a fresh run directory under {str(parent)!r}")


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
