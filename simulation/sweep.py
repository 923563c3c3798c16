"""`fedprge sweep`: one `fedprge run` per point of a grid, resumable, into one sweep directory.

    SWEEP_DIR/sweep.json          the grid, the base overrides, every point's status (atomic)
    SWEEP_DIR/<point>/            a run directory, e.g. q=4_local-steps=2
    SWEEP_DIR/<point>.incomplete-N/   an earlier attempt that died before summary.json (kept)
    SWEEP_DIR/logs/<point>.log    the runs' stdout and stderr, appended attempt after attempt

Each point runs in a child process (`python -m simulation.cli run`): a fresh Ray per run, and a
crash in one point is recorded as `failed` while the sweep goes on. Every point's config is
validated before the first run, so a typo costs seconds, not the hours of the points before it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clients.runconfig import ConfigError, load_config
from simulation.rundir import try_lock_dir, write_json
from simulation.units import pct

_UNSAFE = re.compile(r"[^A-Za-z0-9._,+-]+")  # anything else (/, :, spaces, quotes) becomes "-"
_MAX_NAME = 120  # well under the 255-byte file-name limit, with room for ".incomplete-N"


class SweepError(ValueError):
    """A sweep that cannot start or resume (one sentence)."""


@dataclass
class Point:
    name: str
    values: list[tuple[str, str]]  # (config key, value as --set text), in grid order

    @property
    def sets(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.values]


def parse_values(key: str, text: str) -> list[str]:
    """`2,4,8` or a JSON list (for values holding commas): each value as `--set` text."""
    text = text.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            raise SweepError(f"--grid {key}: {text!r} is not a valid JSON list") from None
        values = [_as_set_text(key, item) for item in items]
    else:
        values = [v.strip() for v in text.split(",")]
        if any(not v for v in values):
            raise SweepError(f"--grid {key}={text!r} has an empty value")
    if not values:
        raise SweepError(f"--grid {key} lists no values")
    for v in values:
        if values.count(v) > 1:
            raise SweepError(f"--grid {key} lists {v!r} twice")
    return values


def _as_set_text(key: str, item: Any) -> str:
    if isinstance(item, str):
        return item
    if item is None:
        raise SweepError(f"--grid {key}: null is not a value")
    if isinstance(item, list) and all(isinstance(s, str) and "," not in s for s in item):
        return ",".join(item)  # what `--set targets=q,v` takes; also reads best in a name
    return json.dumps(item, separators=(",", ":"))


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    if not items:
        raise SweepError("a sweep needs at least one --grid key=v1,v2")
    grid: list[tuple[str, list[str]]] = []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SweepError(f"--grid {item!r} must look like key=v1,v2")
        if key in (k for k, _ in grid):
            raise SweepError(f"--grid {key} is given twice")
        grid.append((key, parse_values(key, text)))
    return grid


def point_name(values: list[tuple[str, str]]) -> str:
    name = "_".join(f"{_UNSAFE.sub('-', k)}={_UNSAFE.sub('-', v)}" for k, v in values)
    if len(name) > _MAX_NAME:  # keep it readable in front, unique by a hash of the whole
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[:_MAX_NAME - 9]}-{digest}"
    return name


def expand_points(grid: list[tuple[str, list[str]]]) -> list[Point]:
    keys = [k for k, _ in grid]
    points = [Point(point_name(list(zip(keys, combo, strict=True))), list(zip(keys, combo, strict=True)))
              for combo in itertools.product(*(vs for _, vs in grid))]
    seen: dict[str, Point] = {}
    for p in points:
        if p.name in seen:  # e.g. model=a/b and model=a:b both become model=a-b
            raise SweepError(f"points {' '.join(seen[p.name].sets)!r} and {' '.join(p.sets)!r} "
                             f"would share the directory {p.name!r}")
        seen[p.name] = p
    return points


def validate(config: str | None, overrides: list[str], points: list[Point]) -> None:
    """Resolve every point's config as its run will, and refuse points that are the same run."""
    from simulation.runner import check_plugins

    resolved: dict[str, str] = {}
    for p in points:
        try:
            cfg = load_config(config, [*overrides, *p.sets])
            check_plugins(cfg)
        except ConfigError as err:
            raise SweepError(f"point {p.name}: {err}") from None
        flat = {k: v for k, v in cfg.to_dict().items() if k != "runs-dir"}
        key = json.dumps(flat, sort_keys=True, default=str)
        if key in resolved:  # e.g. q=4,04: two directories, one experiment
            raise SweepError(f"points {resolved[key]} and {p.name} resolve to the same config")
        resolved[key] = p.name


def _identity(config: str | None, overrides: list[str], grid: list[tuple[str, list[str]]]) -> dict:
    """What makes two invocations the same sweep: the grid, the base overrides and the config
    file's contents (its path may be spelled differently from another directory)."""
    digest = hashlib.sha256(Path(config).read_bytes()).hexdigest() if config else None
    return {"grid": [{"key": k, "values": vs} for k, vs in grid], "overrides": list(overrides),
            "config_sha256": digest}


