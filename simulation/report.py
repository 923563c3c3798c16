"""`fedprge report`: one table row per run, for pasting into notes, a pull request or a paper.

Numbers come from summary.json; a run killed before writing it still gets a row, rebuilt from
metrics.jsonl (the last evaluation, the bytes summed over the rounds it finished) and marked
"(incomplete)", so a half-finished sweep can be read without waiting for it.

Runs that differ only in `seed` are folded into one row per setting: accuracies as mean ± 95 %
confidence interval (Student's t over the seeds), costs as means (`--per-seed` lists every run).

The same cells in three formats (`--format`): a markdown table (the default), CSV (one header
row, then the rows) and a LaTeX tabular in booktabs style (top, middle and bottom rules; the
document needs the booktabs package), with LaTeX's special characters escaped.

A markdown table written with `--out` is a results page: it starts with the command that made
it (re-run it to re-measure; the page is never edited by hand) and what the runs ran on, from
their environment.json (CPU, commit, library versions).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simulation.cost_to_target import cell, header
from simulation.rundata import Run, RunDataError, SeedGroup, has_seed_axis, load_runs, seed_groups
from simulation.units import duration, mean_known, pct, pct_ci, size

HEADER = ["run", "method", "strategy", "q", "K", "clients/round", "final acc (raw / cal)",
          "best cal acc (round)", "client personalized acc", "bytes up", "bytes down",
          "up / client / round", "wall time"]
# Over seeds: accuracies as "mean ± half-width of the 95 % t interval", costs as means.
SEED_HEADER = ["setting", "seeds", "method", "strategy", "q", "K", "clients/round",
               "final acc (raw / cal), 95 % CI", "best cal acc", "client personalized acc",
               "bytes up", "bytes down", "up / client / round", "wall time"]


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
    # a valid reply's bytes per valid reply, as summary.json counts it (metrics from before
    # bytes_up_valid was recorded: every reply's bytes per valid reply)
    valid_up = sum(m.get("bytes_up_valid", m.get("bytes_up", 0)) for m in rounds)
    replies = sum(m.get("replies", 0) for m in rounds)
    return {"final_acc": last.get("test_acc"), "final_acc_cal": last.get("test_acc_cal"),
            "client_personal_acc": None, "bytes_up": up,
            "bytes_down": sum(m.get("bytes_down", 0) for m in rounds),
            "bytes_up_per_client_round": valid_up / replies if replies else None,
            "wall_s": run.metrics[-1].get("elapsed_s") if run.metrics else None,
            "virtual_s": run.metrics[-1].get("virtual_s") if run.metrics else None}


VIRTUAL_HEADER = ["device time", "device-hours", "energy", "GFLOP / device round",
                  "memory / device"]


def has_virtual(runs: list[Run]) -> bool:
    """Whether any run has devices in virtual time (its figures get their own columns)."""
    return any("virtual_s" in m for r in runs for m in r.metrics)


def _work_per_contact(run: Run) -> float | None:
    """A device's work in a training round it answered, in FLOPs: the rounds' FLOPs over the
    devices that did them (with Ditto, say, twice the steps of finetune's rounds)."""
    rounds = [m for m in run.metrics if "round_flops" in m]
    contacts = sum(len(m.get("devices_work", [])) for m in rounds)
    return sum(m["round_flops"] for m in rounds) / contacts if contacts else None


def _memory_need(run: Run) -> int | None:
    """The most memory a device's work needed (weights, prefix rows, adapter copies and, for
    first-order, the activations a backward keeps): the largest over its devices' records."""
    needs = [w[5] for m in run.metrics for w in m.get("devices_work", []) if len(w) > 5]
    return max(needs) if needs else None


def _virtual_cells(runs: list[Run]) -> list[str]:
    """Device time, device-hours, energy and work per device round (means over the runs that
    have them), and the most memory a device needed (the largest)."""
    sums = _sums(runs)
    col = lambda key: [s.get(key) for s in sums]  # noqa: E731
    hours, energy = mean_known(col("device_hours")), mean_known(col("energy_j"))
    work = mean_known([_work_per_contact(r) for r in runs])
    memory = [m for m in map(_memory_need, runs) if m is not None]
    return [duration(mean_known(col("virtual_s"))), "-" if hours is None else f"{hours:.2f} h",
            "-" if energy is None else f"{energy / 1000:.1f} kJ",
            "-" if work is None else f"{work / 1e9:,.1f}",
            size(max(memory)) if memory else "-"]


PERSONAL_HEADER = ["personalization", "clients' p10 (personalized)", "made worse",
                   "newcomers: global / personalized", "newcomer bytes down"]


def has_personal(runs: list[Run]) -> bool:
    """Whether any run reports the per-client distribution (its figures get their own columns)."""
    return any(r.summary and "client_personal_p10" in r.summary for r in runs)


def _personal_cells(runs: list[Run]) -> list[str]:
    """The method, the clients' 10th percentile and the share personalization made worse, and
    the newcomers' accuracy and catch-up bytes: over seeds, mean ± 95 % CI (bytes: mean)."""
    sums = [r.summary or {} for r in runs]
    col = lambda key: [s.get(key) for s in sums]  # noqa: E731
    methods = sorted({str(r.config.get("personalization", "finetune")) for r in runs})
    newcomers = "-" if not any(v is not None for v in col("newcomer_personal_acc")) else \
        f"{pct_ci(col('newcomer_global_acc'))} / {pct_ci(col('newcomer_personal_acc'))}"
    return [", ".join(methods), pct_ci(col("client_personal_p10")),
            pct_ci(col("client_hurt_share")), newcomers,
            size(mean_known(col("newcomer_bytes_down")))]


def _best(run: Run) -> dict[str, Any] | None:
    scored = [m for m in run.evals() if m.get("test_acc_cal") is not None]
    return max(scored, key=lambda m: m["test_acc_cal"], default=None)  # first of ties: earliest


def _setting(cfg: dict[str, Any], method: str) -> list[str]:
    return [method if cfg else "-", _strategy(cfg), str(cfg.get("q", "-")),
            str(cfg.get("local-steps", "-")), str(cfg.get("clients-per-round", "-"))]


def row(run: Run) -> list[str]:
    s = run.summary if run.summary is not None else _totals(run)
    best = _best(run)
    best_text = "-" if best is None else \
        f"{pct(best['test_acc_cal'])} ({best.get('round', best.get('step', '?'))})"
    label = run.label + ("" if run.summary is not None else " (incomplete)")
    return [label, *_setting(run.config, run.method),
            f"{pct(s.get('final_acc'))} / {pct(s.get('final_acc_cal'))}", best_text,
            pct(s.get("client_personal_acc")), size(s.get("bytes_up")), size(s.get("bytes_down")),
            size(s.get("bytes_up_per_client_round")), duration(s.get("wall_s"))]


def group_row(group: SeedGroup) -> list[str]:
    """One setting over its seeds: accuracies as mean ± 95 % CI, costs as means."""
    sums = [r.summary if r.summary is not None else _totals(r) for r in group.runs]
    col = lambda key: [s.get(key) for s in sums]  # noqa: E731
    best = [b["test_acc_cal"] if b else None for b in map(_best, group.runs)]
    incomplete = sum(r.summary is None for r in group.runs)
    label = group.label + (f" ({incomplete} incomplete)" if incomplete else "")
    seeds = ",".join(str(r.config.get("seed", "?")) for r in group.runs)
    return [label, f"{len(group.runs)} ({seeds})", *_setting(group.config, group.runs[0].method),
            f"{pct_ci(col('final_acc'))} / {pct_ci(col('final_acc_cal'))}", pct_ci(best),
            pct_ci(col("client_personal_acc")), size(mean_known(col("bytes_up"))),
            size(mean_known(col("bytes_down"))), size(mean_known(col("bytes_up_per_client_round"))),
            duration(mean_known(col("wall_s")))]


FORMATS = ("md", "csv", "latex")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # a pipe in a label would split the markdown cell


def _markdown(header: list[str], rows: list[list[str]], text_columns: int) -> str:
    align = ["---"] * text_columns + ["--:"] * (len(header) - text_columns)  # numbers right
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in cells) + " |" for cells in rows]
    return "\n".join(lines) + "\n"


