"""`fedprge plot`: accuracy against communication, rounds and wall-clock time, one line per run.

Three PNGs: acc_vs_bytes.png (cumulative bytes up + down over the training rounds, log x axis),
acc_vs_round.png and acc_vs_time.png. By default the calibrated accuracy is drawn solid and the
raw accuracy dashed in the same colour; --metric picks one of them alone.

Matplotlib is driven through a bare Figure and the Agg canvas, not pyplot: no GUI backend is
ever touched and no global state leaks into a caller that has its own plotting going on.
"""

from __future__ import annotations

from pathlib import Path

from simulation.rundata import Run, default_out_dir, load_runs

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


def _figure(runs: list[Run], x_of, keys: tuple[str, ...], xlabel: str, path: Path,
            log_x: bool = False, x_scale: float = 1.0) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for n, run in enumerate(runs):
        xs = x_of(run)
        color = _color(n, len(runs))
        labelled = False  # one legend entry per run, on its first drawn line
        for key in keys:
            pts = [(xs[i] / x_scale, 100 * m[key]) for i, m in enumerate(run.metrics)
                   if i in xs and m.get(key) is not None]
            if not pts:
                continue
            ax.plot(*zip(*pts, strict=True), _STYLE[key], color=color, marker="o", markersize=3,
                    label=None if labelled else run.label)
            labelled = True
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ylabel = "test accuracy (%)"
    if len(keys) > 1:
        ylabel += "\nsolid: " + _NAME[keys[0]] + ", dashed: " + _NAME[keys[1]]
    else:
        ylabel = f"{_NAME[keys[0]]} {ylabel}"
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize="small")
    fig.savefig(path, dpi=120)
    return path


def plot(paths: list[str | Path], out: str | Path | None = None, metric: str = "both") -> list[Path]:
    runs = load_runs(paths)
    out_dir = Path(out) if out else default_out_dir(paths)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = METRICS[metric]
    longest = max((t for r in runs for t in _x_time(r).values()), default=0.0)
    minutes = longest > 600  # seconds read badly past ten minutes
    return [
        _figure(runs, _x_bytes, keys, "cumulative bytes sent (up + down)", out_dir / "acc_vs_bytes.png",
                log_x=True),
        _figure(runs, _x_round, keys, "round", out_dir / "acc_vs_round.png"),
        _figure(runs, _x_time, keys, "wall-clock time (min)" if minutes else "wall-clock time (s)",
                out_dir / "acc_vs_time.png", x_scale=60.0 if minutes else 1.0),
    ]
