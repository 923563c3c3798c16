"""`fedprge run`: one federated simulation on Flower's supported simulation runtime (a local
SuperLink with the Ray backend, the runtime `flwr run` uses).

This module is the only place that starts Flower's simulation runtime.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from clients.runconfig import Config, ConfigError
from simulation.checkpoint import CheckpointError, load_checkpoint
from simulation.environment import record_environment
from simulation.failures import STOPPED
from simulation.flower_runtime import (
    RuntimeStartError,
    kill_all,
    local_superlink,
    stop_tree,
    submit,
    write_app,
)
from simulation.follow import LogRelay, follow
from simulation.rundir import claim_run_dir, hold_run_dir, write_json

FLOWER_LOG = "flower.log"  # the SuperLink's log and Flower's log of the run, in the run directory
CHECK_NICENESS = 10  # see _lower_or_discard
SIM_GONE_S = 5.0  # a simulation process gone this long while its run is not over: it died
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt): ")


class RunError(RuntimeError):
    """The simulation did not finish (one sentence pointing at the run directory)."""


def federation_config(cfg: Config) -> dict[str, object]:
    """Flower's federation config for the run: its supernodes and the Ray backend's settings.

    Client processes' own output (library warnings, ExecuTorch's CPU probing) stays in Ray's
    session logs; what matters reaches the server anyway (error replies, counted per round)."""
    fed: dict[str, object] = {"num-supernodes": cfg.num_clients,
                              "init-args-logging-level": "ERROR", "init-args-log-to-driver": False}
    if cfg.ray_address:  # the cluster's CPUs; Flower's runtime gives an actor whole CPUs
        if cfg.client_cpus != int(cfg.client_cpus):
            raise ConfigError(f"client-cpus={cfg.client_cpus!r} must be a whole number with "
                              "ray-address (Flower's runtime gives each client whole CPUs)")
        fed["client-resources-num-cpus"] = int(cfg.client_cpus)
    else:
        # A local Ray offering cores / client-cpus CPUs, one per actor, runs as many clients at once
        # as client-cpus per actor would (a fraction of a CPU cannot be asked of Flower's runtime).
        cores = cfg.ray_cpus or os.cpu_count() or 1
        fed["init-args-num-cpus"] = max(1, round(cores / cfg.client_cpus))
        fed["client-resources-num-cpus"] = 1
    return fed


def resume_config(run_dir: str | Path, trust_strategy: str | None = None) -> Config:
    """The config of a stopped run, to continue it in its own directory.

    A run directory may come from someone else: only data is read from it, and a plug-in
    strategy it names (`module:Class`) is refused unless the user names the same one on the
    command line (`trust_strategy`), since loading it imports and runs that module's code."""
    from clients.runconfig import config_from_mapping

    run_dir = Path(run_dir)
    _check_resumable(run_dir)
    cfg = config_from_mapping(json.loads((run_dir / "config.json").read_text()), saved=True)
    _check_strategy_trusted(run_dir, cfg.strategy, trust_strategy)
    return cfg


def _check_resumable(run_dir: Path) -> None:
    """A run directory with a config, not finished, with a readable checkpoint (or none yet);
    else one line. Checked before and again under the directory's lock: a run may finish
    between the two."""
    if not (run_dir / "config.json").is_file():
        raise ConfigError(f"{str(run_dir)!r} is not a run directory (no config.json)")
    if (run_dir / "summary.json").is_file():
        raise ConfigError(f"run {str(run_dir)!r} has already finished (summary.json exists)")
    try:
        load_checkpoint(run_dir)  # readable, or one line now rather than a traceback from Ray
    except CheckpointError as err:
        raise ConfigError(str(err)) from None


def _check_strategy_trusted(run_dir: Path, strategy: str, trusted: str | None) -> None:
    from strategies.loader import is_plugin

    if not is_plugin(strategy):  # imports nothing: a built-in, or a name the loader refuses
        if trusted:
            raise ConfigError(f"run {str(run_dir)!r} uses the strategy {strategy!r}, which is "
                              "not a plug-in: drop --trust-strategy")
        return
    if trusted != strategy:
        raise ConfigError(f"run {str(run_dir)!r} uses the plug-in strategy {strategy!r}; "
                          "resuming would import and run its code: pass --trust-strategy "
                          f"{strategy} if you trust it")


