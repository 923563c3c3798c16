"""`fedprge plot`: accuracy against communication, rounds and wall-clock time, one line per run.

Three PNGs: acc_vs_bytes.png (cumulative bytes up + down over the training rounds, log x axis),
acc_vs_round.png and acc_vs_time.png. By default the calibrated accuracy is drawn solid and the
raw accuracy dashed in the same colour; --metric picks one of them alone. Runs that differ only
in `seed` are drawn as one line, their mean, with a band for the 95 % confidence interval.

Matplotlib is driven through a bare Figure and the Agg canvas, not pyplot: no GUI backend is
ever touched and no global state leaks into a caller that has its own plotting going on.
"""

from __future__ import annotations

from pathlib import Path

from simulation.rundata import Run, SeedGroup, default_out_dir, has_seed_axis, load_runs, seed_groups
from simulation.stats import mean_ci

METRICS = {"both": ("test_acc_cal", "test_acc"), "test_acc_cal": ("test_acc_cal",),
           "test_acc": ("test_acc",)}
_STYLE = {"test_acc_cal": "-", "test_acc": "--"}
_NAME = {"test_acc_cal": "calibrated", "test_acc": "raw"}


def _x_round(run: Run) -> dict[int, float]:
    """Index of each record -> its round (a `fedprge train` run counts steps instead)."""
    return {i: float(m.get("round", m.get("step", i))) for i, m in enumerate(run.metrics)}


def _x_bytes(run: Run) -> dict[int, float]:
    """Cumulative bytes after each round. Round 0 (zero-shot, nothing sent) has no place on a
    log axis and is left out; a run without byte counts (centralized train) has no points."""
    total, xs = 0, {}
    for i, m in enumerate(run.metrics):
        if "bytes_up" not in m and "bytes_down" not in m:
            continue
        total += m.get("bytes_up", 0) + m.get("bytes_down", 0)
        if total > 0:
            xs[i] = float(total)
    return xs


def _x_time(run: Run) -> dict[int, float]:
    return {i: float(m["elapsed_s"]) for i, m in enumerate(run.metrics) if "elapsed_s" in m}


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
    (xs, means, lows, highs). x is the seeds' mean x there (bytes and seconds can differ)."""
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
    return xs, means, lows, highs


def _figure(groups: list[SeedGroup], x_of, keys: tuple[str, ...], xlabel: str, path: Path,
            log_x: bool = False, x_scale: float = 1.0) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    banded = False
    for n, group in enumerate(groups):
        color = _color(n, len(groups))
        labelled = False  # one legend entry per run (or setting), on its first drawn line
        for key in keys:
            xs, means, lows, highs = _band(group, x_of, key, x_scale)
            if not xs:
                continue
            label = None if labelled else group.label
            if len(group.runs) > 1:
                label = label and f"{label} ({len(group.runs)} seeds)"
                ax.fill_between(xs, lows, highs, color=color, alpha=0.18, linewidth=0)
                banded = True
            ax.plot(xs, means, _STYLE[key], color=color, marker="o", markersize=3, label=label)
            labelled = True
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
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
    fig.savefig(path, dpi=120)
    return path


def plot(paths: list[str | Path], out: str | Path | None = None, metric: str = "both") -> list[Path]:
    runs = load_runs(paths)
    # runs that differ only in seed: one line (their mean) and a band; unless none repeats
    groups = seed_groups(runs)
    if not has_seed_axis(groups):
        groups = [SeedGroup([r], r.label) for r in runs]
    out_dir = Path(out) if out else default_out_dir(paths)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = METRICS[metric]
    longest = max((t for r in runs for t in _x_time(r).values()), default=0.0)
    minutes = longest > 600  # seconds read badly past ten minutes
    return [
        _figure(groups, _x_bytes, keys, "cumulative bytes sent (up + down)", out_dir / "acc_vs_bytes.png",
                log_x=True),
        _figure(groups, _x_round, keys, "round", out_dir / "acc_vs_round.png"),
        _figure(groups, _x_time, keys, "wall-clock time (min)" if minutes else "wall-clock time (s)",
                out_dir / "acc_vs_time.png", x_scale=60.0 if minutes else 1.0),
    ]
