"""What a run ran on, recorded in every run directory (`environment.json`): the versions of the
libraries that decide its numbers, the product's version and git commit, and the machine's CPU.
"Two runs with one config give the same metrics, bit for bit" holds for the same builds on the
same kind of CPU: this file is what to compare when they differ.

One record per process that worked on the run: the one that started it, then one per
`--resume`, which may have run elsewhere.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from simulation.rundir import write_json

LIBRARIES = ("torch", "executorch", "flwr", "ray", "transformers", "numpy", "fedprge")
FILE = "environment.json"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    """The product's commit (with "-dirty" for local changes) when it runs from a git checkout."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    return {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "python": sys.version.split()[0], "platform": platform.platform(),
            "cpu": _cpu(), "cores": os.cpu_count(),
            "versions": {name: _version(name) for name in LIBRARIES},
            "git_commit": _git_commit()}


def record_environment(run_dir: Path) -> None:
    """Append this process's environment to RUN_DIR/environment.json."""
    path = Path(run_dir) / FILE
    records = json.loads(path.read_text()) if path.is_file() else []
    write_json(path, records + [environment()])
