"""Device profiles: what each simulated client would be, so that a round's bytes and FLOPs turn
into seconds and joules on that device instead of on this host.

A profile set is a TOML file of device classes (`[[class]]` tables), each with its share of the
fleet and its capabilities:

    [[class]]
    name = "phone-mid"
    share = 0.5             # of the fleet; the shares of a file sum to 1
    gflops-fp32 = 20.0      # sustained GFLOP/s of its inference engine, float32 weights
    gflops-int8 = 60.0      # ... with int8 weights (quantize = int8 | int4)
    memory-gib = 6.0        # what the app may hold: program, caches, adapter
    uplink-mbps = 10.0      # megabits per second
    downlink-mbps = 50.0
    rtt-ms = 50.0           # one round trip, paid once per message each way
    compute-w = 3.0         # optional: power while computing, for energy
    radio-w = 1.5           # optional: power while sending or receiving
    source = "..."          # where the numbers come from, or "illustrative"

Each client's class is a seeded draw over the shares (`classes_of`): the same run seed gives the
same fleet on every machine. Shipped sets: `phones` and `laptops` (clients/profiles/, each number
with its source or marked illustrative).

Per-client capacities (FedScale's style: one row per device rather than classes) come as a CSV
file with a header, one row per client id:

    client,gflops-fp32,uplink-mbps,downlink-mbps,rtt-ms,memory-gib
    0,12.5,4.2,31.0,45,3
    1,55.0,19.0,120.0,30,6

`client`, `gflops-fp32`, `uplink-mbps` and `downlink-mbps` are required; `gflops-int8` defaults
to `gflops-fp32`, `rtt-ms` to 0, `memory-gib` to no limit; `compute-w` and `radio-w` are
optional. Client i of a run takes the (i mod rows)-th row in client-id order, so a trace of any
size serves a fleet of any size. `round_time` is the virtual clock of one round on one device:

    latency  = rtt (the message down) + rtt (the reply up)
    radio    = bytes down * 8 / downlink + bytes up * 8 / uplink
    compute  = FLOPs / (GFLOP/s * 1e9)   (fp32 or int8 throughput, by the run's quantize)

It models none of: contention on a shared network, thermal throttling, the OS scheduling other
apps, memory bandwidth, or the engine's efficiency varying with shapes (one sustained rate).
"""

from __future__ import annotations

import csv
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prge.perturb import derive_seed


class DeviceProfileError(ValueError):
    """A profile file that cannot be used (one line, naming the file and the field)."""


@dataclass(frozen=True)
class DeviceClass:
    name: str
    share: float
    gflops_fp32: float
    gflops_int8: float
    memory_gib: float
    uplink_mbps: float
    downlink_mbps: float
    rtt_ms: float
    compute_w: float | None = None
    radio_w: float | None = None
    source: str = ""


REQUIRED = ("name", "share", "gflops-fp32", "gflops-int8", "memory-gib", "uplink-mbps",
            "downlink-mbps", "rtt-ms")
OPTIONAL = ("compute-w", "radio-w", "source")
MAY_BE_ZERO = ("rtt-ms", "compute-w", "radio-w")


