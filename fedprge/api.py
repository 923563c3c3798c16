"""Configure, run, resume and sweep federated simulations from Python.

Each function is a thin layer over the code behind the `fedprge` command (clients/runconfig.py,
simulation/runner.py, simulation/sweep.py), not a second implementation: a run started here is
the run `fedprge run` would make, in the same kind of directory, with the same checks and the
same one-sentence errors. What this layer adds is Python-shaped arguments (keywords instead of
`--set` strings) and results (a `RunResult` read back from the run directory).

The heavy imports (torch, Flower, Ray) happen inside the functions, on first use, so that
`import fedprge` stays cheap for a script that only reads results.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clients.runconfig import Config

PathLike = str | os.PathLike[str]


# ---------------------------------------------------------------------------------------------
# configuration


def _key(name: str) -> str:
    """`clients_per_round` -> `clients-per-round`; in `strategy_args.trim_fraction` only the part
    before the dot is a config key (what follows is a keyword argument of the strategy, spelled
    as its `__init__` spells it)."""
    table, dot, arg = name.partition(".")
    return table.replace("_", "-") + dot + arg


def _set_text(key: str, value: Any) -> str:
    """A Python value as the text of `--set key=TEXT`, which the CLI's parser reads back to the
    same value: the override then goes through exactly the CLI's checks and error messages.
    Strings are passed as typed (so `targets="q,v"` means what it means on the command line),
    except a strategy argument's, which is quoted so that "1" stays a string."""
    from clients.runconfig import ConfigError

    if value is None:
        raise ConfigError(f"{key}=None is not a value (leave the key out to keep its default)")
    if hasattr(value, "tolist"):  # numpy scalars and arrays, e.g. a grid from np.linspace
        value = value.tolist()
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str) and "." not in key:
        return value
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r} is not a number, string, list or table") from None


def _set_items(overrides: Mapping[str, Any]) -> list[str]:
    items = []
    for name, value in overrides.items():
        key = _key(name)
        items.append(f"{key}={_set_text(key, value)}")
    return items


def load_config(path: PathLike | None = None, **overrides: Any) -> Config:
    """The validated config of a run: the defaults, then the TOML file `path`, then `overrides`.

    Keyword names are config keys with underscores for hyphens (`clients_per_round=3` sets
    `clients-per-round`); `strategy_args={"trim": 0.1}` replaces the strategy's keyword
    arguments, `**{"strategy_args.trim": 0.1}` sets one of them. Values are Python values
    (numbers, strings, lists of strings, dicts); a string is read as `--set` reads it.

    Each override is handed to the command line's own parser as `--set key=value`, so a config
    built here is the one the CLI would build from the same settings, and a mistake raises the
    same one-sentence `fedprge.ConfigError` (unknown key, with the closest known key; wrong
    type; impossible value) before anything runs.
    """
    from clients.runconfig import load_config as _load

    return _load(path, _set_items(overrides))


# ---------------------------------------------------------------------------------------------
# running


def _read_json(path: Path) -> Any:
    from simulation.rundata import RunDataError

    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RunDataError(f"cannot read {str(path)!r}: {err}") from None


@dataclass(frozen=True)
class RunResult:
    """A finished federated run, read back from its directory (which stays the record: nothing
    here is kept anywhere else). The fields are what docs/reference/run-directory.md describes.

    `dir`: the run directory. `summary`: summary.json (final accuracies, bytes, wall time).
    `metrics`: metrics.jsonl, one dict per round, round 0 (the zero-shot evaluation) first.
    `config`: config.json, the resolved config with kebab-case keys (feed it to `load_config`
    as overrides to repeat the run). The `*_path` fields name the other files: the update log
    (the whole trained state), the per-client accuracies, the last checkpoint, the final adapter.
    """

    dir: Path
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]
    config: dict[str, Any]
    metrics_path: Path
    update_log_path: Path
    clients_path: Path
    checkpoint_path: Path
    final_theta_path: Path

    @classmethod
    def from_dir(cls, run_dir: PathLike) -> RunResult:
        """Read a finished run directory (one with summary.json), e.g. one a sweep or the
        command line made; a `fedprge.RunDataError` when it is not one."""
        from simulation.rundata import RunDataError, read_metrics

        run_dir = Path(run_dir)
        if not (run_dir / "summary.json").is_file():
            raise RunDataError(f"{str(run_dir)!r} is not a finished run directory (no summary.json)")
        metrics_path = run_dir / "metrics.jsonl"
        try:
            metrics = read_metrics(metrics_path)
        except OSError as err:
            raise RunDataError(f"cannot read {str(metrics_path)!r}: {err}") from None
        return cls(dir=run_dir, summary=_read_json(run_dir / "summary.json"), metrics=metrics,
                   config=_read_json(run_dir / "config.json"), metrics_path=metrics_path,
                   update_log_path=run_dir / "update_log.jsonl",
                   clients_path=run_dir / "clients.json",
                   checkpoint_path=run_dir / "checkpoint.json",
                   final_theta_path=run_dir / "final_theta.npy")

    @property
    def evals(self) -> list[dict[str, Any]]:
        """The records that carry a test evaluation (round 0 and every `eval-every` rounds)."""
        return [m for m in self.metrics if "test_acc" in m]


