"""Flower's supported runtime (what `fedprge run` uses: a local SuperLink, the simulation process,
Ray) against the deprecated in-process `run_simulation` it replaced, side by side in one run.

    python bench/runtime.py --config configs/run-tiny.toml --repeats 2
    python bench/runtime.py --config configs/demo.toml --set rounds=30 --set eval-every=30 \
        --set eval-size=200 --set personal-steps=0 --set client-eval-size=0
    python bench/runtime.py --config configs/run-tiny.toml --repeats 2 --save   # also docs/results/runtime.md

Each repeat runs the config once through each runtime, alternating, as a fresh command (the
in-process one through tests/simulation/in_process.py). Programs are lowered before timing (both
paths find them cached). Phases, from the command's start:
  start-up   until the server's zero-shot record (round 0): runtime start, Ray, the server's setup
             and its first evaluation;
  per round  the mean of the server's own per-round times (metrics' elapsed_s), rounds 2..R
             (round 1 also starts the client processes);
  teardown   from summary.json to the command's exit.
Both runs must end with the same final theta hash. Ends with one JSON line of its figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clients.runconfig import load_config  # noqa: E402
from simulation.rundir import read_jsonl  # noqa: E402


def _lines(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except OSError:
        return 0


def timed(cmd: list[str], out: Path) -> dict:
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = summary = None
    while proc.poll() is None:
        now = time.monotonic() - t0
        if first is None and _lines(out / "metrics.jsonl") >= 1:
            first = now
        if summary is None and (out / "summary.json").is_file():
            summary = now
        time.sleep(0.02)
    end = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd[:4])} failed: {proc.stderr.read().decode()[-2000:]}")
    metrics = read_jsonl(out / "metrics.jsonl")
    elapsed = [m["elapsed_s"] for m in metrics]
    per_round = [b - a for a, b in zip(elapsed[1:-1], elapsed[2:], strict=True)]  # rounds 2..R
    return {"startup_s": first, "per_round_s": statistics.mean(per_round),
            "teardown_s": end - summary, "total_s": end,
            "theta_hash": metrics[-1]["theta_hash"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/run-tiny.toml")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--save", nargs="?", const=True, metavar="PAGE",
                    help="also write docs/results/runtime.json and its page "
                         "(or PAGE.json: a second setting's page)")
    args = ap.parse_args()
    cfg = load_config(args.config, args.overrides)
    if cfg.engine == "executorch":  # untimed: both runtimes then find the programs cached
        subprocess.run([sys.executable, "-c", "import sys, json; from clients.runconfig import "
                        "config_from_mapping; from simulation.runner import _lower_programs; "
                        "_lower_programs(config_from_mapping(json.loads(sys.argv[1])))",
                        json.dumps(cfg.to_dict())], cwd=ROOT, check=True, capture_output=True)
    runs: dict[str, list[dict]] = {"in_process": [], "superlink": []}
    with tempfile.TemporaryDirectory() as tmp:
        cfg_json = Path(tmp) / "config.json"
        cfg_json.write_text(json.dumps(cfg.to_dict()))
        for i in range(args.repeats):
            old, new = Path(tmp) / f"old-{i}", Path(tmp) / f"new-{i}"
            runs["in_process"].append(timed(
                [sys.executable, "-m", "tests.simulation.in_process", str(cfg_json), str(old)], old))
            runs["superlink"].append(timed(
                [sys.executable, "-m", "simulation.cli", "run", "--config", args.config,
                 *[a for kv in args.overrides for a in ("--set", kv)], "--out", str(new),
                 "--quiet"], new))
    same = len({r["theta_hash"] for rs in runs.values() for r in rs}) == 1
    phases = ("startup_s", "per_round_s", "teardown_s", "total_s")
    mean = {name: {p: statistics.mean(r[p] for r in rs) for p in phases}
            for name, rs in runs.items()}
    print(f"{args.config} {' '.join(args.overrides)}: {cfg.rounds} rounds, {args.repeats} "
          f"repeat(s) each, same final theta in every run: {same}")
    print(f"{'phase':<12}{'in-process':>12}{'SuperLink':>12}{'difference':>12}{'ratio':>8}")
    for p in phases:
        a, b = mean["in_process"][p], mean["superlink"][p]
        print(f"{p[:-2]:<12}{a:>11.2f}s{b:>11.2f}s{b - a:>+11.2f}s{b / a:>8.2f}")
    figures = {"bench": "runtime", "config": args.config, "overrides": args.overrides,
               "repeats": args.repeats, "same_final_theta": same,
               **{f"{name}_{p}": round(v, 3) for name, m in mean.items() for p, v in m.items()},
               "startup_extra_s": round(mean["superlink"]["startup_s"]
                                        - mean["in_process"]["startup_s"], 3),
               "per_round_ratio": round(mean["superlink"]["per_round_s"]
                                        / mean["in_process"]["per_round_s"], 4)}
    if args.save:
        from simulation.benchpage import save, table

        title = (f"Seconds per phase of {args.config}{''.join(' --set ' + kv for kv in args.overrides)} "
                 f"({cfg.model}, {cfg.rounds} rounds, engine {cfg.engine}) through each runtime, "
                 f"mean of {args.repeats} run(s) each")
        a, b = mean["in_process"], mean["superlink"]
        save("runtime", [table(title, ["phase", "in-process", "SuperLink", "difference", "ratio"],
                               [[p[:-2], f"{a[p]:.2f}s", f"{b[p]:.2f}s", f"{b[p] - a[p]:+.2f}s",
                                 f"{b[p] / a[p]:.2f}"] for p in phases])],
             figures, notes=[
                 "SuperLink: fedprge run (a local SuperLink, the simulation process, Ray); "
                 "in-process: Flower's run_simulation (tests/simulation/in_process.py); each a fresh "
                 "command, alternating; programs (engine executorch) lowered before timing",
                 "start-up: to the round-0 record; per round: the mean of rounds 2..R (metrics' "
                 "elapsed_s); teardown: summary.json to the command's exit",
                 f"same final theta in every run: {'yes' if same else 'NO'}",
                 "not measured: a remote SuperLink or Ray cluster"], page=args.save)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
