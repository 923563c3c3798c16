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

What is read back is checked against the schema below before the server uses any of it: a
value of the wrong type or range would otherwise surface rounds later as a traceback (or a
silently wrong run), so it is a CheckpointError of one sentence naming the file and the field.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

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
    # added later: a checkpoint without them gets these defaults
    deadline_slowest_s: float = 0.0  # the slowest complete round so far (simulation/deadline.py)
    log_hash: str | None = None  # head of the hash chain over update_log.jsonl's rows
    unsure: list[int] = field(default_factory=list)  # devices whose log cursor must be asked
    consecutive_failed: int = 0  # rounds in a row without a valid reply (simulation/failures.py)
    # the virtual clock and each device's filled prefixes (simulation/virtual_clock.py,
    # device_work.py); None: the run has no devices
    virtual: dict | None = None


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
              "elapsed_s": ckpt.elapsed_s, "deadline_slowest_s": ckpt.deadline_slowest_s,
              "log_hash": ckpt.log_hash, "unsure": list(ckpt.unsure),
              "consecutive_failed": ckpt.consecutive_failed, "virtual": ckpt.virtual}
    text = json.dumps(record).encode()
    _write_atomic(run_dir / CHECKPOINT, lambda f: f.write(text))
    for old in run_dir.glob("checkpoint-*.npy"):  # earlier rounds' theta files
        if old.name != theta_name:
            old.unlink(missing_ok=True)


def load_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The run's last checkpoint, None if it has none; a CheckpointError (one sentence naming the
    file and the field) if any field does not fit its schema."""
    path = run_dir / CHECKPOINT
    if not path.is_file():
        if (run_dir / LEGACY).is_file():
            raise CheckpointError(f"{run_dir} holds a pickled checkpoint from an older version; "
                                  "it is not loaded (unpickling can run code): start the run again")
        return None
    rec = _Record(path, _read_json(path))
    return Checkpoint(
        round=rec.count("round"), theta=rec.theta(), log_len=rec.count("log_len"),
        metrics_lines=rec.count("metrics_lines"), held=rec.held(), totals=rec.numbers("totals"),
        strategy_state=rec.strategy_state(), zero_eval=rec.numbers("zero_eval"),
        last_eval=rec.numbers("last_eval"), elapsed_s=rec.seconds("elapsed_s"),
        deadline_slowest_s=rec.seconds("deadline_slowest_s", 0.0), log_hash=rec.log_hash(),
        unsure=rec.unsure(), consecutive_failed=rec.count("consecutive_failed", 0),
        virtual=rec.virtual())


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as err:  # ValueError: not UTF-8, not JSON
        raise CheckpointError(f"{path} cannot be read: {_one_line(err)}") from None


REQUIRED = object()  # `default` of a field that every checkpoint has
PARTITION_ID = re.compile(r"0|[1-9][0-9]*")  # as str(int) writes it, so ids round-trip
HEX = re.compile(r"[0-9a-f]+")


class _Record:
    """checkpoint.json's fields, each checked against its schema as it is read."""

    def __init__(self, path: Path, record: Any):
        if not isinstance(record, dict):
            raise CheckpointError(f"{path} is not a JSON object")
        self.path, self.record = path, record

    def get(self, key: str, default: Any = REQUIRED) -> Any:
        if key in self.record:
            return self.record[key]
        if default is REQUIRED:
            raise CheckpointError(f"{self.path} has no {key!r} field")
        return default

    def fail(self, key: str, what: str, value: Any) -> NoReturn:
        raise CheckpointError(f"{self.path}: {key!r} must be {what}, got {_short(value)}")

    def count(self, key: str, default: Any = REQUIRED) -> int:
        value = self.get(key, default)
        if not _is_count(value):
            self.fail(key, "an integer >= 0", value)
        return value

    def seconds(self, key: str, default: Any = REQUIRED) -> float:
        value = self.get(key, default)
        if not (_is_finite(value) and value >= 0):
            self.fail(key, "a finite number >= 0", value)
        return float(value)

    def numbers(self, key: str) -> dict[str, int | float]:
        value = self.get(key)
        if not (isinstance(value, dict) and all(map(_is_finite, value.values()))):
            self.fail(key, "an object of finite numbers", value)
        return value

    def held(self) -> dict[int, int]:
        value = self.get("held")
        if not (isinstance(value, dict) and all(PARTITION_ID.fullmatch(p) and _is_count(n)
                                                for p, n in value.items())):
            self.fail("held", "an object from partition ids to integers >= 0", value)
        return {int(p): n for p, n in value.items()}

    def strategy_state(self) -> dict[str, Any] | None:
        value = self.get("strategy_state")
        if value is not None and not isinstance(value, dict):
            self.fail("strategy_state", "null or an object", value)
        return value

    def log_hash(self) -> str | None:
        value = self.get("log_hash", None)
        if value is not None and not (isinstance(value, str) and HEX.fullmatch(value)):
            self.fail("log_hash", "null or a lowercase hex string", value)
        return value

    def unsure(self) -> list[int]:
        value = self.get("unsure", [])
        if not (isinstance(value, list) and all(map(_is_count, value))):
            self.fail("unsure", "a list of partition ids", value)
        return value

    def virtual(self) -> dict | None:
        """{"now": seconds, "times": {pid: a device's totals}, "filled": {pid: [positions]}}."""
        value = self.get("virtual", None)
        if value is None:
            return None
        what = "null or the virtual clock's state"
        if not (isinstance(value, dict) and set(value) == {"now", "times", "filled"}
                and _is_finite(value["now"]) and value["now"] >= 0
                and isinstance(value["times"], dict) and isinstance(value["filled"], dict)):
            self.fail("virtual", what, value)
        counts = ("rounds", "flops")
        seconds = ("compute_s", "radio_s", "idle_s")
        for pid, t in value["times"].items():
            if not (PARTITION_ID.fullmatch(pid) and isinstance(t, dict)
                    and set(t) == {*counts, *seconds, "energy_j"}
                    and all(_is_count(t[k]) for k in counts)
                    and all(_is_finite(t[k]) and t[k] >= 0 for k in seconds)
                    and (t["energy_j"] is None or (_is_finite(t["energy_j"])
                                                   and t["energy_j"] >= 0))):
                self.fail("virtual", what, t)
        for pid, positions in value["filled"].items():
            if not (PARTITION_ID.fullmatch(pid) and isinstance(positions, list)
                    and all(map(_is_count, positions))):
                self.fail("virtual", what, positions)
        return value

    def theta(self) -> np.ndarray:
        name = self.get("theta")
        # a plain name: the file must be the run directory's own, not one a path points to
        if not (isinstance(name, str) and name not in ("", ".", "..") and "\0" not in name
                and Path(name).name == name and "\\" not in name):
            self.fail("theta", "the name of a file in the run directory", name)
        try:
            theta = _read_theta(self.path.parent / name)
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{self.path}: 'theta' file {name} cannot be read: "
                                  f"{_one_line(err)}") from None
        if not np.isfinite(theta).all():
            raise CheckpointError(f"{self.path}: 'theta' file {name} holds non-finite values")
        return theta


