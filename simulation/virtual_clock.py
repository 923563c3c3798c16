"""The virtual clock: rounds in the time of the devices that would do the work, not of this host.

With `devices` set, each client is a device (clients/devices.py: compute, memory, links) and each
round takes virtual time, never read from a clock:

    a client's reply arrives at   2 rtt + bytes down / downlink + FLOPs / GFLOP/s
                                  + bytes up / uplink (+ straggle-s when the fault draw says so)

counted from the round's virtual start; its bytes are the serialized messages' (simulation/
traffic.py) and its FLOPs are counted from shapes (simulation/device_work.py). The round then:

- samples only clients available at its start (simulation/availability.py); with none, the clock
  moves to the next moment one becomes available;
- refuses a sampled device whose memory cannot hold the program, its caches and the adapter's
  copies (reason `memory`; it is never contacted);
- with `virtual-deadline-s`, rejects a reply that arrives after it (`late`);
- with `over-selection` > 1, samples that many times `clients-per-round` and keeps the first
  `clients-per-round` valid replies to arrive; later ones are `surplus`;
- ends when it has kept `clients-per-round` replies (over-selection), else at the deadline when a
  reply was late or missing, else when the last reply arrived.

Each device accumulates compute, radio (transfers and latency) and idle seconds (in rounds it took
part in, the rest of the round after its own work) and, with power figures, energy.

What the clock does not model: contention on a shared network or cell (each link runs at its
profile's rate whatever others do), thermal throttling, the OS scheduling other work, memory
bandwidth, the server's own compute, and time between rounds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from clients.devices import DeviceClass, round_time


@dataclass
class DeviceTime:
    """One device's totals over the run."""

    rounds: int = 0
    compute_s: float = 0.0
    radio_s: float = 0.0
    idle_s: float = 0.0
    energy_j: float | None = 0.0
    flops: int = 0


@dataclass(frozen=True)
class Arrival:
    """When a contacted device's reply arrives, from the round's virtual start."""

    pid: int
    at_s: float
    compute_s: float
    radio_s: float
    energy_j: float | None
    flops: int


@dataclass(frozen=True)
class Settled:
    late: frozenset[int]
    surplus: frozenset[int]
    duration_s: float


def settle(arrivals: dict[int, float], valid: set[int], deadline_s: float | None,
           keep: int | None, missing: bool) -> Settled:
    """Which replies the round keeps, and how long it lasts. `arrivals`: pid -> arrival time of
    every reply read; `valid`: the sound ones; `keep`: with over-selection, how many to keep;
    `missing`: a contacted device never answered."""
    late = frozenset(p for p, at in arrivals.items() if deadline_s and at > deadline_s)
    on_time = sorted((at, p) for p, at in arrivals.items() if p in valid and p not in late)
    surplus: frozenset[int] = frozenset()
    if keep is not None and len(on_time) >= keep:
        surplus = frozenset(p for _, p in on_time[keep:])
        return Settled(late, surplus, on_time[keep - 1][0])
    if deadline_s and (late or missing):
        return Settled(late, surplus, float(deadline_s))
    return Settled(late, surplus, max((at for p, at in arrivals.items() if p not in late),
                                      default=0.0))


class VirtualClock:
    def __init__(self, devices: list[DeviceClass], quantized: bool):
        self.devices, self.quantized = devices, quantized
        self.now = 0.0
        self.times: dict[int, DeviceTime] = {}

    def arrival(self, pid: int, bytes_down: int, flops: int, bytes_up: int,
                delay_s: float = 0.0) -> Arrival:
        t = round_time(self.devices[pid], bytes_down, flops, bytes_up, self.quantized)
        radio = t.latency_s + t.radio_s
        return Arrival(pid, t.total_s + delay_s, t.compute_s, radio, t.energy_j, flops)

    def close_round(self, arrivals: list[Arrival], duration_s: float) -> None:
        """Charge each contacted device its round, then move the clock past the round."""
        for a in arrivals:
            d = self.times.setdefault(a.pid, DeviceTime())
            d.rounds += 1
            d.compute_s += a.compute_s
            d.radio_s += a.radio_s
            d.idle_s += max(0.0, duration_s - a.at_s)
            d.flops += a.flops
            d.energy_j = None if d.energy_j is None or a.energy_j is None else (
                d.energy_j + a.energy_j)
        self.now += duration_s

    def device_hours(self) -> float:
        """Hours the fleet's devices spent computing or on the radio for the run."""
        return sum(d.compute_s + d.radio_s for d in self.times.values()) / 3600

    def energy_j(self) -> float | None:
        values = [d.energy_j for d in self.times.values()]
        return None if any(v is None for v in values) else float(sum(values))

    def client_fields(self, pid: int) -> dict:
        """A client's row additions in clients.json."""
        d = self.times.get(pid, DeviceTime())
        return {"device": self.devices[pid].name, **{k: v for k, v in asdict(d).items()}}

    # -- checkpoint ---------------------------------------------------------------------------
    def state(self) -> dict:
        return {"now": self.now, "times": {str(p): asdict(d) for p, d in sorted(self.times.items())}}

    def restore(self, state: dict) -> None:
        self.now = float(state["now"])
        self.times = {int(p): DeviceTime(**d) for p, d in state["times"].items()}
