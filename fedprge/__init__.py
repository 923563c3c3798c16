"""fedprge from Python: configure, run, sweep and read federated P-RGE simulations.

The one namespace a script or notebook needs. It wraps the code behind the `fedprge` command
(prge/, clients/, strategies/, simulation/), so a run made here is the run the command makes,
in the same run directory, with the same checks and one-sentence errors::

    import fedprge

    cfg = fedprge.load_config("configs/run-tiny.toml", rounds=5, clients_per_round=3)
    result = fedprge.run(cfg, out="runs/tiny")        # blocks; a RunResult
    print(result.summary["final_acc_cal"], result.summary["bytes_up"])

    fedprge.sweep("configs/run-tiny.toml", grid={"method": ["prge", "fo"], "seed": [0, 1, 2]},
                  out="runs/cmp")                     # resumable: call it again after a crash
    df = fedprge.load_runs(["runs/cmp"]).to_dataframe()   # one row per run and evaluated round
    print(df[df["round"] == df["round"].max()].groupby("method")["acc_cal"].mean())

A plug-in aggregation rule subclasses `fedprge.Strategy` (docs/reference/strategy-api.md) and is
named in the config as `strategy="package.module:Class"`; a personalization method subclasses
`fedprge.Personalization` (docs/how-to/own-personalization.md) and is named as
`personalization="package.module:Class"`. The whole API is described in
docs/reference/python-api.md.

`import fedprge` itself is cheap: torch, Flower and Ray are imported by the functions that need
them, on first use, and the classes re-exported from the wrapped packages (`Config`,
`Strategy`, the error types) are imported when first named.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from fedprge.api import RunResult, load_config, resume, run, sweep
from fedprge.runs import Runs, load_runs

if TYPE_CHECKING:
    from clients.personalization import Device, Personalization, PersonalizationError
    from clients.runconfig import Config, ConfigError
    from simulation.rundata import Run, RunDataError
    from simulation.runner import RunError
    from simulation.sweep import SweepError
    from strategies.base import ScalarReply
    from strategies.base import ScalarStrategy as Strategy

try:
    __version__: str = version("fedprge")  # pyproject.toml's, as installed: one source of truth
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"

# name -> (module, attribute): imported on first use (PEP 562), since each of these modules
# pulls in torch, and the error types in particular are named only when something went wrong.
_LAZY: dict[str, tuple[str, str]] = {
    "Config": ("clients.runconfig", "Config"),
    "ConfigError": ("clients.runconfig", "ConfigError"),
    "Strategy": ("strategies.base", "ScalarStrategy"),
    "Personalization": ("clients.personalization", "Personalization"),
    "Device": ("clients.personalization", "Device"),
    "PersonalizationError": ("clients.personalization", "PersonalizationError"),
    "ScalarReply": ("strategies.base", "ScalarReply"),
    "Run": ("simulation.rundata", "Run"),
    "RunDataError": ("simulation.rundata", "RunDataError"),
    "RunError": ("simulation.runner", "RunError"),
    "SweepError": ("simulation.sweep", "SweepError"),
}

__all__ = [
    "Config", "ConfigError", "Device", "Personalization", "PersonalizationError", "Run",
    "RunDataError", "RunError", "RunResult", "Runs", "ScalarReply", "Strategy", "SweepError",
    "__version__", "load_config", "load_runs", "resume", "run", "sweep",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'fedprge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
