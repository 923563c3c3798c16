"""SIGKILL a federated run at random moments, resume it, and compare with an uninterrupted run.

Runs the tiny-model config of the fault study (5 clients, 3 per round, 20 % simulated crashes,
seed 5, 8 rounds, personalization after the last round) twice to the end: the two must agree, and
the second is timed. Then, for each try, it starts the same run and kills its whole process
session (driver, Ray daemons, client processes) with SIGKILL at a random moment of a random
stage: a stage drawn uniformly from start-up (once the run directory holds its config: before
that there is nothing to resume), each of the 8 rounds and personalization, then 0-1 s into it
(from --seed). It resumes the run with `fedprge run --resume`
and checks that the metrics (wall-clock fields aside), update log, summary and per-client results
equal the uninterrupted run's.

    python bench/kill_resume.py               # 10 tries
    python bench/kill_resume.py --tries 3

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
from tests.simulation.test_resume import _clean, _kill_session, _same  # noqa: E402

ROUNDS = 8
ARGS = ["--config", "configs/run-tiny.toml", "--set", "num-clients=5", "--set",
        "clients-per-round=3", "--set", "crash-prob=0.2", "--set", "seed=5", "--set",
        f"rounds={ROUNDS}"]


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "simulation.cli", *args]


def _outcome(run: Path) -> dict:
    """Everything a resumed run must reproduce."""
    summary = json.loads((run / "summary.json").read_text())
    return {"metrics": _clean(run / "metrics.jsonl"), "log": read_jsonl(run / "update_log.jsonl"),
            "summary": {k: v for k, v in _same(summary).items() if k != "wall_s"},
            "clients": json.loads((run / "clients.json").read_text())}


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tries", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    with TemporaryDirectory() as tmp:
        outcomes = []
        for name in ("first", "reference"):  # the first also warms caches; the second is timed
            t0 = time.monotonic()
            subprocess.run(_cli("run", *ARGS, "--out", str(Path(tmp) / name), "--quiet"),
                           cwd=ROOT, check=True, capture_output=True)
            duration = time.monotonic() - t0
            outcomes.append(_outcome(Path(tmp) / name))
        want = outcomes[-1]
        if outcomes[0] != want:
            raise SystemExit("two uninterrupted runs of one config differ: nothing to compare")
        print(f"uninterrupted run: {duration:.1f} s, {len(want['log'])} log entries "
              "(two runs, identical)")
        same = 0
        for i in range(args.tries):
            run = Path(tmp) / f"try{i}"
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
            _kill_session(proc.pid)
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
    print(json.dumps({"tries": args.tries, "identical": same, "reference_s": round(duration, 1)}))


if __name__ == "__main__":
    main()