def _csv(header: list[str], rows: list[list[str]], text_columns: int) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


# Characters LaTeX reads as commands in text mode, and what prints them; ± and · as math so that
# the table compiles without a Unicode-aware engine or package.
_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
          "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}", "±": r"$\pm$",
          "·": r"$\cdot$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in text)


def _latex(header: list[str], rows: list[list[str]], text_columns: int) -> str:
    spec = "l" * text_columns + "r" * (len(header) - text_columns)  # numbers right
    line = lambda cells: " & ".join(latex_escape(c) for c in cells) + r" \\"  # noqa: E731
    lines = [r"% needs \usepackage{booktabs}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             line(header), r"\midrule", *map(line, rows), r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


_RENDER = {"md": _markdown, "csv": _csv, "latex": _latex}


def _sums(runs: list[Run]) -> list[dict[str, Any]]:
    return [r.summary if r.summary is not None else _totals(r) for r in runs]


def _table(runs: list[Run], targets: Sequence[float]) -> tuple[list[str], list[list[str]], int]:
    """(header, rows, how many leading columns are text) of one row per run."""
    virtual, extra_header, extra = _extra(runs)
    return (HEADER + extra_header + [header(t, virtual) for t in targets],
            [row(run) + extra([run]) + [cell([run], t) for t in targets] for run in runs], 3)


def _extra(runs: list[Run]):
    """(virtual, header, cells(runs)) of the columns only some studies have: the devices'
    time and energy, and the per-client distribution of personalized accuracy."""
    virtual, personal = has_virtual(runs), has_personal(runs)
    header = (VIRTUAL_HEADER if virtual else []) + (PERSONAL_HEADER if personal else [])

    def cells(rs: list[Run]) -> list[str]:
        return ((_virtual_cells(rs) if virtual else [])
                + (_personal_cells(rs) if personal else []))

    return virtual, header, cells


def _seed_table(groups: list[SeedGroup], targets: Sequence[float]) -> tuple[list[str], list[list[str]], int]:
    """(header, rows, how many leading columns are text) of one row per setting."""
    virtual, extra_header, extra = _extra([r for g in groups for r in g.runs])
    return (SEED_HEADER + extra_header + [header(t, virtual) for t in targets],
            [group_row(g) + extra(g.runs) + [cell(g.runs, t) for t in targets] for g in groups], 4)


def table(runs: list[Run], targets: Sequence[float] = (), fmt: str = "md") -> str:
    return _RENDER[fmt](*_table(runs, targets))


def seed_table(groups: list[SeedGroup], targets: Sequence[float] = (), fmt: str = "md") -> str:
    return _RENDER[fmt](*_seed_table(groups, targets))


GENERATED = "<!-- generated by `{command}`: re-run it to re-measure; do not edit by hand -->"
LIBRARIES = ("torch", "executorch", "flwr", "ray", "transformers")


def environment_line(env: dict[str, Any]) -> str:
    """One record of simulation/environment.py as one line: CPU, commit, Python, libraries."""
    versions = env.get("versions", {})
    libs = ", ".join(f"{k} {versions[k]}" for k in LIBRARIES if k in versions)
    commit = str(env.get("git_commit", "?"))  # "-dirty": uncommitted changes too
    short = commit[:12] + ("-dirty" if commit.endswith("-dirty") else "")
    return (f"{env.get('cpu', '?')} ({env.get('cores', '?')} cores), commit {short}, "
            f"Python {env.get('python', '?')}, {libs}")


def environments(runs: list[Run]) -> list[str]:
    """What the runs ran on, one line per distinct environment (a resumed run may have two)."""
    seen: list[str] = []
    for run in runs:
        path = run.path / "environment.json"
        records = json.loads(path.read_text()) if path.is_file() else []
        for env in records if isinstance(records, list) else [records]:
            line = environment_line(env)
            if line not in seen:
                seen.append(line)
    return seen or ["(no environment.json)"]


def page(text: str, runs: list[Run], command: str) -> str:
    """A results page: the command that generated it, what it ran on, then the table."""
    on = "\n".join(f"- {line}" for line in environments(runs))
    return (GENERATED.format(command=command) + "\n\n"
            + f"{len(runs)} run(s), measured on:\n\n{on}\n\n" + text)


def report(paths: list[str | Path], out: str | Path | None = None, per_seed: bool = False,
           targets: Sequence[float] = (), fmt: str = "md", command: str | None = None,
           rounds: bool = False) -> str:
    """One row per run; when some runs differ only in `seed` (a sweep with a seed axis), one
    row per setting with mean ± 95 % CI over its seeds instead, unless `per_seed`. Each of
    `targets` (calibrated accuracies, 0-1) adds a cost-to-target column. `fmt`: md, csv or
    latex; `out`: a file to write the table to as well (with `command`, a markdown table is
    written as a results page: the command and the runs' environments above it). `rounds`:
    one row per evaluation round instead (simulation/report_rounds.py); `targets` do not
    apply."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if rounds and targets:
        raise RunDataError("--target does not apply to --rounds (each row is one round)")
    runs = load_runs(paths)
    groups = seed_groups(runs)
    if rounds:
        from simulation.report_rounds import RUN_HEADER, SEED_HEADER, group_rows, run_rows

        if has_seed_axis(groups) and not per_seed:
            text = _RENDER[fmt](SEED_HEADER, group_rows(groups), 2)
        else:
            text = _RENDER[fmt](RUN_HEADER, run_rows(runs), 1)
    elif has_seed_axis(groups) and not per_seed:
        text = seed_table(groups, targets, fmt)
    else:
        text = table(runs, targets, fmt)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        stamped = fmt == "md" and command is not None
        Path(out).write_text(page(text, runs, command) if stamped else text)
    return text