def _check_dir(out: Path, ident: dict) -> dict | None:
    """The previous sweep.json if OUT holds this same sweep; None if OUT is new or empty."""
    state = out / "sweep.json"
    if out.exists() and not out.is_dir():
        raise SweepError(f"{str(out)!r} exists and is not a directory")
    if not state.is_file():
        if out.is_dir() and any(e.name != ".lock" for e in out.iterdir()):
            raise SweepError(f"{str(out)!r} exists and is not a sweep directory (no sweep.json)")
        return None
    try:
        old = json.loads(state.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SweepError(f"cannot read {str(state)!r}: {err}") from None
    for field, what in (("grid", "grid"), ("overrides", "--set overrides"),
                        ("config_sha256", "config file")):
        if old.get(field) != ident[field]:
            raise SweepError(f"{str(out)!r} holds a different sweep (its {what} differs); "
                             f"use another --out")
    return old


def _lock(out: Path) -> int:
    # two sweeps resuming one directory would rename each other's running points
    fd = try_lock_dir(out)
    if fd is None:
        raise SweepError(f"another sweep is running in {str(out)!r}")
    return fd


def _set_aside(out: Path, name: str) -> str:
    """Rename a point killed mid-run to the first free NAME.incomplete-N: never deleted."""
    n = 1
    while (out / f"{name}.incomplete-{n}").exists():
        n += 1
    aside = f"{name}.incomplete-{n}"
    (out / name).rename(out / aside)
    return aside


def _last_error(log: Path) -> str:
    """The child's own one-line error if it printed one, else its last line of output."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("fedprge: ")]
    return (errors or lines or ["(no output)"])[-1][:300]


def _run_point(config: str | None, overrides: list[str], p: Point, out: Path) -> tuple[int, float]:
    cmd = [sys.executable, "-m", "simulation.cli", "run"]
    if config:
        cmd += ["--config", str(Path(config).resolve())]
    for item in [*overrides, *p.sets]:
        cmd += ["--set", item]
    cmd += ["--out", str(out / p.name), "--quiet"]
    log = out / "logs" / f"{p.name}.log"
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    t0 = time.perf_counter()
    with log.open("a") as f:
        f.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    return proc.returncode, time.perf_counter() - t0


def run_sweep(config: str | None, grid_items: list[str], overrides: list[str], out: str | Path,
              quiet: bool = False) -> int:
    """0 when every point is done (now or before), 1 when any failed."""
    def say(line: str) -> None:
        if not quiet:
            print(line, flush=True)

    grid = parse_grid(grid_items)
    points = expand_points(grid)
    validate(config, overrides, points)
    ident = _identity(config, overrides, grid)
    out = Path(out)
    _check_dir(out, ident)  # refuse a foreign directory before leaving a lock file in it
    out.mkdir(parents=True, exist_ok=True)
    lock = _lock(out)
    try:
        old = _check_dir(out, ident) or {}  # again under the lock: a resume may have raced us
        earlier = {p["name"]: p.get("incomplete", []) for p in old.get("points", [])}
        state = {**ident, "version": 1, "config": str(Path(config).resolve()) if config else None,
                 "points": [{"name": p.name, "values": dict(p.values), "status": "pending",
                             "incomplete": earlier.get(p.name, [])} for p in points]}
        write_json(out / "sweep.json", state)
        (out / "logs").mkdir(exist_ok=True)
        say(f"sweep: {len(points)} points into {out}")
        for i, (p, rec) in enumerate(zip(points, state["points"], strict=True), 1):
            tag = f"[{i}/{len(points)}] {p.name}:"
            if (out / p.name / "summary.json").is_file():
                rec["status"] = "skipped"
                say(f"{tag} skipped (already done)")
                write_json(out / "sweep.json", state)
                continue
            if (out / p.name).exists():
                rec["incomplete"].append(_set_aside(out, p.name))
                say(f"{tag} an earlier attempt did not finish; kept as {rec['incomplete'][-1]}")
            rec["status"] = "running"
            write_json(out / "sweep.json", state)
            say(f"{tag} running")
            try:
                code, wall = _run_point(config, overrides, p, out)
            except KeyboardInterrupt:
                rec["status"] = "interrupted"
                write_json(out / "sweep.json", state)
                raise
            done = code == 0 and (out / p.name / "summary.json").is_file()
            rec.update(status="done" if done else "failed", exit_code=code, wall_s=round(wall, 1))
            write_json(out / "sweep.json", state)
            if done:
                s = json.loads((out / p.name / "summary.json").read_text())
                say(f"{tag} done in {wall:.0f} s, final acc {pct(s.get('final_acc'))} "
                    f"(calibrated {pct(s.get('final_acc_cal'))})")
            else:
                say(f"{tag} failed (exit {code}): {_last_error(out / 'logs' / f'{p.name}.log')}")
        counts = {s: sum(r["status"] == s for r in state["points"]) for s in ("done", "skipped", "failed")}
        say(f"sweep: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed; "
            f"{out / 'sweep.json'}")
        return 1 if counts["failed"] else 0
    finally:
        os.close(lock)
