"""Reading finished (or killed) run directories back for `fedprge plot` and `fedprge report`.

Kept free of torch and of `clients.runconfig` on purpose: plotting a sweep should not pay for
importing the model stack. A run directory is anything holding `metrics.jsonl`; a sweep
directory (holding `sweep.json`) stands for its points, in the sweep's order.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Config keys that never tell two runs apart in a meaningful way (where files went).
_NOT_A_DIFFERENCE = {"runs-dir", "out", "cache"}  # "out": runs saved before its rename
# Keys a reader looks for first in a label; the rest follow in alphabetical order.
_LABEL_ORDER = ["method", "strategy", "q", "local-steps", "clients-per-round", "rounds"]


class RunDataError(ValueError):
    """A run or sweep directory that cannot be read (one sentence)."""


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    summary: dict[str, Any] | None  # None: the run was killed before writing summary.json
    label: str = field(default="")

    @property
    def method(self) -> str:
        return str(self.config.get("method", "prge"))  # runs from before the key existed

    def evals(self) -> list[dict[str, Any]]:
        """Records that carry a test evaluation (round 0 and every eval-every rounds)."""
        return [m for m in self.metrics if "test_acc" in m]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RunDataError(f"cannot read {str(path)!r}: {err}") from None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every line, except that a torn last line (a run killed mid-write) is dropped."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise RunDataError(f"{str(path)!r} line {i + 1} is not JSON") from None
    return records


def expand(paths: list[str | Path]) -> list[Path]:
    """Run directories in the order given; a sweep directory becomes its points that have
    started (a point not yet run has nothing to show)."""
    runs: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise RunDataError(f"{str(path)!r} is not a directory")
        if (path / "sweep.json").is_file():
            sweep = _read_json(path / "sweep.json")
            points = [path / p["name"] for p in sweep.get("points", [])]
            started = [p for p in points if (p / "metrics.jsonl").is_file()]
            if not started:
                raise RunDataError(f"sweep {str(path)!r} has no point with metrics.jsonl yet")
            runs.extend(started)
        elif (path / "metrics.jsonl").is_file():
            runs.append(path)
        else:
            raise RunDataError(f"{str(path)!r} has no metrics.jsonl (not a run or sweep directory)")
    return runs


def load_runs(paths: list[str | Path]) -> list[Run]:
    runs = []
    for path in expand(paths):
        config = _read_json(path / "config.json") if (path / "config.json").is_file() else {}
        summary = _read_json(path / "summary.json") if (path / "summary.json").is_file() else None
        runs.append(Run(path, config, read_metrics(path / "metrics.jsonl"), summary))
    for run, label in zip(runs, labels(runs), strict=True):
        run.label = label
    return runs


def _flatten(config: dict[str, Any]) -> dict[str, Any]:
    """strategy-args {"trim": 0.1} -> strategy-args.trim = 0.1, so a label names the argument."""
    flat: dict[str, Any] = {"method": "prge"}  # a missing key means the default method
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def _defaults() -> dict[str, Any]:
    from clients.runconfig import Config

    return Config().to_dict()


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def flat_configs(runs: list[Run]) -> list[dict[str, Any] | None]:
    """Each run's config flattened (strategy-args.trim) over today's defaults, since a key
    missing from a config written by an older version had its default value then; None for a
    run without config.json."""
    defaults = _defaults()
    return [_flatten({**defaults, **r.config}) if r.config else None for r in runs]


def differing_keys(runs: list[Run], ignore: frozenset[str] = frozenset(),
                   flats: list[dict[str, Any] | None] | None = None) -> list[str]:
    """The flattened config keys whose values differ between the runs (less `ignore` and the
    keys that only say where files went), the keys a reader looks for first in front: what
    tells the runs apart, for a label or a column. `flats`: flat_configs(runs), if at hand."""
    known = [f for f in (flat_configs(runs) if flats is None else flats) if f is not None]
    keys = sorted({k for f in known for k in f} - _NOT_A_DIFFERENCE - ignore)
    differing = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in known}) > 1]
    differing.sort(key=lambda k: (_LABEL_ORDER.index(k) if k in _LABEL_ORDER else len(_LABEL_ORDER), k))
    return differing


def labels(runs: list[Run], ignore: frozenset[str] = frozenset()) -> list[str]:
    """"method=fo q=16": the config keys whose values differ between the runs (less `ignore`).
    A run with no config, or runs that do not differ, fall back to the directory name; labels
    that would still collide get the directory name appended."""
    flats = flat_configs(runs)
    differing = differing_keys(runs, ignore, flats)
    out = []
    for run, flat in zip(runs, flats, strict=True):
        parts = [f"{k}={_show(flat[k])}" for k in differing if flat is not None and k in flat]
        out.append(" ".join(parts) or run.path.name)
    clashes = {label for label in out if out.count(label) > 1}
    return [f"{label} ({run.path.name})" if label in clashes and label != run.path.name else label
            for label, run in zip(out, runs, strict=True)]


def cumulative_bytes(run: Run) -> list[tuple[int, int]] | None:
    """(bytes up, bytes down) sent from the start of the run to the end of each record of
    `run.metrics`, summed over the records that count bytes (the training rounds; round 0, the
    zero-shot evaluation, sent nothing). None for a run that counts no bytes at all (a
    centralized `fedprge train`): zero would claim it communicated for free. The same running
    total as `fedprge plot`'s bytes axis (up + down, records without counts add nothing), split
    by direction so that a reader can plot either."""
    up = down = 0
    totals, counted = [], False
    for m in run.metrics:
        if "bytes_up" in m or "bytes_down" in m:
            counted = True
            up += int(m.get("bytes_up", 0))
            down += int(m.get("bytes_down", 0))
        totals.append((up, down))
    return totals if counted else None


@dataclass
class SeedGroup:
    """Runs of one setting that differ only in `seed` (a single run is a group of one)."""

    runs: list[Run]
    label: str = ""

    @property
    def config(self) -> dict[str, Any]:
        return self.runs[0].config


def seed_groups(runs: list[Run]) -> list[SeedGroup]:
    """Runs grouped by their config without `seed`, in order of first appearance; labels name
    what differs between the groups (the seed never does)."""
    groups: dict[str, SeedGroup] = {}
    defaults = _defaults()  # a key missing from an older run's config had its default then
    for run in runs:
        if run.config:
            full = {**defaults, **run.config}
            setting = {k: v for k, v in full.items() if k not in _NOT_A_DIFFERENCE | {"seed"}}
            key = json.dumps(setting, sort_keys=True)
        else:
            key = f"path:{run.path}"  # no config: nothing says it repeats another run
        groups.setdefault(key, SeedGroup([])).runs.append(run)
    out = list(groups.values())
    for group, label in zip(out, labels([g.runs[0] for g in out], frozenset({"seed"})), strict=True):
        group.label = label
    return out


def has_seed_axis(groups: list[SeedGroup]) -> bool:
    """Some setting was run with more than one seed (identical reruns are not a seed axis)."""
    return any(len({json.dumps(r.config.get("seed")) for r in g.runs}) > 1 for g in groups)


def default_out_dir(args: list[str | Path]) -> Path:
    """Where plots go without --out: the one directory given (a run or a sweep: the plots
    describe it), else the deepest directory holding all of them; the current directory when
    that is only the filesystem root (unrelated places)."""
    if len(args) == 1:
        return Path(args[0])
    common = Path(os.path.commonpath([Path(a).resolve().parent for a in args]))
    return Path.cwd() if common == Path(common.anchor) else common
