"""`fedprge plot` for runs that evaluate every client (personalization studies): two figures.

- clients_last: each client's accuracy on its own test examples after the last round, global
  and personalized side by side per run (or setting: its seeds' clients pooled), as box plots
  with every client drawn as a point, so that the clients a method leaves behind are seen, not
  averaged away.
- p10_vs_round: the 10th percentile of the clients' personalized accuracy at each client
  evaluation (`client-eval-every`; the last round's from summary.json), mean over seeds with a
  95 % band, the mean dashed in the same colour.

Drawn like simulation/plot.py's figures (a bare Figure on the Agg canvas; no timestamp in the
file). Newcomers (`holdout-clients`) are left out of both: they are a row of the report.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from simulation.rundata import Run, SeedGroup
from simulation.stats import mean_ci


def has_clients(runs: list[Run]) -> bool:
    return any(r.summary and "client_personal_p10" in r.summary for r in runs)


def _last_clients(run: Run) -> list[dict[str, Any]]:
    path = run.path / "clients.json"
    rows = json.loads(path.read_text()) if path.is_file() else []
    return [r for r in rows if "personal_acc" in r and not r.get("newcomer")]


def _p10_series(run: Run) -> dict[int, tuple[float, float]]:
    """round -> (p10, mean) of personalized accuracy in %, every client evaluation."""
    out = {int(m["round"]): (100 * m["client_personal_p10"], 100 * m["client_personal_acc"])
           for m in run.metrics if "client_personal_p10" in m}
    s = run.summary or {}
    if "client_personal_p10" in s:
        out[int(s.get("rounds", max(out, default=0)))] = (100 * s["client_personal_p10"],
                                                          100 * s["client_personal_acc"])
    return out


def _save(fig, path: Path) -> None:
    import matplotlib

    fmt = path.suffix.lstrip(".")
    metadata = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}.get(fmt)
    with matplotlib.rc_context({"pdf.fonttype": 42, "svg.hashsalt": "fedprge"}):
        fig.savefig(path, dpi=120, metadata=metadata)


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def clients_figure(groups: list[SeedGroup], path: Path, csv_path: Path | None = None) -> Path:
    fig, ax = _figure()
    data, positions, ticks, labels, rows = [], [], [], [], []
    for n, group in enumerate(groups):
        clients = [c for r in group.runs for c in _last_clients(r)]
        for j, key in enumerate(("global_acc", "personal_acc")):
            values = [100 * c[key] for c in clients]
            data.append(values)
            positions.append(3 * n + j)
            rows += [[group.label, key, c["client"], _seed(r), f"{100 * c[key]:.6g}"]
                     for r in group.runs for c in _last_clients(r)]
        ticks.append(3 * n + 0.5)
        labels.append(group.label)
    ax.boxplot(data, positions=positions, widths=0.7, showfliers=False,
               medianprops={"color": "black"})
    for values, x, k in zip(data, positions, range(len(data)), strict=True):
        jitter = [x + 0.25 * ((i * 0.618) % 1 - 0.5) for i in range(len(values))]
        ax.plot(jitter, values, "o", markersize=3, alpha=0.6, color="C0" if k % 2 == 0 else "C1")
    ax.set_xticks(ticks, labels, rotation=20, ha="right", fontsize="small")
    ax.set_ylabel("accuracy on the client's own test examples (%)\n"
                  "left: global adapter (blue), right: personalized (orange)")
    ax.grid(True, axis="y", alpha=0.3)
    _save(fig, path)
    if csv_path is not None:
        _write_csv(csv_path, ["series", "adapter", "client", "seed", "acc"], rows)
    return path


def p10_figure(groups: list[SeedGroup], path: Path, csv_path: Path | None = None) -> Path:
    fig, ax = _figure()
    rows, banded = [], False
    for n, group in enumerate(groups):
        color = f"C{n % 10}"
        series = [_p10_series(r) for r in group.runs]
        common = sorted(set.intersection(*(set(s) for s in series))) if series else []
        if not common:
            continue
        p10 = [mean_ci([s[t][0] for s in series]) for t in common]
        mean = [mean_ci([s[t][1] for s in series])[0] for t in common]
        # an accuracy's interval ends at 0 and 100 % (few seeds make t intervals wide)
        lows = [max(0.0, m - (h or 0.0)) for m, h in p10]
        highs = [min(100.0, m + (h or 0.0)) for m, h in p10]
        label = group.label + (f" ({len(group.runs)} seeds)" if len(group.runs) > 1 else "")
        if len(group.runs) > 1:
            ax.fill_between(common, lows, highs, color=color, alpha=0.18, linewidth=0)
            banded = True
        ax.plot(common, [m for m, _ in p10], "-", color=color, marker="o", markersize=3,
                label=label)
        ax.plot(common, mean, "--", color=color, linewidth=1)
        rows += [[group.label, t, f"{m:.6g}", f"{lo:.6g}", f"{hi:.6g}", f"{mu:.6g}",
                  len(group.runs)] for t, (m, _), lo, hi, mu in zip(common, p10, lows, highs, mean,
                                                                   strict=True)]
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("clients' personalized accuracy (%)\nsolid: 10th percentile, dashed: mean"
                  + ("\nbands: 95 % CI of the p10 over seeds" if banded else ""))
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize="small")
    _save(fig, path)
    if csv_path is not None:
        _write_csv(csv_path, ["series", "round", "p10_mean", "p10_low", "p10_high", "mean",
                              "n_seeds"], rows)
    return path


def _seed(run: Run) -> str:
    return str(run.config.get("seed", ""))


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
