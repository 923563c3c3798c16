"""Who can be sampled at a round's virtual start (`availability`).

Real fleets are not always on: production systems train on devices that are idle, charging and
on an unmetered network, mostly at night (Bonawitz et al., "Towards Federated Learning at Scale",
MLSys 2019), and FedScale replays a trace of when each phone was available. Three models:

- `always`: every client, at every instant.
- `diurnal`: each client is available `diurnal-hours` a day, from a local start time drawn from
  the run seed (uniform over the day: a fleet spread over time zones and habits). Illustrative,
  not fitted to any trace.
- a CSV trace, `client,start,end` in seconds from the trace's start, one row per interval in which
  that client is available (FedScale's availability trace in this shape). The trace repeats with
  a period of its last `end`; a run client absent from the trace is never available; rows of
  clients beyond the run's are ignored.

All of it reads virtual time only: the same config samples the same clients on any machine.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from prge.perturb import derive_seed

DAY_S = 86_400.0
EPS_S = 1e-6  # a step past a window's start, so that float rounding cannot land just before it


class AvailabilityError(ValueError):
    """An availability setting or trace that cannot be used (one line)."""


class Availability:
    """`available(t)`: partition ids available at virtual time t (ascending);
    `next_change(t)`: the earliest time after t at which someone becomes available (None: never)."""

    def __init__(self, num_clients: int):
        self.num_clients = num_clients

    def available(self, t: float) -> list[int]:
        return list(range(self.num_clients))

    def next_start(self, t: float) -> float | None:
        return None


class Diurnal(Availability):
    def __init__(self, num_clients: int, hours: float, seed: int):
        super().__init__(num_clients)
        if not 0 < hours <= 24:
            raise AvailabilityError(f"diurnal-hours={hours!r} must be in (0, 24]")
        self.window = hours * 3600.0
        rng = np.random.default_rng(derive_seed(seed, "diurnal-start"))
        self.start = rng.uniform(0.0, DAY_S, size=num_clients)  # each client's daily start

    def _phase(self, t: float) -> np.ndarray:
        return np.mod(t - self.start, DAY_S)  # seconds since each client's window opened

    def available(self, t: float) -> list[int]:
        return [int(p) for p in np.flatnonzero(self._phase(t) < self.window)]

    def next_start(self, t: float) -> float | None:
        return t + float(np.min(DAY_S - self._phase(t))) + EPS_S


class Trace(Availability):
    def __init__(self, num_clients: int, path: str | Path):
        super().__init__(num_clients)
        self.intervals: dict[int, list[tuple[float, float]]] = {}
        self.period = 0.0
        path = Path(path)
        try:
            with path.open(newline="") as f:
                rows = list(csv.DictReader(f))
        except OSError as err:
            raise AvailabilityError(f"cannot read availability trace {str(path)!r}: "
                                    f"{err.strerror}") from None
        if not rows or not {"client", "start", "end"} <= set(rows[0]):
            raise AvailabilityError(f"{path}: a trace needs the columns client,start,end")
        for line, row in enumerate(rows, start=2):
            try:
                client, start, end = int(row["client"]), float(row["start"]), float(row["end"])
            except (TypeError, ValueError):
                raise AvailabilityError(f"{path}, line {line}: client must be an integer and "
                                        f"start, end numbers of seconds") from None
            if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
                raise AvailabilityError(f"{path}, line {line}: needs 0 <= start < end, "
                                        f"got {start:g}, {end:g}")
            self.period = max(self.period, end)
            if 0 <= client < num_clients:
                self.intervals.setdefault(client, []).append((start, end))
        if not self.intervals:
            raise AvailabilityError(f"{path}: no interval for any of the run's {num_clients} "
                                    f"clients (ids 0..{num_clients - 1})")

    def available(self, t: float) -> list[int]:
        at = t % self.period
        return sorted(c for c, spans in self.intervals.items()
                      if any(s <= at < e for s, e in spans))

    def next_start(self, t: float) -> float | None:
        at, base = t % self.period, t - t % self.period
        starts = [s for spans in self.intervals.values() for s, _ in spans]
        later = [s for s in starts if s > at]
        return base + (min(later) if later else self.period + min(starts)) + EPS_S


def availability_of(cfg) -> Availability:
    """The run's availability model, from `availability` (and `diurnal-hours`)."""
    if cfg.availability == "always":
        return Availability(cfg.num_clients)
    if cfg.availability == "diurnal":
        return Diurnal(cfg.num_clients, cfg.diurnal_hours, cfg.seed)
    return Trace(cfg.num_clients, cfg.availability)
