"""`fedprge retime`: a finished run's rounds in the virtual time of another fleet, without training
again.

A run with `devices` records what each device that answered did in each round (`devices_work` in
metrics.jsonl: bytes down, FLOPs, bytes up, whether its reply was sound, the memory its work
needs). When no part of the run depended on the devices (every client always available, no
virtual deadline, no over-selection, no device refused for memory), the same training on another
fleet sends the same bytes and does the same FLOPs; only the clock differs. Re-timing replays the
clock on the new fleet (simulation/virtual_clock.py) and writes a copy of the run whose virtual
fields are the new fleet's: exactly what a run with that fleet records (tests/simulation/
test_virtual_time.py). Otherwise it refuses, naming the setting that makes it inexact.

Not re-timed: personalization after the last round (its per-device bytes are not recorded); its
fields are dropped from the copy's summary.json and clients.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from clients.devices import DeviceClass, DeviceProfileError, fleet
from clients.faults import simulated_delay_s
from clients.runconfig import config_from_mapping
from simulation.rundata import RunDataError, expand, read_metrics
from simulation.rundir import write_json
from simulation.virtual_clock import VirtualClock, settle

SKIPPED = ("devices", "checkpoint.json", "flower.log")  # not copied: state of the run, not results
PERSONAL = ("personalize_virtual_s", "personalize_flops", "personalize_energy_j")


def _check_retimable(path: Path, cfg, metrics: list[dict]) -> None:
    if not cfg.devices:
        raise RunDataError(f"{path} was run without devices: it recorded no device work")
    for key, default in (("availability", "always"), ("virtual_deadline_s", 0.0),
                         ("over_selection", 1.0)):
        if getattr(cfg, key) != default:
            raise RunDataError(f"{path}: its {key.replace('_', '-')} made who took part depend on "
                               f"its devices; re-timing it on another fleet would not be exact")
    for m in metrics:
        if m.get("round", 0) > 0 and "memory" in (m.get("rejected_reasons") or {}):
            raise RunDataError(f"{path}: round {m['round']} refused a device for memory; "
                               f"re-timing it on another fleet would not be exact")
        if m.get("round", 0) > 0 and "devices_work" not in m:
            raise RunDataError(f"{path}: round {m['round']} has no devices_work record")


def replay_clock(src: Path, cfg, metrics: list[dict], devices: list[DeviceClass],
                 name: str) -> VirtualClock:
    """The run's recorded device work replayed on `devices` (one per client): each round's
    `round_virtual_s` and `virtual_s` in `metrics` are rewritten in place; returns the clock.
    `name` names the fleet in errors."""
    _check_retimable(src, cfg, metrics)
    clock = VirtualClock(devices, cfg.quantize != "none")
    for m in metrics:
        if m.get("round", 0) == 0:
            continue
        arrivals, sound = [], set()
        for pid, down, flops, up, ok, need in m["devices_work"]:
            device = clock.devices[pid]
            if need > device.memory_gib * 2**30:
                raise RunDataError(f"{name}: client {pid}'s {device.name} holds "
                                   f"{device.memory_gib:g} GiB, its work needs "
                                   f"{need / 2**30:.2f} GiB: that fleet would have refused it")
            arrivals.append(clock.arrival(pid, down, flops, up,
                                          simulated_delay_s(cfg, m["round"], pid)))
            if ok:
                sound.add(pid)
        done = settle({a.pid: a.at_s for a in arrivals}, sound, None, None, missing=False)
        clock.close_round(arrivals, done.duration_s)
        m.update(round_virtual_s=done.duration_s, virtual_s=clock.now)
    return clock


def retime_run(src: Path, devices: str, dst: Path) -> Path:
    """A copy of run `src` in `dst`, its virtual time that of the fleet `devices`."""
    config = json.loads((src / "config.json").read_text())
    cfg = config_from_mapping(config, saved=True)
    metrics = read_metrics(src / "metrics.jsonl")
    try:
        new_fleet = fleet(devices, cfg.num_clients, cfg.seed)
    except DeviceProfileError as err:
        raise RunDataError(str(err)) from None
    clock = replay_clock(src, cfg, metrics, new_fleet, devices)
    if dst.exists():
        raise RunDataError(f"{str(dst)!r} exists: re-timing never writes over a directory")
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*SKIPPED))
    write_json(dst / "config.json", {**config, "devices": devices})
    (dst / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    if (dst / "summary.json").is_file():
        summary = json.loads((dst / "summary.json").read_text())
        summary.update(virtual_s=clock.now, device_hours=clock.device_hours(),
                       energy_j=clock.energy_j(), retimed_from=str(src))
        write_json(dst / "summary.json", {k: v for k, v in summary.items() if k not in PERSONAL})
    if (dst / "clients.json").is_file():
        rows = json.loads((dst / "clients.json").read_text())
        write_json(dst / "clients.json", [
            {**{k: v for k, v in r.items() if k not in PERSONAL}, **clock.client_fields(r["client"])}
            for r in rows])
    return dst


def retime(paths: list[str | Path], devices: str, out: str | Path) -> list[Path]:
    """Every run of `paths` (run or sweep directories) re-timed on `devices`, under `out`: a run
    directory as out/<its name>; a sweep's points as out/<sweep>/<point>."""
    out = Path(out)
    written = []
    for raw in paths:
        root = Path(raw)
        for run in expand([root]):
            dst = out / run.name if run == root else out / root.name / run.name
            written.append(retime_run(run, devices, dst))
        if (root / "sweep.json").is_file():
            shutil.copy2(root / "sweep.json", out / root.name / "sweep.json")
    return written
