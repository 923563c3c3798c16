"""SIGKILL a federated run at random moments, resume it, and compare with an uninterrupted run;
then time a resume at 10 and at 1,000 rounds.

Runs the tiny-model config of the fault study (5 clients, 3 per round, seed 5, 8 rounds,
personalization after the last round) with 20 % simulated crashes and 15 % stragglers whose
replies arrive 120 simulated seconds after the round's work, past a 60 s round deadline: some
replies are late and dropped (the verdict is the server's, from the seeded draw; nothing sleeps),
and crashed devices report their log position in their error replies. It runs twice to the end:
the two must agree, and the second is timed. Then, for each try, it starts the same run and kills
its whole process session (driver, Ray daemons, client processes) with SIGKILL at a random moment
of a random stage: a stage drawn uniformly from start-up (once the run directory holds its config:
before that there is nothing to resume), each of the 8 rounds and personalization, then 0-1 s into
it (from --seed). It resumes the run with `fedprge run --resume` and checks that the metrics
(wall-clock fields aside), update log, summary and per-client results equal the uninterrupted
run's.

Resume time: a run of R rounds (the tiny model, one client per round, driven in this process) is
restored from its checkpoint twice, side by side: by replaying the whole update log to rebuild
theta (how resumes worked before) and by reading the log and checking its hash chain
(simulation/restore.py), for R = 10 and R = 1,000; the same log is also replayed on the demo's
adapter size (D = 41,472), since replay costs a randn(D) per entry and a checkpoint does not.

    python bench/kill_resume.py               # resume times, then 10 tries
    python bench/kill_resume.py --tries 0     # resume times only
    python bench/kill_resume.py --tries 3 --rounds 10,100
    python bench/kill_resume.py --save        # also docs/results/kill-resume.md

Prints one row per try and ends with one JSON line: {"tries": N, "identical": M, ...}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from simulation.rundir import read_jsonl  # noqa: E402
from tests.simulation.test_resume import _clean, _kill_run, _same  # noqa: E402

ROUNDS = 8
SETS = ["num-clients=5", "clients-per-round=3", "crash-prob=0.2", "seed=5", f"rounds={ROUNDS}",
        "straggle-prob=0.15", "straggle-s=120", "round-deadline-s=60", "max-failed-rounds=0"]
DEMO_DIM = 41_472  # configs/demo.toml's adapter
ARGS = ["--config", "configs/run-tiny.toml", *(a for kv in SETS for a in ("--set", kv))]


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "simulation.cli", *args]


def _outcome(run: Path) -> dict:
    """Everything a resumed run must reproduce."""
    summary = json.loads((run / "summary.json").read_text())
    return {"metrics": _clean(run / "metrics.jsonl"), "log": read_jsonl(run / "update_log.jsonl"),
            "summary": {k: v for k, v in _same(summary).items() if k != "wall_s"},
            "clients": json.loads((run / "clients.json").read_text())}


def _first_difference(got: dict, want: dict) -> str:
    """Where a resumed run's outcome first departs from the uninterrupted run's."""
    for m, w in zip(got["metrics"], want["metrics"], strict=False):
        if m != w:
            keys = sorted(k for k in set(m) | set(w) if m.get(k) != w.get(k))
            return f"metrics of round {w.get('round')}: " + ", ".join(
                f"{k} {m.get(k)!r} vs {w.get(k)!r}" for k in keys)[:400]
    return next((part for part in ("log", "summary", "clients") if got[part] != want[part]),
                "none")


def _stage(run: Path) -> str:
    """Where the killed run was: the last checkpointed round, or personalization."""
    rounds = [m["round"] for m in read_jsonl(run / "metrics.jsonl")] if (
        run / "metrics.jsonl").exists() else []
    if (run / "clients.json").exists():
        return "after personalization"
    return f"after round {rounds[-1]}" if rounds else "before round 0"


def _wait_for_stage(run: Path, proc: subprocess.Popen, stage: int) -> None:
    """Until the run starts stage `stage`: 0 when its directory holds its config (before that
    there is nothing to resume), r when round r - 1's metrics line is written, ROUNDS + 1 when
    the last round's is (personalization follows)."""
    while proc.poll() is None:
        if stage == 0 and (run / "config.json").exists():
            return
        if stage > 0 and (run / "metrics.jsonl").exists() and \
                len(read_jsonl(run / "metrics.jsonl")) >= stage:
            return
        time.sleep(0.02)