def _as_the_command_does() -> None:
    """The process settings `fedprge` (simulation/cli.py `main`) makes before a run: no
    tokenizer thread pools in the forked client processes, and the libraries' deprecation
    notices addressed to their own developers kept quiet (ours still show)."""
    from simulation.quiet import quiet_library_warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_library_warnings()


def _check_config(cfg: Any) -> None:
    from clients.runconfig import Config

    if not isinstance(cfg, Config):
        raise TypeError(f"run() takes a Config (from fedprge.load_config), got {type(cfg).__name__}")


def run(cfg: Config, out: PathLike | None = None, progress: bool = False) -> RunResult:
    """Run one federated simulation, exactly as `fedprge run` does, and return its result.

    `cfg`: from `load_config`. `out`: the run directory to create (absent, or empty); by
    default a fresh `<cfg.runs_dir>/run-<time>/`, so that a run never overwrites another. `progress`:
    the command line's progress bar and summary table, off by default since a script or a
    notebook usually wants the returned figures instead.

    It starts Flower's simulation runtime (a local SuperLink on Ray) and blocks until the run
    ends. Errors: `fedprge.ConfigError` for a setting that cannot work (checked before anything
    starts), `fedprge.RunError` when the simulation stopped before finishing; the directory then
    holds what was done so far and `resume(dir)` continues it. With `engine="executorch"` the
    calling process lowers the model's programs first and then, as the command does, lowers its
    own CPU priority (nice +10) so that the client processes get the cores.
    """
    _check_config(cfg)
    from simulation.runner import run_federated

    _as_the_command_does()
    return RunResult.from_dir(run_federated(cfg, out=out, progress=progress))


def resume(run_dir: PathLike, trust_strategy: str | None = None, progress: bool = False) -> RunResult:
    """Continue a stopped run in its own directory from its last checkpoint, with its own
    config, as `fedprge run --resume RUN_DIR` does; the result is that of the whole run.

    A run directory may come from someone else, so a plug-in strategy (`module:Class`) named in
    its config is refused unless `trust_strategy` names the same one: loading it would import
    and run that module's code. A finished run (summary.json exists) is a `ConfigError`.
    """
    from simulation.runner import resume_config, run_federated

    cfg = resume_config(run_dir, trust_strategy=trust_strategy)
    _as_the_command_does()
    run_federated(cfg, progress=progress, resume=run_dir)
    return RunResult.from_dir(run_dir)


# ---------------------------------------------------------------------------------------------
# sweeping


def _grid_items(grid: Mapping[str, Sequence[Any]]) -> list[str]:
    """{"local_steps": [2, 8]} -> ["local-steps=[2, 8]"]: a JSON list, which `--grid` reads
    item by item (so a value holding commas stays one value), giving each point the name and
    the `--set` text the command line gives it: `--grid local-steps=2,8` is the same sweep."""
    from simulation.sweep import SweepError

    items = []
    for name, values in grid.items():
        key = _key(name)
        if hasattr(values, "tolist"):  # a numpy array
            values = values.tolist()
        if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
            raise SweepError(f"grid {key}: give a list of values, got {values!r}")
        values = list(values)
        texts = [v if isinstance(v, str) else json.loads(_set_text(key, v)) for v in values]
        items.append(f"{key}={json.dumps(texts)}")
    return items


def sweep(config: PathLike | None = None, *, grid: Mapping[str, Sequence[Any]], out: PathLike,
          overrides: Mapping[str, Any] | None = None, progress: bool = False) -> list[Path]:
    """One run per point of `grid` (the cartesian product of its value lists), as
    `fedprge sweep` runs them, into one sweep directory; returns the points' run directories in
    grid order, every one finished (read them with `load_runs([out])` or `RunResult.from_dir`).

    `config`: the TOML file every point starts from; `overrides`: settings of every point, as
    `load_config`'s keywords; `grid`: config key (underscores or hyphens) -> its values, e.g.
    `{"method": ["prge", "fo"], "seed": [0, 1, 2]}`. `out` is required because it is how a
    sweep resumes: call again with the same arguments and finished points are skipped and a
    point killed mid-run is set aside and run again. The directory layout (sweep.json, one
    `key=value_...` directory per point, logs/) is the command's, so the command can resume a
    sweep started here and the other way round.

    Every point's config is checked before the first run (`fedprge.SweepError`, one sentence).
    Each point runs in a child process; when any fails, the others still run, and then
    `fedprge.RunError` names the failed points and their logs (call again to retry them).
    """
    from clients.runconfig import ConfigError
    from simulation.runner import RunError
    from simulation.sweep import SweepError, run_sweep

    try:
        grid_items, sets = _grid_items(grid), _set_items(overrides or {})
    except ConfigError as err:  # a value no `--set` can carry: one kind of error per function
        raise SweepError(str(err)) from None
    _as_the_command_does()
    out = Path(out)
    config_path = os.fspath(config) if config is not None else None
    code = run_sweep(config_path, grid_items, sets, out, quiet=not progress)
    points = _read_json(out / "sweep.json")["points"]
    failed = [p["name"] for p in points if p["status"] == "failed"]
    if code or failed:
        raise RunError(f"sweep {str(out)!r}: {len(failed)} of {len(points)} points failed "
                       f"({', '.join(failed)}); see {out / 'logs'}; call sweep() again to retry them")
    return [out / p["name"] for p in points]
