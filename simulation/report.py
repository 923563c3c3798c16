"""`fedprge report`: one markdown table row per run, for pasting into notes or a pull request.

Numbers come from summary.json; a run killed before writing it still gets a row, rebuilt from
metrics.jsonl (the last evaluation, the bytes summed over the rounds it finished) and marked
"(incomplete)", so a half-finished sweep can be read without waiting for it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from simulation.rundata import Run, load_runs

HEADER = ["run", "method", "strategy", "q", "K", "clients/round", "final acc (raw / cal)",
          "best cal acc (round)", "client personalized acc", "bytes up", "bytes down",
          "up / client / round", "wall time"]


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def size(n: float | None) -> str:
    """Binary units: a seeds-and-scalars upload is tens of bytes, a dense one megabytes."""
    if n is None:
        return "-"
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,.0f} B"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _strategy(config: dict[str, Any]) -> str:
    name = config.get("strategy")
    if name is None:
        return "-"
    args = config.get("strategy-args") or {}
    inner = ", ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in args.items())
    return f"{name}({inner})" if inner else str(name)


def _totals(run: Run) -> dict[str, Any]:
    """What summary.json would say, from metrics.jsonl alone (for a killed run)."""
    rounds = [m for m in run.metrics if m.get("round", 0) > 0]
    evals = run.evals()
    last = evals[-1] if evals else {}
    up = sum(m.get("bytes_up", 0) for m in rounds)
    per_round = run.config.get("clients-per-round")
    return {"final_acc": last.get("test_acc"), "final_acc_cal": last.get("test_acc_cal"),
            "client_personal_acc": None, "bytes_up": up,
            "bytes_down": sum(m.get("bytes_down", 0) for m in rounds),
            "bytes_up_per_client_round": up / (len(rounds) * per_round) if rounds and per_round else None,
            "wall_s": run.metrics[-1].get("elapsed_s") if run.metrics else None}


def row(run: Run) -> list[str]:
    s = run.summary if run.summary is not None else _totals(run)
    cfg = run.config
    scored = [m for m in run.evals() if m.get("test_acc_cal") is not None]
    best = max(scored, key=lambda m: m["test_acc_cal"], default=None)  # first of ties: earliest
    best_text = "-" if best is None else \
        f"{pct(best['test_acc_cal'])} ({best.get('round', best.get('step', '?'))})"
    label = run.label + ("" if run.summary is not None else " (incomplete)")
    return [label, run.method if cfg else "-", _strategy(cfg), str(cfg.get("q", "-")),
            str(cfg.get("local-steps", "-")), str(cfg.get("clients-per-round", "-")),
            f"{pct(s.get('final_acc'))} / {pct(s.get('final_acc_cal'))}", best_text,
            pct(s.get("client_personal_acc")), size(s.get("bytes_up")), size(s.get("bytes_down")),
            size(s.get("bytes_up_per_client_round")), duration(s.get("wall_s"))]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # a pipe in a label would split the markdown cell


def table(runs: list[Run]) -> str:
    align = ["---"] * 3 + ["--:"] * (len(HEADER) - 3)  # text left, numbers right
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row(run)) + " |" for run in runs]
    return "\n".join(lines) + "\n"


def report(paths: list[str | Path], out: str | Path | None = None) -> str:
    text = table(load_runs(paths))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
    return text
