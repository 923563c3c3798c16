"""`fedprge report --rounds`: accuracy and cumulative cost at every evaluation round, one row
per run and round (or per setting and round, mean ± 95 % CI over its seeds), from
metrics.jsonl: the learning curve as a table, for a page or a paper's appendix."""

from __future__ import annotations

from typing import Any

from simulation.rundata import Run, SeedGroup, cumulative_bytes
from simulation.units import duration, mean_known, pct, pct_ci, size

RUN_HEADER = ["run", "round", "raw acc", "calibrated acc", "bytes up (cumulative)",
              "bytes down (cumulative)", "elapsed"]
SEED_HEADER = ["setting", "seeds", "round", "raw acc, 95 % CI", "calibrated acc, 95 % CI",
               "bytes up (cumulative, mean)", "bytes down (cumulative, mean)", "elapsed (mean)"]


def curve(run: Run) -> dict[int, dict[str, Any]]:
    """round -> accuracy, cumulative bytes (None for a run that counts none) and elapsed seconds
    at each evaluation record of `run`."""
    totals = cumulative_bytes(run)
    out = {}
    for i, m in enumerate(run.metrics):
        if "test_acc" not in m:
            continue
        up, down = totals[i] if totals else (None, None)
        out[int(m.get("round", 0))] = {"acc": m.get("test_acc"), "acc_cal": m.get("test_acc_cal"),
                                       "up": up, "down": down, "elapsed": m.get("elapsed_s")}
    return out


def run_rows(runs: list[Run]) -> list[list[str]]:
    rows = []
    for run in runs:
        label = run.label or run.path.name
        for t, p in sorted(curve(run).items()):
            rows.append([label, str(t), pct(p["acc"]), pct(p["acc_cal"]), size(p["up"]),
                         size(p["down"]), duration(p["elapsed"])])
    return rows


def group_rows(groups: list[SeedGroup]) -> list[list[str]]:
    """Every round that some seed evaluated; a seed that has not reached it (a killed run)
    leaves it out of that round's mean."""
    rows = []
    for group in groups:
        curves = [curve(r) for r in group.runs]
        seeds = ",".join(str(r.config.get("seed", "?")) for r in group.runs)
        for t in sorted({t for c in curves for t in c}):
            at = [c[t] for c in curves if t in c]
            col = {key: [p[key] for p in at] for key in ("acc", "acc_cal", "up", "down", "elapsed")}
            rows.append([group.label, f"{len(at)} ({seeds})", str(t), pct_ci(col["acc"]),
                         pct_ci(col["acc_cal"]), size(mean_known(col["up"])), size(mean_known(col["down"])),
                         duration(mean_known(col["elapsed"]))])
    return rows
