"""Per-round server checkpoints, so that `fedprge run --resume RUN_DIR` continues a stopped run.

After every round the server writes `checkpoint.json` and theta as `checkpoint-<round>.npy`:
the round, how many update-log and metrics lines belong to it, which log prefix each client
holds, the byte totals, the strategy's state (`ScalarStrategy.state_dict()`, JSON values), the
zero-shot and last evaluations and the elapsed time. Nothing else needs saving: cohorts, seeds,
batches, faults and DP noise are all derived from (run seed, round, client), so a resumed round
draws exactly what it would have drawn. The clients' own state (the log each device holds) lives
in `RUN_DIR/devices/`, see clients/app.py.

Only data is read back (JSON, and .npy without pickle), so a run directory from someone else can
be resumed without running their code. The theta file is written first under its round's name
and the JSON, which names it, replaces the old one atomically: a kill leaves the old checkpoint or
the new one, whole.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CHECKPOINT = "checkpoint.json"
LEGACY = "checkpoint.pkl"  # written by versions before 0.2: never unpickled


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from (one sentence)."""


@dataclass
class Checkpoint:
    round: int
    theta: np.ndarray  # (D,) float32
    log_len: int
    metrics_lines: int
    held: dict[int, int]
    totals: dict[str, Any]
    strategy_state: dict[str, Any] | None  # None: the strategy could not say what its state is
    zero_eval: dict
    last_eval: dict
    elapsed_s: float


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(run_dir: Path, ckpt: Checkpoint) -> None:
    theta_name = f"checkpoint-{ckpt.round}.npy"
    _write_atomic(run_dir / theta_name, lambda f: np.save(f, ckpt.theta, allow_pickle=False))
    record = {"round": ckpt.round, "theta": theta_name, "log_len": ckpt.log_len,
              "metrics_lines": ckpt.metrics_lines,
              "held": {str(p): n for p, n in sorted(ckpt.held.items())},
              "totals": dict(ckpt.totals), "strategy_state": ckpt.strategy_state,
              "zero_eval": ckpt.zero_eval, "last_eval": ckpt.last_eval,
              "elapsed_s": ckpt.elapsed_s}
    text = json.dumps(record).encode()
    _write_atomic(run_dir / CHECKPOINT, lambda f: f.write(text))
    for old in run_dir.glob("checkpoint-*.npy"):  # earlier rounds' theta files
        if old.name != theta_name:
            old.unlink(missing_ok=True)


def load_checkpoint(run_dir: Path) -> Checkpoint | None:
    path = run_dir / CHECKPOINT
    if not path.is_file():
        if (run_dir / LEGACY).is_file():
            raise CheckpointError(f"{run_dir} holds a pickled checkpoint from an older version; "
                                  "it is not loaded (unpickling can run code): start the run again")
        return None
    try:
        rec = json.loads(path.read_text())
        theta = np.load(run_dir / Path(rec["theta"]).name, allow_pickle=False)
        return Checkpoint(
            round=int(rec["round"]), theta=theta, log_len=int(rec["log_len"]),
            metrics_lines=int(rec["metrics_lines"]),
            held={int(p): int(n) for p, n in rec["held"].items()}, totals=dict(rec["totals"]),
            strategy_state=rec["strategy_state"], zero_eval=rec["zero_eval"],
            last_eval=rec["last_eval"], elapsed_s=float(rec["elapsed_s"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path} cannot be read: {err}") from None


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
