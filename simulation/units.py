"""How report tables write percentages, byte counts and durations."""

from __future__ import annotations

from simulation.stats import mean_ci


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def size(n: float | None) -> str:
    """Binary units: a seeds-and-scalars upload is tens of bytes, a dense one megabytes."""
    if n is None:
        return "-"
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,.0f} B"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def pct_ci(values: list[float | None]) -> str:
    """"65.0 ± 1.2 %": mean and 95 % half-width over the values known; "-" when none is."""
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    mean, half = mean_ci(known)
    return pct(mean) if half is None else f"{100 * mean:.1f} ± {100 * half:.1f} %"


def mean_known(values: list[float | None]) -> float | None:
    """The mean of the values known (None: none is)."""
    known = [v for v in values if v is not None]
    return mean_ci(known)[0] if known else None
