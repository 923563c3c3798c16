"""Cost to target: what a run had spent when its calibrated accuracy first reached a target.

Bytes are every byte of the training rounds (up + down, the log or theta included) through the
round of that evaluation; seconds are wall-clock since the zero-shot evaluation (round 0), so the
one-time set-up every method shares (loading, lowering, cache fills before round 0) is left out.
For runs with `devices`, the cell adds the devices' virtual time through that round (their
prefix fills included: a device fills when it first works, inside the rounds).
Evaluations happen every `eval-every` rounds: a target is seen at the first evaluation past it.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulation.rundata import Run
from simulation.stats import mean_ci
from simulation.units import duration, size


@dataclass(frozen=True)
class Reached:
    round: int
    bytes: int  # up + down through that round
    seconds: float  # since round 0's evaluation
    virtual_s: float | None  # the devices' time through that round (None: no devices)


def _reaches(acc: float, target: float) -> bool:
    # accuracies are recorded from float32: 780 of 1,000 right is 0.7799999713897705, which has
    # reached 78 %; 1e-6 is far below one example in any test set a run evaluates
    return acc >= target - 1e-6


def first_reach(run: Run, target: float) -> Reached | None:
    spent, start = 0, None
    for m in run.metrics:
        t = m.get("round", m.get("step"))
        if t == 0 and "elapsed_s" in m:
            start = m["elapsed_s"]
        spent += m.get("bytes_up", 0) + m.get("bytes_down", 0)
        if t and _reaches(m.get("test_acc_cal") or 0.0, target):
            seconds = m.get("elapsed_s", 0.0) - (start or 0.0)
            return Reached(int(t), spent, seconds, m.get("virtual_s"))
    return None


def cell(runs: list[Run], target: float) -> str:
    """"1.2 MiB · 3.4 min (r 50)" for one run; over seeds, the means of the seeds that reached
    it and how many did ("(2/3 seeds)"); "not reached" when none did."""
    hits = [r for r in (first_reach(run, target) for run in runs) if r is not None]
    if not hits:
        return "not reached"
    spent = mean_ci([h.bytes for h in hits])[0]
    seconds = mean_ci([h.seconds for h in hits])[0]
    where = f"r {hits[0].round}" if len(runs) == 1 else f"{len(hits)}/{len(runs)} seeds"
    virtual = [h.virtual_s for h in hits]
    on_devices = "" if None in virtual else f" · {duration(mean_ci(virtual)[0])}"
    return f"{size(spent)} · {duration(seconds)}{on_devices} ({where})"


def header(target: float, virtual: bool = False) -> str:
    return f"to {100 * target:g} % cal (bytes · time{' · device time' if virtual else ''})"
