"""Per-round server checkpoints, so that `fedprge run --resume RUN_DIR` continues a stopped run.

After every round the server writes `checkpoint.pkl` atomically (temp file + rename): the round,
theta, how many update-log and metrics lines belong to it, which log prefix each client holds, the
byte totals, the strategy object (its state across rounds), the zero-shot and last evaluations and
the elapsed time. Nothing else needs saving: cohorts, seeds, batches, faults and DP noise are all
derived from (run seed, round, client), so a resumed round draws exactly what it would have drawn.
The clients' own state (the log each device holds) lives in `RUN_DIR/devices/`, see clients/app.py.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

CHECKPOINT = "checkpoint.pkl"


@dataclass
class Checkpoint:
    round: int
    theta: np.ndarray
    log_len: int
    metrics_lines: int
    held: dict[int, int]
    totals: dict[str, int]
    strategy: Any
    zero_eval: dict
    last_eval: dict
    elapsed_s: float


def save_checkpoint(run_dir: Path, ckpt: Checkpoint) -> None:
    try:
        data = pickle.dumps(ckpt)
    except (pickle.PicklingError, TypeError, AttributeError):
        # a plug-in strategy that cannot be pickled: a resumed run starts it afresh
        data = pickle.dumps(replace(ckpt, strategy=None))
    tmp = run_dir / (CHECKPOINT + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, run_dir / CHECKPOINT)  # a kill leaves the old checkpoint or the new, whole


def load_checkpoint(run_dir: Path) -> Checkpoint | None:
    path = run_dir / CHECKPOINT
    if not path.is_file():
        return None
    with path.open("rb") as f:
        return pickle.load(f)  # our own file, written by the run being resumed


def keep_lines(path: Path, n: int) -> None:
    """Cut a JSONL file back to its first n lines: a run killed after writing a line but before
    its checkpoint wrote lines that the resumed run will write again."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    if len(lines) != n:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(lines[:n]))
        os.replace(tmp, path)
