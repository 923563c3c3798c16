"""`fedprge crossover`: where a method wins in time, as one device figure varies across fleets.

A seeds-only upload costs nothing on a fast uplink and a dense one costs a lot on a slow one; a
first-order step costs a backward pass on every device. Which method reaches a target accuracy
first on the devices therefore depends on the fleet, and the crossover is where it changes hands.
This re-times finished runs (made with `devices`, simulation/retime.py: exact, no training) on a
family of fleets: the `--devices` profile with one figure (`uplink-mbps`, `downlink-mbps`,
`gflops-fp32`, `gflops-int8`, `rtt-ms`) set to each value for every class, and reports for each
value and setting (runs that differ only in seed) the devices' virtual time until calibrated
accuracy first reached each target: the mean over the seeds that reached it, and how many did;
"first" names the fastest setting among those whose every seed reached the target.

With `--out PAGE` it writes PAGE.md (the command, what the runs ran on, the table), PAGE.json
(every number) and PAGE.png (time to the first target against the varied figure, log-log).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clients.devices import DeviceProfileError, classes_of, load_profiles, profile_path
from clients.runconfig import config_from_mapping
from simulation.cost_to_target import first_reach
from simulation.retime import replay_clock
from simulation.rundata import Run, RunDataError, load_runs, seed_groups
from simulation.stats import mean_ci
from simulation.units import duration

VARIES = ("uplink-mbps", "downlink-mbps", "gflops-fp32", "gflops-int8", "rtt-ms")


def parse_vary(text: str) -> tuple[str, list[float]]:
    """"uplink-mbps=0.1,1,10" -> ("uplink-mbps", [0.1, 1.0, 10.0]) (RunDataError otherwise)."""
    key, _, values = text.partition("=")
    if key not in VARIES:
        raise RunDataError(f"--vary {text!r}: the figure is one of {', '.join(VARIES)}")
    try:
        numbers = [float(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise RunDataError(f"--vary {text!r}: the values must be numbers") from None
    if not numbers or any(v <= 0 and key != "rtt-ms" or v < 0 for v in numbers):
        raise RunDataError(f"--vary {text!r}: give one or more positive values")
    return key, numbers


def _time_to(run: Run, classes, target: float, name: str) -> tuple[float | None, float]:
    """(virtual seconds until `target` first reached or None, the whole run's virtual time) of
    `run` re-timed on `classes` drawn per client as the run drew its own."""
    cfg = config_from_mapping(run.config, saved=True)
    metrics = copy.deepcopy(run.metrics)
    devices = [classes[i] for i in classes_of(classes, cfg.num_clients, cfg.seed)]
    clock = replay_clock(run.path, cfg, metrics, devices, name)
    hit = first_reach(dataclasses.replace(run, metrics=metrics), target)
    return (None if hit is None else hit.virtual_s), clock.now


def crossover(paths: list[str | Path], devices: str, vary: str, targets: Sequence[float],
              out: str | Path | None = None, command: str | None = None) -> str:
    """The markdown table (and, with `out`, the page, JSON and figure) described above."""
    if not targets:
        raise RunDataError("crossover needs at least one --target")
    key, values = parse_vary(vary)
    try:
        base = load_profiles(profile_path(devices))
    except DeviceProfileError as err:
        raise RunDataError(str(err)) from None
    if profile_path(devices).suffix == ".csv":
        raise RunDataError("crossover varies a class profile (.toml or a shipped set), not "
                           "per-client rows")
    runs = load_runs(paths)
    groups = seed_groups(runs)
    field = key.replace("-", "_")
    results: list[dict[str, Any]] = []
    for value in values:
        classes = [dataclasses.replace(c, **{field: value}) for c in base]
        name = f"{devices} with {key}={value:g}"
        for group in groups:
            for target in targets:
                times = [_time_to(r, classes, target, name)[0] for r in group.runs]
                reached = [t for t in times if t is not None]
                results.append({key: value, "setting": group.label, "target": target,
                                "seeds": len(times), "reached": len(reached),
                                "virtual_s": mean_ci(reached)[0] if reached else None})
    text = _table(results, key, values, [g.label for g in groups], targets)
    if out:
        _write(Path(out), text, results, key, runs, command, devices, targets)
    return text


def _cell(row: dict[str, Any]) -> str:
    if row["virtual_s"] is None:
        return "not reached"
    shown = duration(row["virtual_s"])
    return shown if row["seeds"] == 1 else f"{shown} ({row['reached']}/{row['seeds']})"


def _table(results: list[dict], key: str, values: list[float], settings: list[str],
           targets: Sequence[float]) -> str:
    header = [key] + [f"{s}: to {100 * t:g} %" for t in targets for s in settings] + \
             [f"first to {100 * t:g} %" for t in targets]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["--:"] * len(header)) + "|"]
    for value in values:
        cells = [f"{value:g}"]
        firsts = []
        for t in targets:
            rows = [next(r for r in results if r[key] == value and r["setting"] == s
                         and r["target"] == t) for s in settings]
            cells += [_cell(r) for r in rows]
            # among the settings every seed of which reached it: a mean over the lucky seeds
            # alone would flatter a setting that usually does not get there
            timed = [r for r in rows if r["virtual_s"] is not None and r["reached"] == r["seeds"]]
            firsts.append(min(timed, key=lambda r: r["virtual_s"])["setting"] if timed else "-")
        lines.append("| " + " | ".join(cells + firsts) + " |")
    return "\n".join(lines) + "\n"


def _write(out: Path, text: str, results: list[dict], key: str, runs: list[Run],
           command: str | None, devices: str, targets: Sequence[float]) -> None:
    from simulation.report import GENERATED, environments

    out.parent.mkdir(parents=True, exist_ok=True)
    on = "\n".join(f"- {line}" for line in environments(runs))
    head = GENERATED.format(command=command) + "\n\n" if command else ""
    intro = (f"{len(runs)} run(s), measured on:\n\n{on}\n\nRe-timed (exactly, without training) "
             f"on `{devices}` with `{key}` set for every device class; the devices' virtual "
             f"time until calibrated accuracy first reached each target (mean over the seeds "
             f"that reached it, and how many of them did); first: the fastest setting whose every "
             f"seed reached it.\n\n")
    out.with_suffix(".md").write_text(head + intro + text)
    out.with_suffix(".json").write_text(json.dumps({"devices": devices, "vary": key,
                                                    "results": results}, indent=1) + "\n")
    _figure(results, key, targets[0], out.with_suffix(".png"))


def _figure(results: list[dict], key: str, target: float, path: Path) -> None:
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    settings = list(dict.fromkeys(r["setting"] for r in results))
    for n, setting in enumerate(settings):
        rows = [r for r in results if r["setting"] == setting and r["target"] == target
                and r["virtual_s"] is not None]
        ax.plot([r[key] for r in rows], [r["virtual_s"] / 3600 for r in rows], "-o",
                color=f"C{n % 10}", markersize=3, label=setting)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(key)
    ax.set_ylabel(f"devices' time to {100 * target:g} % calibrated (hours)")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize="small")
    with matplotlib.rc_context({"svg.hashsalt": "fedprge"}):
        fig.savefig(path, dpi=120)
