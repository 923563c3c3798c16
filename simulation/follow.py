"""The progress of a run that happens in another process, read from its metrics.jsonl.

Under Flower's runtime the ServerApp runs in a simulation process whose output goes to Flower's
log; the terminal's progress bar (rounds, accuracy, bytes so far) is drawn here instead, from the
lines the server appends after each round.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

POLL_S = 0.5


def _records(metrics: Path) -> list[dict]:
    if not metrics.is_file():
        return []
    out = []
    for line in metrics.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written: read it next time
            break
    return out


def progress_fields(last: dict | None, up: int, down: int,
                    errors: dict[str, str] | None, virtual_s: float | None = None,
                    clients: dict | None = None) -> dict[str, str]:
    """The progress line's figures: the last evaluation, the last client evaluation's mean and
    10th-percentile personalized accuracy (`client-eval-every`), bytes so far, the devices'
    virtual time (with `devices`), and the latest round's first error (a run whose clients fail
    says why on the terminal, not only in metrics.jsonl)."""
    post = {}
    if last:
        post = {"acc": f"{last['test_acc']:.3f}", "cal": f"{last['test_acc_cal']:.3f}"}
    if clients and "client_personal_acc" in clients:
        post["pers"] = (f"{clients['client_personal_acc']:.3f}"
                        f"/p10 {clients['client_personal_p10']:.3f}")
    post.update(up=f"{up:,}B", down=f"{down:,}B")
    if virtual_s is not None:
        post["virtual"] = virtual_time(virtual_s)
    if errors:
        kind = sorted(errors)[0]
        post["error"] = f"{kind}: {errors[kind]}"[:120]
    return post


def virtual_time(seconds: float) -> str:
    """Virtual time for the progress line: 42s, 7.5min, 3.20h."""
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}min"
    return f"{seconds / 3600:.2f}h"


def _show(bar: tqdm, records: list[dict]) -> None:
    rounds = [r for r in records if r.get("round", 0) >= 1]
    bar.n = len(rounds)
    evaluated = [r for r in records if "test_acc" in r]
    post = progress_fields(evaluated[-1] if evaluated else None,
                           sum(r["bytes_up"] for r in rounds), sum(r["bytes_down"] for r in rounds),
                           rounds[-1].get("errors") if rounds else None,
                           rounds[-1].get("virtual_s") if rounds else None,
                           next((r for r in reversed(rounds) if "client_personal_acc" in r), None))
    bar.set_postfix(post, refresh=False)
    bar.refresh()


class LogRelay:
    """Passes on to stderr, as they come, the lines of Flower's log of the run that are addressed
    to the user: the server's notices ("fedprge: ...") and program lowering in the run's own
    processes (on a cold cache the ServerApp may lower a program before the command does)."""

    PREFIXES = ("fedprge: ", "lowering the ", "exported ", "program cache over ")

    def __init__(self, log: Path, start: int):
        self.log, self.offset = log, start

    def pump(self) -> None:
        if not self.log.is_file() or self.log.stat().st_size <= self.offset:
            return
        with self.log.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        done = chunk.rfind(b"\n") + 1  # whole lines only; the rest is read next time
        self.offset += done
        for line in chunk[:done].decode(errors="replace").splitlines():
            if line.startswith(self.PREFIXES):
                tqdm.write(line, file=sys.stderr)


def follow(proc: subprocess.Popen, metrics: Path, rounds: int, progress: bool,
           check: Callable[[], bool], relay: LogRelay) -> None:
    """Until `proc` exits or `check` returns False: redraw the bar when metrics.jsonl grows and
    pass on the log lines addressed to the user."""
    bar = tqdm(total=rounds, desc="rounds", unit="round", disable=not progress)
    size = -1
    try:
        while proc.poll() is None and check():
            relay.pump()
            now = metrics.stat().st_size if metrics.is_file() else -1
            if progress and now != size:
                size = now
                _show(bar, _records(metrics))
            time.sleep(POLL_S)
        if progress:
            _show(bar, _records(metrics))
    finally:
        relay.pump()
        bar.close()
