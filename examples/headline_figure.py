"""The README's headline figure from run directories, through the Python API alone: calibrated
accuracy against cumulative bytes uploaded, one line per method (the mean over its seeds) with
a band from the lowest to the highest seed.

    fedprge sweep --config configs/study-suffix.toml --grid method=prge,zo-dense,fo \
        --grid seed=0,1,2 --out runs/study-suffix-k24
    python examples/headline_figure.py runs/study-suffix-k24 --out headline.png
    python examples/headline_figure.py docs/results/runs/study-suffix-k24 --out headline.png  # shipped

Any run or sweep directories will do: runs that differ only in `seed` make one line, named by
the config keys that tell the lines apart (the method, in the headline study). The band is the
range over seeds, not a confidence interval: with three seeds it hides nothing and assumes
nothing. The zero-shot accuracy (round 0, before any byte was sent) is a dotted line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

import fedprge

METRICS = {"acc_cal": "calibrated", "acc": "raw"}


def _settings(df):
    """(label, rows) per setting: the rows of the runs that differ only in seed."""
    keys = [c for c in df.columns if c not in fedprge.Runs.COLUMNS]
    if not keys:  # nothing but the seed varies (or one run): one line
        name = df["run"].iloc[0] if df["path"].nunique() == 1 else "all runs"
        return [(name, df)]
    # a key a run's config lacks (a strategy argument of another strategy) is not named
    return [(" ".join(f"{k}={v}" for k, v in zip(keys, values, strict=True) if not pd.isna(v)), rows)
            for values, rows in df.groupby(keys, sort=False, dropna=False)]


def _band(rows, metric: str):
    """Per round that every seed evaluated: mean cumulative bytes up, and the mean, lowest and
    highest accuracy (%) over the seeds."""
    acc = rows.pivot_table(index="round", columns="path", values=metric).dropna()
    up = rows.pivot_table(index="round", columns="path", values="bytes_up").loc[acc.index]
    return up.mean(axis=1), 100 * acc.mean(axis=1), 100 * acc.min(axis=1), 100 * acc.max(axis=1)


def headline_figure(runs: list[str], out: Path, metric: str = "acc_cal") -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    df = fedprge.load_runs(runs).to_dataframe()
    df = df[df["bytes_up"].notna() & df[metric].notna()]  # runs that count bytes: federated ones
    if df.empty:
        raise SystemExit("headline_figure: no federated run with evaluations among " + " ".join(runs))
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    FigureCanvasAgg(fig)  # no pyplot: no GUI backend, no global state
    ax = fig.add_subplot()
    seeds = 1
    for n, (label, rows) in enumerate(_settings(df)):
        color = f"C{n % 10}"
        n_seeds = rows["path"].nunique()
        seeds = max(seeds, n_seeds)
        zero = rows[rows["round"] == 0]
        if not zero.empty:  # before training: nothing sent, no place on a log axis
            ax.axhline(100 * zero[metric].mean(), color=color, linestyle=":", linewidth=1)
        x, mean, low, high = _band(rows[rows["bytes_up"] > 0], metric)
        if n_seeds > 1:
            ax.fill_between(x, low, high, color=color, alpha=0.18, linewidth=0)
            label = f"{label} ({n_seeds} seeds)"
        ax.plot(x, mean, "-", color=color, marker="o", markersize=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("cumulative bytes uploaded, all clients (log scale)")
    ylabel = f"{METRICS[metric]} test accuracy (%)"
    ax.set_ylabel(ylabel + ("\nline: mean over seeds, band: lowest to highest" if seeds > 1 else ""))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small", title="dotted: zero-shot", title_fontsize="small")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run or sweep directories")
    parser.add_argument("--out", type=Path, default=Path("headline.png"), help="the PNG to write")
    parser.add_argument("--metric", choices=sorted(METRICS), default="acc_cal",
                        help="acc_cal: calibrated accuracy (default); acc: raw")
    args = parser.parse_args(argv)
    try:
        print(headline_figure(args.runs, args.out, args.metric))
    except fedprge.RunDataError as err:
        print(f"headline_figure: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
