"""Scale that is really exercised: runs where every one of N simulated clients is contacted, with
the memory of the driver and of each client process, and the wall time per round and per message.

    python bench/scale.py                                   # N = 100, 1,000, 10,000, tiny model
    python bench/scale.py --clients 1000 --model smollm2-135m --set targets=head

Each run is `fedprge run` with clients-per-round = num-clients and 2 rounds: every client is
contacted in round 1 (from theta_0) and again in round 2 (with round 1's log block to replay),
one local P-RGE step each (K = 1, q = 2, batch 2). The task is `mixed` (MR + vaderSentiment's
rated texts, about 18,700 training examples) so that 10,000 clients each hold at least one;
personalization is off. Peak resident memory is sampled every 0.2 s over the run's process tree
(the driver, which runs the server and Flower's simulation engine; each Ray worker process, i.e.
client actor; and Ray's own daemons). Wall per message = the round's wall time / N at the run's
parallelism (`ray-cpus` actors).

Ends with one JSON line: the rows, and the driver's peak RSS at the largest N over the smallest.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _processes(sid: int) -> dict[int, tuple[str, int]]:
    """pid -> (command line, RSS KiB) for every process in session `sid`."""
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getsid(int(proc.name)) != sid:
                continue
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            rss = next(int(line.split()[1]) for line in (proc / "status").read_text().splitlines()
                       if line.startswith("VmRSS:"))
            out[int(proc.name)] = (cmd, rss)
        except (OSError, ProcessLookupError, ValueError, StopIteration):
            continue
    return out


def _kind(pid: int, cmd: str, driver: int) -> str:
    if pid == driver:
        return "driver"
    if "ClientAppActor" in cmd:  # a Ray worker process serving clients (titled once it is one)
        return "client"
    return "ray"  # raylet, GCS, dashboard and its agents, log monitor, idle workers...


def measure(n: int, args, out: Path) -> dict:
    sets = [f"model={args.model}", "task=mixed", "rounds=2", f"num-clients={n}",
            f"clients-per-round={n}", "local-steps=1", "q=2", "batch-size=2", "partition=iid",
            "client-test-fraction=0", "personal-steps=0", "client-eval-size=0", "eval-size=32",
            "eval-every=100", f"ray-cpus={args.ray_cpus}", *args.set]
    cmd = [sys.executable, "-m", "simulation.cli", "run", "--quiet", "--out", str(out)]
    cmd += [a for kv in sets for a in ("--set", kv)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    peak: dict[int, int] = defaultdict(int)
    kinds: dict[int, str] = {}
    peak_total = 0
    while proc.poll() is None:
        seen = _processes(proc.pid)
        for pid, (c, rss) in seen.items():
            peak[pid] = max(peak[pid], rss)
            if kinds.get(pid) != "client":  # a worker is retitled when it becomes an actor
                kinds[pid] = _kind(pid, c, proc.pid)
        peak_total = max(peak_total, sum(rss for _, rss in seen.values()))
        time.sleep(0.2)
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"run with {n} clients failed: {err[-2000:]}")
    wall = time.perf_counter() - t0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rounds = [m for m in metrics if m["round"] > 0]
    if any(m["replies"] != n for m in rounds):
        raise SystemExit(f"not every client answered: {[m['replies'] for m in rounds]}")
    clients = [peak[p] for p, k in kinds.items() if k == "client"]
    if not clients:  # a renamed actor class would otherwise print a client memory of 0
        raise SystemExit("no client process (a Ray worker titled ClientAppActor) was seen")
    mib = 1024
    return {"clients": n, "messages": sum(m["replies"] for m in rounds),
            "driver_peak_mib": round(peak[proc.pid] / mib, 1),
            "client_processes": len(clients),
            "client_peak_mib_max": round(max(clients) / mib, 1),
            "ray_daemons_peak_mib": round(sum(peak[p] for p, k in kinds.items() if k == "ray") / mib, 1),
            "tree_peak_mib": round(peak_total / mib, 1),
            "round_s": [round(m["round_s"], 1) for m in rounds],
            "ms_per_message": [round(1000 * m["round_s"] / n, 1) for m in rounds],
            "bytes_down_round2_per_client": rounds[-1]["bytes_down"] / n,
            "wall_s": round(wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", default="100,1000,10000")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--ray-cpus", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    sizes = [int(x) for x in args.clients.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            row = measure(n, args, Path(tmp) / f"run-{n}")
            rows.append(row)
            print(f"{n:>6} clients ({row['messages']:,} messages): driver {row['driver_peak_mib']:7.1f} "
                  f"MiB, client process max {row['client_peak_mib_max']:7.1f} MiB "
                  f"(x{row['client_processes']}), Ray daemons {row['ray_daemons_peak_mib']:7.1f} MiB, "
                  f"round s {row['round_s']}, ms/message {row['ms_per_message']}", flush=True)
    ratio = rows[-1]["driver_peak_mib"] / rows[0]["driver_peak_mib"]
    print(f"driver peak RSS at {sizes[-1]:,} vs {sizes[0]:,} clients: {ratio:.3f}x")
    print(json.dumps({"bench": "scale", "model": args.model, "rows": rows,
                      "driver_ratio": round(ratio, 4)}))


if __name__ == "__main__":
    main()
