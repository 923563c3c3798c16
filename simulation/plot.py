"""`fedprge plot`: accuracy against communication, rounds and wall-clock time, one line per run.

One figure per x axis (`--x`, default all four, five with devices): acc_vs_bytes_up (cumulative
bytes the clients uploaded, log x axis), acc_vs_bytes (bytes up + down), acc_vs_round,
acc_vs_time and, for runs with `devices`, acc_vs_virtual_time (the devices' time, not this
host's), as PNG, PDF or SVG (`--format`); for runs that evaluate every client, also
clients_last and p10_vs_round (simulation/plot_clients.py). By default the calibrated accuracy
is drawn solid and the raw accuracy dashed in the same colour; --metric picks one of them alone.
Runs that differ only in `seed` are drawn as one line, their mean, with a band for the 95 %
confidence interval.
The legend names the config keys that differ between the lines (rundata.labels), nothing else.

A dotted horizontal line marks the zero-shot accuracy (the round-0 evaluation, before any
training) of the metric drawn solid: one line labelled "zero-shot" when every run starts from
the same accuracy (one model, task and evaluation set), else one per distinct starting accuracy,
each annotated with the config keys that set it apart (e.g. "model=tiny").

`--csv` writes next to each figure the points it draws (acc_vs_round.csv beside
acc_vs_round.pdf): one row per point of every line, and one per zero-shot line.

Matplotlib is driven through a bare Figure and the Agg canvas, not pyplot: no GUI backend is
ever touched and no global state leaks into a caller that has its own plotting going on.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulation.plot_clients import clients_figure, has_clients, p10_figure
from simulation.rundata import (
    Run,
    SeedGroup,
    cumulative_bytes,
    default_out_dir,
    differing_keys,
    flat_configs,
    has_seed_axis,
    load_runs,
    seed_groups,
)
from simulation.stats import mean_ci

METRICS = {"both": ("test_acc_cal", "test_acc"), "test_acc_cal": ("test_acc_cal",),
           "test_acc": ("test_acc",)}
_STYLE = {"test_acc_cal": "-", "test_acc": "--"}
_NAME = {"test_acc_cal": "calibrated", "test_acc": "raw"}
# --x, in the order figures are written by default (virtual-time: for runs with `devices` only)
AXES = ("bytes-up", "bytes", "rounds", "time", "virtual-time")
FORMATS = ("png", "pdf", "svg")
_FILE = {"bytes-up": "acc_vs_bytes_up", "bytes": "acc_vs_bytes", "rounds": "acc_vs_round",
         "time": "acc_vs_time", "virtual-time": "acc_vs_virtual_time"}
_ZERO_SHOT = "zero-shot"


def _x_round(run: Run) -> dict[int, float]:
    """Index of each record -> its round (a `fedprge train` run counts steps instead)."""
    return {i: float(m.get("round", m.get("step", i))) for i, m in enumerate(run.metrics)}


def _cumulative(run: Run, pick: Callable[[int, int], int]) -> dict[int, float]:
    """Index of each record that counts bytes -> `pick(bytes up, bytes down)` sent up to the end
    of it (`rundata.cumulative_bytes`, the API's columns). Round 0 (zero-shot, nothing sent) has
    no place on a log axis and is left out; a run without byte counts (centralized train) has no
    points."""
    totals = cumulative_bytes(run)
    if totals is None:
        return {}
    records = zip(totals, run.metrics, strict=True)
    return {i: float(pick(up, down)) for i, ((up, down), m) in enumerate(records)
            if ("bytes_up" in m or "bytes_down" in m) and pick(up, down) > 0}


def _x_bytes(run: Run) -> dict[int, float]:
    """Cumulative bytes up + down after each round."""
    return _cumulative(run, lambda up, down: up + down)


def _x_bytes_up(run: Run) -> dict[int, float]:
    """Cumulative bytes the clients uploaded after each round (what P-RGE saves)."""
    return _cumulative(run, lambda up, down: up)


def _x_time(run: Run) -> dict[int, float]:
    return {i: float(m["elapsed_s"]) for i, m in enumerate(run.metrics) if "elapsed_s" in m}


def _x_virtual(run: Run) -> dict[int, float]:
    """The devices' virtual time at the end of each round (round 0: the start, 0 s); a run
    without `devices` has no points."""
    if not any("virtual_s" in m for m in run.metrics):
        return {}
    return {i: float(m.get("virtual_s", 0.0)) for i, m in enumerate(run.metrics)
            if "virtual_s" in m or m.get("round") == 0}


def _time_axis(x_of, runs: list[Run], what: str, column: str) -> _Axis:
    """Seconds read badly past ten minutes, minutes past five hours."""
    longest = max((t for r in runs for t in x_of(r).values()), default=0.0)
    if longest > 5 * 3600:
        return _Axis(x_of, f"{what} (h)", f"{column}_h", scale=3600.0)
    if longest > 600:
        return _Axis(x_of, f"{what} (min)", f"{column}_min", scale=60.0)
    return _Axis(x_of, f"{what} (s)", f"{column}_s")


@dataclass(frozen=True)
class _Axis:
    x_of: Callable[[Run], dict[int, float]]
    label: str
    column: str  # the x column of the CSV, with its unit
    log: bool = False
    scale: float = 1.0  # x is divided by it (seconds to minutes)


def _axis(name: str, runs: list[Run]) -> _Axis:
    if name == "bytes-up":
        return _Axis(_x_bytes_up, "cumulative bytes uploaded by clients", "x_bytes_up", log=True)
    if name == "bytes":
        return _Axis(_x_bytes, "cumulative bytes sent (up + down)", "x_bytes_up_down", log=True)
    if name == "rounds":
        return _Axis(_x_round, "round", "x_round")
    if name == "time":
        return _time_axis(_x_time, runs, "wall-clock time", "x_time")
    if name == "virtual-time":
        return _time_axis(_x_virtual, runs, "virtual time on the devices", "x_virtual_time")
    raise ValueError(f"unknown x axis {name!r} (one of {', '.join(AXES)})")


def _color(n: int, total: int):
    """The default ten colours while they last; a 20-colour map for larger comparisons."""
    import matplotlib

    if total <= 10:
        return f"C{n}"
    return matplotlib.colormaps["tab20"](n % 20)


def _series(run: Run, x_of, key: str, x_scale: float) -> dict[float, tuple[float, float]]:
    """round (or step) -> (x, accuracy in %) for the records that have both."""
    xs, rounds = x_of(run), _x_round(run)
    return {rounds[i]: (xs[i] / x_scale, 100 * m[key]) for i, m in enumerate(run.metrics)
            if i in xs and m.get(key) is not None}


def _band(group: SeedGroup, x_of, key: str, x_scale: float):
    """Mean over seeds at the rounds every seed evaluated, with the 95 % t interval:
    (rounds, xs, means, lows, highs). x is the seeds' mean x there (bytes and seconds can
    differ)."""
    series = [_series(r, x_of, key, x_scale) for r in group.runs]
    common = sorted(set.intersection(*(set(s) for s in series)))
    xs, means, lows, highs = [], [], [], []
    for t in common:
        x = mean_ci([s[t][0] for s in series])[0]
        mean, half = mean_ci([s[t][1] for s in series])
        xs.append(x)
        means.append(mean)
        lows.append(mean - (half or 0.0))
        highs.append(mean + (half or 0.0))
    return common, xs, means, lows, highs


def _zero_shot(run: Run, key: str) -> float | None:
    """The run's accuracy before training: its round-0 (step-0) evaluation, in %."""
    rounds = _x_round(run)
    return next((100 * m[key] for i, m in enumerate(run.metrics)
                 if rounds[i] == 0 and m.get(key) is not None), None)


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def zero_shot_lines(runs: list[Run], key: str) -> list[tuple[str, float, int]]:
    """(label, accuracy in %, runs) for each distinct zero-shot accuracy among `runs`, in order
    of first appearance. One: labelled "zero-shot". Several (different models, tasks or
    evaluation sets): each labelled "zero-shot (model=tiny)" with the config keys that hold
    one value within it and differ between them, or with its accuracy when no key does."""
    classes: dict[float, list[Run]] = {}
    for run in runs:
        value = _zero_shot(run, key)
        if value is not None:
            classes.setdefault(round(value, 9), []).append(run)  # float noise is not a difference
    if len(classes) <= 1:
        return [(_ZERO_SHOT, v, len(rs)) for v, rs in classes.items()]
    members = list(classes.values())
    flats = flat_configs(runs)
    flat = {id(r): f for r, f in zip(runs, flats, strict=True)}
    keys = [k for k in differing_keys(runs, frozenset({"seed"}), flats)
            if all(flat[id(r)] is not None for r in runs)
            and all(len({json.dumps(flat[id(r)].get(k), sort_keys=True) for r in rs}) == 1
                    for rs in members)]
    out = []
    for value, rs in classes.items():
        parts = " ".join(f"{k}={_show(flat[id(rs[0])].get(k))}" for k in keys) or f"{value:.1f} %"
        out.append((f"{_ZERO_SHOT} ({parts})", value, len(rs)))
    return out


