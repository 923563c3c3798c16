"""The progress of a run that happens in another process, read from its metrics.jsonl.

Under Flower's runtime the ServerApp runs in a simulation process whose output goes to Flower's
log; the terminal's progress bar (rounds, accuracy, bytes so far) is drawn here instead, from the
lines the server appends after each round.
"""

from __future__ import annotations

import json
import subprocess
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


def _show(bar: tqdm, records: list[dict]) -> None:
    rounds = [r for r in records if r.get("round", 0) >= 1]
    bar.n = len(rounds)
    evaluated = [r for r in records if "test_acc" in r]
    post = {}
    if evaluated:
        post = {"acc": f"{evaluated[-1]['test_acc']:.3f}", "cal": f"{evaluated[-1]['test_acc_cal']:.3f}"}
    post["up"] = f"{sum(r['bytes_up'] for r in rounds):,}B"
    post["down"] = f"{sum(r['bytes_down'] for r in rounds):,}B"
    bar.set_postfix(post, refresh=False)
    bar.refresh()


def follow(proc: subprocess.Popen, metrics: Path, rounds: int, progress: bool,
           check: Callable[[], bool]) -> None:
    """Until `proc` exits or `check` returns False: redraw the bar when metrics.jsonl grows."""
    bar = tqdm(total=rounds, desc="rounds", unit="round", disable=not progress)
    size = -1
    try:
        while proc.poll() is None and check():
            now = metrics.stat().st_size if metrics.is_file() else -1
            if progress and now != size:
                size = now
                _show(bar, _records(metrics))
            time.sleep(POLL_S)
        if progress:
            _show(bar, _records(metrics))
    finally:
        bar.close()