def resume_times(rounds: int, tmp: Path) -> dict:
    """Seconds to restore the server's state after `rounds` rounds: by replaying the log (the
    old way), and from the checkpoint with the log checked by its hash chain (the new way)."""
    import torch

    from clients.app import build_client_app
    from clients.protocol import Wire
    from clients.runconfig import load_config
    from prge.update_log import replay, theta_hash
    from simulation.checkpoint import load_checkpoint
    from simulation.restore import restore_log
    from simulation.server_app import FederatedServer
    from tests.simulation.local_grid import LocalGrid

    cfg = load_config("configs/run-tiny.toml", [
        f"rounds={rounds}", "engine=eager", "num-clients=2", "clients-per-round=1", "local-steps=1",
        f"eval-every={rounds}", "eval-size=8", "personal-steps=0", "client-eval-size=0"])
    run = tmp / f"resume-{rounds}"
    run.mkdir()
    grid = LocalGrid(build_client_app(cfg, device_dir=run / "devices"), cfg.num_clients)
    FederatedServer(cfg, run, grid, progress=False).run()
    t0 = time.perf_counter()
    ckpt = load_checkpoint(run)
    restored = restore_log(run, ckpt, Wire.of(cfg).block)
    checkpoint_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ckpt = load_checkpoint(run)
    rows = read_jsonl(run / "update_log.jsonl")
    rebuilt = replay(torch.zeros(ckpt.theta.size), restored.log)
    replay_s = time.perf_counter() - t0
    assert len(rows) == len(restored.log)
    assert theta_hash(rebuilt) == theta_hash(torch.from_numpy(ckpt.theta)), "log != theta"
    # replay's cost grows with the adapter (a randn(D) per entry); the checkpoint's does not:
    # the same log replayed on the demo's adapter size
    t0 = time.perf_counter()
    replay(torch.zeros(DEMO_DIM), restored.log)
    replay_demo_s = time.perf_counter() - t0
    return {"rounds": rounds, "log_entries": len(restored.log), "adapter_dim": int(ckpt.theta.size),
            "replay_s": round(replay_s, 4), "checkpoint_s": round(checkpoint_s, 4),
            "ratio": round(replay_s / checkpoint_s, 1), "replay_demo_dim_s": round(replay_demo_s, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tries", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", default="10,1000", help="run lengths whose resume is timed")
    ap.add_argument("--save", nargs="?", const=True, metavar="PAGE",
                    help="also write docs/results/kill-resume.json and its page "
                         "(or PAGE.json: a second setting's page)")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    with TemporaryDirectory() as tmp:
        times = [resume_times(int(r), Path(tmp)) for r in args.rounds.split(",")]
        for t in times:
            print(f"resume after {t['rounds']} rounds ({t['log_entries']} log entries, D = "
                  f"{t['adapter_dim']}): replaying the log {t['replay_s']:.3f} s "
                  f"({t['replay_demo_dim_s']:.3f} s at D = {DEMO_DIM:,}), from the checkpoint "
                  f"{t['checkpoint_s']:.3f} s ({t['ratio']}x)", flush=True)
        kills = kill_tries(args.tries, rng, Path(tmp)) if args.tries else {}
    figures = {**kills, "resume": times}
    if args.save:
        save_page(args, figures)
    print(json.dumps(figures))


def save_page(args, figures: dict) -> None:
    """`--save`: docs/results/kill-resume.json and its page."""
    from simulation.benchpage import save, table

    tables = [table("Seconds to restore the server's state after R rounds of a tiny-model run "
                    "driven in this process, one restore each way",
                    ["rounds", "log entries", "D", "replaying the log", f"replay at D = {DEMO_DIM:,}",
                     "from the checkpoint", "replay / checkpoint"],
                    [[f"{t['rounds']:,}", f"{t['log_entries']:,}", f"{t['adapter_dim']:,}",
                      f"{t['replay_s']:.3f} s", f"{t['replay_demo_dim_s']:.3f} s",
                      f"{t['checkpoint_s']:.3f} s", f"{t['ratio']}x"] for t in figures["resume"]])]
    if args.tries:
        tables.append(table(f"SIGKILL at a random moment (seed {args.seed}), then fedprge run "
                            f"--resume, vs an uninterrupted run: {ARGS[1]} with {', '.join(SETS)}",
                            ["tries", "identical outcome", "uninterrupted run", "late replies"],
                            [[figures["tries"], figures["identical"], f"{figures['reference_s']} s",
                              figures["late"]]]))
    notes = ["restore: replaying the whole update log to rebuild theta (how resumes worked before) "
             "vs reading the checkpoint and checking the log's hash chain (simulation/restore.py); "
             "replay costs a randn(D) per entry, timed again at the demo adapter's D"]
    if args.tries:
        notes.append("kills: a stage drawn uniformly (start-up, each round, personalization), then "
                     "0-1 s into it, the run's processes killed with SIGKILL; identical: metrics "
                     "(wall-clock fields aside), update log, summary and per-client results equal "
                     "the uninterrupted run's (two uninterrupted runs, the second timed)")
    notes.append("not measured: a real model's run, kills while programs are lowered (the first "
                 "uninterrupted run fills the program cache)")
    save("kill-resume", tables, figures, notes=notes, page=args.save)


def kill_tries(tries: int, rng: np.random.Generator, tmp: Path) -> dict:
    """Kill the run at `tries` random moments, resume each, compare with the uninterrupted run."""
    outcomes = []
    for name in ("first", "reference"):  # the first also warms caches; the second is timed
        t0 = time.monotonic()
        subprocess.run(_cli("run", *ARGS, "--out", str(tmp / name), "--quiet"),
                       cwd=ROOT, check=True, capture_output=True)
        duration = time.monotonic() - t0
        outcomes.append(_outcome(tmp / name))
    want = outcomes[-1]
    if outcomes[0] != want:
        raise SystemExit("two uninterrupted runs of one config differ: nothing to compare")
    late = sum(m.get("rejected_reasons", {}).get("late", 0) for m in want["metrics"])
    print(f"uninterrupted run: {duration:.1f} s, {len(want['log'])} log entries, {late} late "
          "replies (two runs, identical)")
    same = 0
    for i in range(tries):
        run = tmp / f"try{i}"
        proc = subprocess.Popen(_cli("run", *ARGS, "--out", str(run), "--quiet"), cwd=ROOT,
                                start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        # a stage drawn uniformly (start-up, each round, personalization), then a moment
        # within it: a uniform draw over wall time would mostly land in Ray's start-up
        stage = int(rng.integers(0, ROUNDS + 2))  # 0: start-up .. ROUNDS + 1: personalizing
        delay = float(rng.uniform(0.0, 1.0))
        _wait_for_stage(run, proc, stage)
        time.sleep(delay)
        finished = proc.poll() is not None
        _kill_run(proc.pid)
        proc.wait(timeout=60)
        where = _stage(run)
        if (run / "summary.json").exists():
            ok, how = _outcome(run) == want, "finished before the kill"
        else:
            resumed = subprocess.run(_cli("run", "--resume", str(run), "--quiet"), cwd=ROOT,
                                     capture_output=True, text=True)
            if resumed.returncode != 0:
                ok, how = False, "resume failed: " + resumed.stderr.strip()[-200:]
            else:
                ok, how = _outcome(run) == want, "resumed"
        same += ok
        print(f"try {i}: stage {stage} + {delay:.2f} s, killed {where}"
              f"{' (it had ended)' if finished else ''}: "
              f"{how}, {'identical' if ok else 'DIFFERENT'}", flush=True)
        if not ok and (run / "summary.json").exists():
            print(f"  first difference: {_first_difference(_outcome(run), want)}", flush=True)
    return {"tries": tries, "identical": same, "reference_s": round(duration, 1), "late": late}


if __name__ == "__main__":
    main()