def _fmt(value: float) -> str:
    """12 significant digits: 55, not the 55.00000000000001 of 100 * 0.55."""
    return str(int(value)) if float(value).is_integer() else f"{value:.12g}"


def _figure(groups: list[SeedGroup], axis: _Axis, keys: tuple[str, ...], path: Path,
            csv_path: Path | None = None) -> Path:
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    banded = False
    rows: list[list[Any]] = []
    for n, group in enumerate(groups):
        color = _color(n, len(groups))
        labelled = False  # one legend entry per run (or setting), on its first drawn line
        for key in keys:
            rounds, xs, means, lows, highs = _band(group, axis.x_of, key, axis.scale)
            if not xs:
                continue
            rows += [[group.label, key, _fmt(t), _fmt(x), _fmt(m), _fmt(lo), _fmt(hi), len(group.runs)]
                     for t, x, m, lo, hi in zip(rounds, xs, means, lows, highs, strict=True)]
            label = None if labelled else group.label
            if len(group.runs) > 1:
                label = label and f"{label} ({len(group.runs)} seeds)"
                ax.fill_between(xs, lows, highs, color=color, alpha=0.18, linewidth=0)
                banded = True
            ax.plot(xs, means, _STYLE[key], color=color, marker="o", markersize=3, label=label)
            labelled = True
    lines = zero_shot_lines([r for g in groups for r in g.runs], keys[0])
    for i, (label, value, count) in enumerate(lines):
        # with both metrics drawn, say which one it is the start of (the raw one starts lower)
        legend = _ZERO_SHOT if len(keys) == 1 else f"{_ZERO_SHOT} ({_NAME[keys[0]]})"
        ax.axhline(value, linestyle=":", color="0.2", linewidth=1.2, label=legend if i == 0 else None)
        if len(lines) > 1:  # which start is which: named on the line, at its right end
            ax.annotate(label.removeprefix(_ZERO_SHOT).strip(" ()"), (1.0, value),
                        xycoords=ax.get_yaxis_transform(), xytext=(-3, 2),
                        textcoords="offset points", ha="right", va="bottom", fontsize="x-small",
                        color="0.2")
        rows.append([label, keys[0], "0", "", _fmt(value), _fmt(value), _fmt(value), count])
    if axis.log:
        ax.set_xscale("log")
    if axis.x_of is _x_round:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no round 0.25
    ax.set_xlabel(axis.label)
    ylabel = "test accuracy (%)"
    if len(keys) > 1:
        ylabel += "\nsolid: " + _NAME[keys[0]] + ", dashed: " + _NAME[keys[1]]
    else:
        ylabel = f"{_NAME[keys[0]]} {ylabel}"
    if banded:
        ylabel += "; bands: 95 % CI over seeds"
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize="small")
    # TrueType fonts in PDFs (publishers refuse Type 3), no timestamp: same runs, same bytes
    fmt = path.suffix.lstrip(".")
    metadata = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}.get(fmt)
    with matplotlib.rc_context({"pdf.fonttype": 42, "svg.hashsalt": "fedprge"}):
        fig.savefig(path, dpi=120, metadata=metadata)
    if csv_path is not None:
        with csv_path.open("w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["series", "metric", "round", axis.column, "y_mean", "y_low", "y_high",
                             "n_seeds"])
            writer.writerows(rows)
    return path