def check_devices(cfg: Config) -> None:
    """A run's device profiles and availability trace, read before anything starts: a mistake in
    them is a one-line error (exit 2), not a run that stops at its first round."""
    if not cfg.devices:
        return
    from clients.devices import DeviceProfileError, fleet
    from simulation.availability import AvailabilityError, availability_of

    try:
        fleet(cfg.devices, cfg.num_clients, cfg.seed)
        availability_of(cfg)
    except (DeviceProfileError, AvailabilityError) as err:
        raise ConfigError(str(err)) from None


def check_plugins(cfg: Config) -> None:
    """Build the run's strategy and personalization method once, so that a wrong name or
    argument is one line before anything starts (ConfigError), not an error in every client."""
    from clients.personalization import PersonalizationError, load_personalization
    from strategies.loader import StrategyError, load_strategy

    try:
        load_strategy(cfg.strategy, **cfg.strategy_args)
        method = load_personalization(cfg.personalization, **cfg.personalization_args)
    except (StrategyError, PersonalizationError) as err:
        raise ConfigError(str(err)) from None
    try:
        method.validate(cfg)
    except ValueError as err:
        raise ConfigError(f"personalization {cfg.personalization!r}: {err}") from None


def run_federated(cfg: Config, out: str | Path | None = None, progress: bool = True,
                  resume: str | Path | None = None) -> Path:
    """A new run in `out` (or a fresh directory), or, with `resume`, the rest of a stopped run
    from its last checkpoint (cfg must then be `resume_config(resume)`)."""
    check_plugins(cfg)  # fail before starting anything
    check_devices(cfg)
    fed = federation_config(cfg)
    # held until this command exits: a second command resuming (or writing into) a live run would
    # interleave its metrics and checkpoints with this one's
    if resume:
        run_dir, lock = Path(resume), hold_run_dir(Path(resume))
        try:
            _check_resumable(run_dir)  # again, under the lock
        except ConfigError:
            os.close(lock)
            raise
    else:
        run_dir, lock = claim_run_dir(cfg.runs_dir, "run", out)
    try:
        if not resume:
            write_json(run_dir / "config.json", cfg.to_dict())
        return _run_in(run_dir.resolve(), cfg, fed, progress, bool(resume))
    finally:
        os.close(lock)


def _run_in(run_dir: Path, cfg: Config, fed: dict, progress: bool, resume: bool) -> Path:
    """Run (or resume) the simulation in `run_dir`, which this command holds the lock of."""
    record_environment(run_dir)  # one record per start of the run
    log = run_dir / FLOWER_LOG
    log_start = log.stat().st_size if log.is_file() else 0  # a resumed run appends to it
    env = {"RAY_ADDRESS": cfg.ray_address} if cfg.ray_address else {}
    with tempfile.TemporaryDirectory(prefix="fedprge-flower-") as work:
        app = write_app(Path(work) / "app", {"config-json": json.dumps(cfg.to_dict()),
                                             "run-dir": str(run_dir), "resume": bool(resume),
                                             "owner-pid": os.getpid()})
        watch = None
        try:
            with local_superlink(Path(work), log, env) as link:
                stream = submit(link, app, fed, log)
                watch = RunWatch(link.proc, log)
                try:
                    # While Flower starts the simulation process and Ray, lower (or find) the
                    # programs here, where the user sees it: the run's processes wait for them (a
                    # lock per program) and load them, instead of lowering them once each.
                    if cfg.engine == "executorch":
                        _lower_or_discard(cfg, None if resume else run_dir)
                    follow(stream, run_dir / "metrics.jsonl", cfg.rounds, progress,
                           check=watch, relay=LogRelay(log, log_start))
                finally:
                    stop_tree(stream.pid)
        except RuntimeStartError as err:
            raise RunError(str(err)) from None
        finally:  # after the SuperLink's own stop: what a dead simulation process left behind
            kill_all(list(watch.seen.values()) if watch else [])
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        cause = _last_error(log, log_start)
        raise RunError(f"the simulation stopped before finishing{cause}; see {log} and "
                       f"{run_dir}/metrics.jsonl (continue it with: fedprge run --resume {run_dir})")
    if progress:
        print_summary(run_dir, json.loads(summary_path.read_text()))
    return run_dir


