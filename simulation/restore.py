"""The update log of a stopped run, read back and checked, never replayed.

A checkpoint stores theta itself, so resuming does not need to rebuild it from the log (that
costs one randn(D) per entry: a resume at round 1,000 would take 100 times longer than at round
10). What a resume must know is that the log file on disk is the log that theta stands for: the
server keeps a hash chain over update_log.jsonl's rows (`chain_digest`, one blake2b per row) and
stores its head in every checkpoint; the rows are validated as data (prge/update_log.py) and
hashed again on resume. A changed, cut or reordered row changes the head; the theta file is
checked against the theta hash the round's metrics line recorded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from prge.update_log import LogEntry, entries_from_rows, theta_hash
from simulation.checkpoint import Checkpoint, CheckpointError, keep_lines
from simulation.rundir import read_jsonl

EMPTY_DIGEST = hashlib.blake2b(b"fedprge update log", digest_size=16).hexdigest()


def chain_digest(previous: str, row: dict) -> str:
    """The chain's head after one more update-log row (its JSON, keys sorted: what the file holds)."""
    h = hashlib.blake2b(previous.encode(), digest_size=16)
    h.update(json.dumps(row, sort_keys=True).encode())
    return h.hexdigest()


@dataclass
class RestoredLog:
    log: list[LogEntry]
    rounds: list[int]  # the round of each block of `block` entries
    digest: str


def restore_log(run_dir: Path, ckpt: Checkpoint, block: int) -> RestoredLog:
    """The log the checkpoint stands for, after cutting back metrics.jsonl and update_log.jsonl
    to the checkpoint's lines; a CheckpointError (one line) when the files do not match it."""
    keep_lines(run_dir / "metrics.jsonl", ckpt.metrics_lines)
    keep_lines(run_dir / "update_log.jsonl", ckpt.log_len)
    where = run_dir / "update_log.jsonl"
    try:
        rows = read_jsonl(where) if where.is_file() else []
        log = entries_from_rows(rows)
        metrics = read_jsonl(run_dir / "metrics.jsonl")
    except (OSError, ValueError, RecursionError) as err:  # RecursionError: absurdly nested JSON
        raise CheckpointError(f"{where}: {err}") from None
    if len(log) != ckpt.log_len or len(log) % block:
        raise CheckpointError(f"{where} holds {len(log)} entries, the checkpoint {ckpt.log_len}")
    digest = EMPTY_DIGEST
    for row in rows:
        digest = chain_digest(digest, row)
    if ckpt.log_hash is not None and digest != ckpt.log_hash:
        raise CheckpointError(f"{where} is not the log the checkpoint of round {ckpt.round} "
                              "was written with")
    recorded = metrics[-1].get("theta_hash") if metrics else None
    if recorded != theta_hash(torch.from_numpy(ckpt.theta.copy())):
        raise CheckpointError(f"{run_dir}/checkpoint.json: its theta is not the theta of round "
                              f"{ckpt.round} in metrics.jsonl")
    return RestoredLog(log, [int(r["round"]) for r in rows[::block]], digest)