# what np.save writes for a 1-D float32 array, its header padded with spaces and a newline
NPY_MAGIC = {b"\x93NUMPY\x01\x00": 2, b"\x93NUMPY\x02\x00": 4}  # -> bytes of the header length
NPY_HEADER = re.compile(r"\{'descr': '([<>]f4)', 'fortran_order': (?:False|True), "
                        r"'shape': \(([0-9]{1,12}),\), \} *\n")


def _read_theta(path: Path) -> np.ndarray:
    """A 1-D float32 .npy file. The header is matched against the one np.save writes, not
    evaluated (numpy's reader runs a Python literal parser over it, which fails in many ways on
    arbitrary bytes), and the data must be exactly as long as the shape says: a few bytes must
    not make the server allocate terabytes."""
    if path.is_symlink() or not path.is_file():
        raise ValueError("it is not a plain file")
    data = path.read_bytes()
    width = NPY_MAGIC.get(data[:8])
    if width is None:
        raise ValueError("it is not a .npy file")
    end = 8 + width + int.from_bytes(data[8:8 + width], "little")
    header = NPY_HEADER.fullmatch(data[8 + width:end].decode("latin-1"))
    if header is None:
        raise ValueError("its header does not describe a 1-D float32 array")
    descr, n = header.group(1), int(header.group(2))
    if len(data) - end != 4 * n:
        raise ValueError(f"it holds {len(data) - end} bytes of data, not the {4 * n} of its shape")
    return np.frombuffer(data, dtype=descr, offset=end).astype(np.float32)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_finite(value: Any) -> bool:
    """A finite JSON number; a bool is not a number here."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float's range
        return False


def _short(value: Any) -> str:
    """repr(value), cut so that an error stays one readable line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


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