def _lower_or_discard(cfg: Config, made: Path | None) -> None:
    """`_lower_programs`; if it fails (a model that cannot be loaded, ...), the run directory
    this command made holds nothing yet: remove it, so the mistake leaves nothing behind.

    It runs beside the simulation process's start-up, on the same cores. With a warm cache the
    run does not wait for it (its processes find the programs themselves), so this command
    yields them the CPU: lower priority from here on (it only polls files afterwards)."""
    os.nice(CHECK_NICENESS)
    try:
        _lower_programs(cfg)
    except BaseException:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise


class RunWatch:
    """The check `follow` calls each poll. It returns False (stop following) once the simulation
    process the SuperLink started has been gone for SIM_GONE_S while the log stream goes on
    (killed by the OOM killer, say: Flower would notice only when its heartbeat times out,
    minutes later), and raises when the SuperLink itself has stopped. It remembers every process
    of the run it has seen: when the simulation process dies, Ray's agents outlive it, orphaned."""

    def __init__(self, superlink: subprocess.Popen, log: Path):
        self.superlink, self.log = superlink, log
        self.seen: dict[int, psutil.Process] = {}
        self.simulation_seen, self.gone_at = False, None

    def _simulation_alive(self) -> bool:
        try:
            children = psutil.Process(self.superlink.pid).children(recursive=True)
        except psutil.Error:
            return False
        alive = False
        for proc in children:
            self.seen.setdefault(proc.pid, proc)
            try:
                alive = alive or "flwr-simulation" in " ".join(proc.cmdline())
            except psutil.Error:  # gone, or a zombie
                continue
        return alive

    def __call__(self) -> bool:
        if self.superlink.poll() is not None:
            raise RuntimeStartError(f"Flower's SuperLink stopped during the run; see {self.log}")
        alive = self._simulation_alive()
        self.simulation_seen = self.simulation_seen or alive
        if alive or not self.simulation_seen:
            self.gone_at = None
            return True
        self.gone_at = self.gone_at or time.monotonic()
        return time.monotonic() - self.gone_at < SIM_GONE_S


def _last_error(log: Path, start: int) -> str:
    """': <the last exception line>' of this start's part of Flower's log, or ''."""
    with log.open("rb") as f:
        f.seek(start)
        lines = f.read().decode(errors="replace").splitlines()
    errors = [ln.strip().removeprefix(STOPPED) for ln in lines
              if EXCEPTION_LINE.match(ln) or ln.startswith(STOPPED)]
    return f" ({errors[-1]})" if errors else ""


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
    ]
    if s.get("client_personal_p10") is not None:  # the distribution over clients
        rows.append((f"personalized ({s.get('personalization', 'finetune')}): p10 / made worse",
                     f"{pct(s['client_personal_p10'])} / {pct(s['client_hurt_share'])}"))
    if s.get("newcomers_scored"):
        rows.append(("newcomers: global / personalized (bytes down)",
                     f"{pct(s['newcomer_global_acc'])} / {pct(s['newcomer_personal_acc'])} "
                     f"({s['newcomer_bytes_down']:,.0f})"))
    rows += [
        ("bytes up / down (training rounds)", f"{s['bytes_up']:,} / {s['bytes_down']:,}"),
        ("bytes up per client per round", f"{s['bytes_up_per_client_round']:,.0f}"),
        ("adapter dims / update-log entries", f"{s['adapter_dim']:,} / {s['log_len']:,}"),
        ("wall time", f"{s['wall_s'] / 60:.1f} min"),
        ("client steps (per minute)",
         f"{s['client_steps']:,} ({60 * s['client_steps'] / max(s['wall_s'], 1e-9):,.0f})"),
    ]
    if "virtual_s" in s:  # edge devices in virtual time
        from simulation.units import duration

        energy = "-" if s.get("energy_j") is None else f"{s['energy_j'] / 1000:,.1f} kJ"
        rows += [("virtual time on the devices (rounds)", duration(s["virtual_s"])),
                 ("device-hours / energy", f"{s['device_hours']:.2f} h / {energy}")]
    width = max(len(k) for k, _ in rows)
    print(f"run directory: {run_dir}")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
