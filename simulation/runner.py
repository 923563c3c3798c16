"""`fedprge run`: one federated simulation on Flower's simulation engine with the Ray backend.

This module is the only place that starts Flower's simulation runtime.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

from clients.runconfig import Config, ConfigError
from simulation.checkpoint import CheckpointError, load_checkpoint
from simulation.environment import record_environment
from simulation.quiet import quiet_library_warnings
from simulation.rundir import new_run_dir, write_json

ACTOR_RESTARTS = -1  # no limit: the server resends a lost message a bounded number of times


class RunError(RuntimeError):
    """The simulation did not finish (one sentence pointing at the run directory)."""


def backend_config(cfg: Config) -> dict:
    # Client processes' own output (library deprecation warnings, ExecuTorch's CPU probing) stays
    # in Ray's session logs rather than flooding the terminal; what matters reaches the driver
    # anyway: error replies, counted per round, and Flower's log of any client exception.
    init_args: dict = {"include_dashboard": False, "logging_level": logging.ERROR,
                       "log_to_driver": False}
    if cfg.ray_address:
        init_args = {"address": cfg.ray_address, "logging_level": logging.ERROR,
                     "log_to_driver": False}
    else:
        init_args["num_cpus"] = cfg.ray_cpus or os.cpu_count() or 1
    # Flower hands client_resources to the actors' Ray options. A client process that dies (OOM
    # killer, a stray kill) is started again by Ray; the server sends the lost message
    # again (FederatedServer.exchange), so the run's results do not change.
    return {"client_resources": {"num_cpus": cfg.client_cpus, "num_gpus": 0.0,
                                 "max_restarts": ACTOR_RESTARTS},
            "init_args": init_args}


def resume_config(run_dir: str | Path) -> Config:
    """The config of a stopped run, to continue it in its own directory."""
    from clients.runconfig import config_from_mapping

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise ConfigError(f"{str(run_dir)!r} is not a run directory (no config.json)")
    if (run_dir / "summary.json").is_file():
        raise ConfigError(f"run {str(run_dir)!r} has already finished (summary.json exists)")
    try:
        load_checkpoint(run_dir)  # readable, or one line now rather than a traceback from Ray
    except CheckpointError as err:
        raise ConfigError(str(err)) from None
    return config_from_mapping(json.loads((run_dir / "config.json").read_text()))


def run_federated(cfg: Config, out: str | Path | None = None, progress: bool = True,
                  resume: str | Path | None = None) -> Path:
    """A new run in `out` (or a fresh directory), or, with `resume`, the rest of a stopped run
    from its last checkpoint (cfg must then be `resume_config(resume)`)."""
    from flwr.simulation import run_simulation

    quiet_library_warnings()  # again: importing flwr.simulation turned deprecations back on
    # Flower prints through its own handler; ExecuTorch's XNNPACK partitioner gives the root
    # logger one at import (basicConfig), which would print Flower's debug records a second time.
    logging.getLogger("flwr").propagate = False

    from clients.app import build_client_app
    from simulation.server_app import build_server_app
    from strategies.loader import StrategyError, load_strategy

    try:
        load_strategy(cfg.strategy, **cfg.strategy_args)  # fail before starting Ray
    except StrategyError as err:
        raise ConfigError(str(err)) from None
    if cfg.engine == "executorch":
        _lower_programs(cfg)
    if resume:
        run_dir = Path(resume)
    else:
        run_dir = new_run_dir(cfg.out, "run", out)
        write_json(run_dir / "config.json", cfg.to_dict())
    record_environment(run_dir)  # one record per process that works on the run
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_simulation(server_app=build_server_app(cfg, run_dir, progress, resume=bool(resume)),
                       client_app=build_client_app(cfg, device_dir=run_dir / "devices"),
                       num_supernodes=cfg.num_clients,
                       backend_config=backend_config(cfg))
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise RunError(f"the simulation stopped before finishing; see {run_dir}/metrics.jsonl "
                       f"(continue it with: fedprge run --resume {run_dir})")
    if progress:
        print_summary(run_dir, json.loads(summary_path.read_text()))
    return run_dir


def _lower_programs(cfg: Config) -> None:
    """Pay ExecuTorch lowering once, here, before the Ray actors start: they then load the cached
    programs (2q copies for local steps, 1 for evaluation) instead of lowering them in parallel."""
    from clients.build import build
    from prge.prefix_cache import PrefixCachedEngine

    setup = build(cfg)
    # first-order clients backpropagate through the eager model: only evaluation needs a program
    copies = [1] if cfg.method == "fo" else [2 * cfg.q, 1]
    if isinstance(setup.engine, PrefixCachedEngine):  # the prefix program + suffix programs
        setup.engine.prepare(copies, setup.encoder.token_buckets())
    else:
        setup.engine.prepare(copies)


def print_summary(run_dir: Path, s: dict) -> None:
    def pct(x):
        return "-" if x is None else f"{100 * x:.1f} %"

    rows = [
        ("zero-shot accuracy (raw / calibrated)",
         f"{pct(s['zero_shot_acc'])} / {pct(s['zero_shot_acc_cal'])}"),
        ("final global accuracy (raw / calibrated)",
         f"{pct(s['final_acc'])} / {pct(s['final_acc_cal'])}"),
        ("clients' own test data: global / personalized",
         f"{pct(s['client_global_acc'])} / {pct(s['client_personal_acc'])}"),
        ("bytes up / down (training rounds)", f"{s['bytes_up']:,} / {s['bytes_down']:,}"),
        ("bytes up per client per round", f"{s['bytes_up_per_client_round']:,.0f}"),
        ("adapter dims / update-log entries", f"{s['adapter_dim']:,} / {s['log_len']:,}"),
        ("wall time", f"{s['wall_s'] / 60:.1f} min"),
        ("client steps (per minute)",
         f"{s['client_steps']:,} ({60 * s['client_steps'] / max(s['wall_s'], 1e-9):,.0f})"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"run directory: {run_dir}")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