def _device_class(raw: dict, where: str) -> DeviceClass:
    unknown = sorted(set(raw) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise DeviceProfileError(f"{where}: unknown field {unknown[0]!r} "
                                 f"(fields: {', '.join(REQUIRED + OPTIONAL)})")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise DeviceProfileError(f"{where}: missing field {missing[0]!r}")
    values = {}
    for key in REQUIRED[1:] + OPTIONAL[:2]:
        if key not in raw:
            continue
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DeviceProfileError(f"{where}: {key} must be a number, got {value!r}")
        may_be_zero = key in MAY_BE_ZERO  # no latency, or no power figure; never a zero rate
        unlimited = key == "memory-gib" and value == math.inf  # a CSV row without a limit
        if not (np.isfinite(value) or unlimited) or value < 0 or (value == 0 and not may_be_zero):
            raise DeviceProfileError(f"{where}: {key} must be {'>= 0' if may_be_zero else '> 0'}, "
                                     f"got {value!r}")
        values[key.replace("-", "_")] = float(value)
    return DeviceClass(name=str(raw["name"]), source=str(raw.get("source", "")), **values)


def load_profiles(path: str | Path) -> list[DeviceClass]:
    """The device classes of a profile file, checked: positive capabilities, shares summing
    to 1, distinct names."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as err:
        raise DeviceProfileError(f"cannot read device profiles {str(path)!r}: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise DeviceProfileError(f"{path}: not TOML: {err}") from None
    raws = data.get("class")
    if not isinstance(raws, list) or not raws:
        raise DeviceProfileError(f"{path}: no [[class]] tables")
    classes = [_device_class(r, f"{path}, class {i + 1}") for i, r in enumerate(raws)]
    names = [c.name for c in classes]
    if len(set(names)) != len(names):
        raise DeviceProfileError(f"{path}: class names repeat: {names}")
    total = sum(c.share for c in classes)
    if abs(total - 1.0) > 1e-6:
        raise DeviceProfileError(f"{path}: shares sum to {total:g}, not 1")
    return classes


SHIPPED_DIR = Path(__file__).parent / "profiles"
CSV_REQUIRED = ("client", "gflops-fp32", "uplink-mbps", "downlink-mbps")
CSV_OPTIONAL = ("gflops-int8", "rtt-ms", "memory-gib", "compute-w", "radio-w")


def shipped_profiles() -> list[str]:
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.toml"))


def profile_path(spec: str) -> Path:
    """The file a `devices` value names: a shipped set's name, else a path."""
    if "/" not in spec and "." not in spec:
        path = SHIPPED_DIR / f"{spec}.toml"
        if not path.is_file():
            raise DeviceProfileError(f"devices={spec!r}: no shipped profile set of that name "
                                     f"(shipped: {', '.join(shipped_profiles())}; or a .toml "
                                     f"or .csv path)")
        return path
    return Path(spec)


def load_client_rows(path: str | Path) -> list[DeviceClass]:
    """Per-client capacity rows (CSV), in client-id order, each as a class of its own."""
    path = Path(path)
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as err:
        raise DeviceProfileError(f"cannot read device rows {str(path)!r}: {err.strerror}") from None
    if not rows:
        raise DeviceProfileError(f"{path}: no rows (header: {', '.join(CSV_REQUIRED)}, ...)")
    header = set(rows[0])
    missing = [k for k in CSV_REQUIRED if k not in header]
    if missing:
        raise DeviceProfileError(f"{path}: missing column {missing[0]!r}")
    unknown = sorted(header - set(CSV_REQUIRED) - set(CSV_OPTIONAL))
    if unknown:
        raise DeviceProfileError(f"{path}: unknown column {unknown[0]!r} "
                                 f"(columns: {', '.join(CSV_REQUIRED + CSV_OPTIONAL)})")
    classes: dict[int, DeviceClass] = {}
    for line, row in enumerate(rows, start=2):
        where = f"{path}, line {line}"
        try:
            client = int(row["client"])
        except (TypeError, ValueError):
            raise DeviceProfileError(f"{where}: client must be an integer id, "
                                     f"got {row['client']!r}") from None
        if client in classes:
            raise DeviceProfileError(f"{where}: client {client} has a second row")
        raw = {k: _number(where, k, v) for k, v in row.items() if k != "client" and v not in
               (None, "")}
        raw.setdefault("gflops-int8", raw.get("gflops-fp32"))
        raw.setdefault("rtt-ms", 0.0)
        raw.setdefault("memory-gib", math.inf)
        classes[client] = _device_class({"name": f"client-{client}", "share": 1.0, **raw},
                                        where)
    return [classes[c] for c in sorted(classes)]


def _number(where: str, key: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise DeviceProfileError(f"{where}: {key} must be a number, got {text!r}") from None


def fleet(spec: str, num_clients: int, seed: int) -> list[DeviceClass]:
    """Each client's device (partition id order) for a `devices` value: a class file's seeded
    draw, or a CSV's per-client rows."""
    path = profile_path(spec)
    if path.suffix == ".csv":
        rows = load_client_rows(path)
        return [rows[i % len(rows)] for i in range(num_clients)]
    classes = load_profiles(path)
    return [classes[i] for i in classes_of(classes, num_clients, seed)]


def classes_of(classes: list[DeviceClass], num_clients: int, seed: int) -> list[int]:
    """Each client's class index, a seeded draw over the shares (partition id order)."""
    rng = np.random.default_rng(derive_seed(seed, "device-class"))
    shares = np.array([c.share for c in classes])
    return [int(i) for i in rng.choice(len(classes), size=num_clients, p=shares / shares.sum())]


@dataclass(frozen=True)
class RoundTime:
    """One device's round in virtual seconds, and its energy (None without power figures)."""

    latency_s: float
    radio_s: float
    compute_s: float
    energy_j: float | None

    @property
    def total_s(self) -> float:
        return self.latency_s + self.radio_s + self.compute_s


def round_time(device: DeviceClass, bytes_down: int, flops: int, bytes_up: int,
               quantized: bool = False) -> RoundTime:
    """The virtual time of receiving `bytes_down`, doing `flops` of work and sending `bytes_up`
    on `device` (int8 throughput when the run's weights are quantized)."""
    latency = 2 * device.rtt_ms / 1000
    radio = 8 * bytes_down / (device.downlink_mbps * 1e6) + 8 * bytes_up / (device.uplink_mbps * 1e6)
    rate = device.gflops_int8 if quantized else device.gflops_fp32
    compute = flops / (rate * 1e9)
    energy = None
    if device.compute_w is not None and device.radio_w is not None:
        energy = compute * device.compute_w + (radio + latency) * device.radio_w
    return RoundTime(latency, radio, compute, energy)
