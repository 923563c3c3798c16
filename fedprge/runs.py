"""Run directories read back as a table, for your own analysis and figures.

`load_runs` reads what `fedprge plot` and `fedprge report` read (simulation/rundata.py: run
directories, or sweep directories standing for their points) and `Runs.to_dataframe` lays it out
as one row per run and evaluated round. The cumulative byte counts and the choice of config
columns come from the same helpers the plots and labels use, so a figure drawn from the table
agrees with `fedprge plot` on every number.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

if TYPE_CHECKING:
    import pandas as pd

    from simulation.rundata import Run

PathLike = str | os.PathLike[str]


def _cell(value: Any) -> Any:
    """A config value as a table cell that can be grouped by: a list of targets becomes
    "q,v" (as in a label), anything else unhashable its JSON."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value)
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True)
    return value


class Runs(Sequence["Run"]):
    """The runs `load_runs` read, in the order given (a sweep's points in its order).

    A sequence of `simulation.rundata.Run` (`path`, `config`, `metrics`, `summary`, which is
    None for a run killed before the end, and `label`, the "method=fo q=16" of `fedprge plot`'s
    legend), and a table of them: `to_dataframe()`.
    """

    #: The columns every table has, in this order; the columns after them are config keys.
    COLUMNS: tuple[str, ...] = ("run", "seed", "round", "bytes_up", "bytes_down", "acc", "acc_cal",
                                "elapsed_s", "virtual_s", "path")

    def __init__(self, runs: Iterable[Run]):
        self._runs = list(runs)

    def __len__(self) -> int:
        return len(self._runs)

    @overload
    def __getitem__(self, index: int) -> Run: ...

    @overload
    def __getitem__(self, index: slice) -> Runs: ...

    def __getitem__(self, index: int | slice) -> Run | Runs:
        if isinstance(index, slice):
            return Runs(self._runs[index])
        return self._runs[index]

    def __iter__(self) -> Iterator[Run]:
        return iter(self._runs)

    def __repr__(self) -> str:
        names = ", ".join(r.path.name for r in self._runs[:4])
        more = f", ... ({len(self._runs)} runs)" if len(self._runs) > 4 else ""
        return f"Runs([{names}{more}])"

    def to_dataframe(self) -> pd.DataFrame:
        """One row per run and evaluated round (round 0, the zero-shot model, and every
        `eval-every` rounds), in run order then round order.

        Columns (`Runs.COLUMNS`): `run` (the directory's name), `seed`, `round` (the step, for a
        `fedprge train` run), `bytes_up` and `bytes_down` (sent in all the run's training
        rounds up to and including this one: the running total `fedprge plot` draws, 0 at round
        0; NaN for a run that counts no bytes, i.e. `fedprge train`), `acc` and `acc_cal` (raw
        and calibrated test accuracy, fractions in [0, 1]), `elapsed_s` (wall-clock seconds of
        this host since the run started), `virtual_s` (the devices' virtual time at the end of
        this round, 0 at round 0; NaN for a run without `devices`), `path` (the directory,
        unambiguous where two sweeps share point names); then one column per config key whose
        value differs between the runs, named as in config.json (`method`, `local-steps`,
        `strategy-args.trim`), which are the keys `fedprge plot` names in its legend. A key that
        does not vary gets no column: it says nothing about the difference between rows, and
        `run.config` has it.
        """
        import pandas as pd

        from simulation.rundata import cumulative_bytes, differing_keys, flat_configs

        runs = self._runs
        flats = flat_configs(runs)
        varying = [k for k in differing_keys(runs, flats=flats) if k not in self.COLUMNS]
        rows = []
        for run, flat in zip(runs, flats, strict=True):
            totals = cumulative_bytes(run)
            for i, m in enumerate(run.metrics):
                if "test_acc" not in m:
                    continue
                up, down = totals[i] if totals else (None, None)
                row = {"run": run.path.name, "seed": flat.get("seed") if flat else None,
                       "round": m.get("round", m.get("step", i)), "bytes_up": up, "bytes_down": down,
                       "acc": m["test_acc"], "acc_cal": m.get("test_acc_cal"),
                       "elapsed_s": m.get("elapsed_s"), "virtual_s": _virtual_at(run, m),
                       "path": str(run.path)}
                row.update({k: _cell(flat.get(k)) if flat else None for k in varying})
                rows.append(row)
        return pd.DataFrame(rows, columns=[*self.COLUMNS, *varying])


def load_runs(paths: PathLike | Iterable[PathLike]) -> Runs:
    """Read run directories and sweep directories (a sweep stands for its points that have
    started), in the order given; one path or a list of them.

    A run killed before the end is read up to its last complete line, with `summary` None, so
    that a sweep can be looked at while it runs. A path that is neither kind of directory, or a
    file that is not JSON, is a `fedprge.RunDataError` (one sentence).
    """
    from simulation.rundata import load_runs as _load

    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    return Runs(_load([Path(p) for p in paths]))


def _virtual_at(run: Run, record: dict) -> float | None:
    """The devices' virtual time after this record's round (round 0: 0 s); None without devices."""
    if "virtual_s" in record:
        return float(record["virtual_s"])
    if record.get("round") == 0 and any("virtual_s" in m for m in run.metrics):
        return 0.0
    return None