def parse_axes(text: str) -> list[str]:
    """"bytes-up,time" -> ["bytes-up", "time"] (a ValueError listing the axes otherwise)."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in AXES]
    if unknown or not names:
        raise ValueError(f"{text!r}: an x axis is one of {', '.join(AXES)}")
    return names


def plot(paths: list[str | Path], out: str | Path | None = None, metric: str = "both",
         x: Sequence[str] | None = None, fmt: str = "png", write_csv: bool = False) -> list[Path]:
    """One figure per x axis of `x` (default: all of AXES, in that order) in `fmt`; with
    `write_csv`, each figure's CSV follows it in the list of files written."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    axes = list(dict.fromkeys(x or AXES))  # each once, in the order asked
    parse_axes(",".join(axes))  # an unknown name fails before anything is read or written
    runs = load_runs(paths)
    if not x and not any(_x_virtual(r) for r in runs):
        axes.remove("virtual-time")  # by default, only for runs that have a virtual clock
    # runs that differ only in seed: one line (their mean) and a band; unless none repeats
    groups = seed_groups(runs)
    if not has_seed_axis(groups):
        groups = [SeedGroup([r], r.label) for r in runs]
    out_dir = Path(out) if out else default_out_dir(paths)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in axes:
        figure = out_dir / f"{_FILE[name]}.{fmt}"
        table = figure.with_suffix(".csv") if write_csv else None
        written.append(_figure(groups, _axis(name, runs), METRICS[metric], figure, table))
        if table is not None:
            written.append(table)
    if not x and has_clients(runs):  # every client evaluated: its distribution and its p10
        for name, draw in (("clients_last", clients_figure), ("p10_vs_round", p10_figure)):
            figure = out_dir / f"{name}.{fmt}"
            table = figure.with_suffix(".csv") if write_csv else None
            written.append(draw(groups, figure, table))
            if table is not None:
                written.append(table)
    return written
