"""Peak resident memory of a whole simulation (driver, Ray daemons and actors) with 10 vs 1000
simulated clients on the tiny model, measured side by side in one run.

    python bench/memory.py
    python bench/memory.py --clients 10,1000 --rounds 3

Memory per simulated client should be O(its log position), not O(model): the ratio is the figure.
Ends with one JSON line of its figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _session_rss_kib(sid: int) -> int:
    """Sum of VmRSS over every process in session `sid` (Ray's processes stay in it)."""
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getsid(int(proc.name)) != sid:
                continue
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ProcessLookupError, ValueError):
            continue
    return total


def peak_rss(num_clients: int, rounds: int, out: Path) -> tuple[float, float]:
    """(peak MiB over the run's process tree, wall seconds)."""
    cmd = [sys.executable, "-m", "simulation.cli", "run", "--quiet", "--out", str(out),
           "--set", "model=tiny", "--set", f"rounds={rounds}", "--set", f"num-clients={num_clients}",
           "--set", "clients-per-round=4", "--set", "partition=iid", "--set", "q=8",
           "--set", "eval-size=64", "--set", "eval-every=100", "--set", "personal-steps=0",
           "--set", "client-eval-size=0"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _session_rss_kib(proc.pid))
        time.sleep(0.25)
    if proc.returncode != 0:
        raise SystemExit(f"run with {num_clients} clients failed: {proc.stderr.read()[-2000:]}")
    return peak / 1024, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", default="10,1000")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    sizes = [int(x) for x in args.clients.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            mib, wall = peak_rss(n, args.rounds, Path(tmp) / f"run-{n}")
            rows.append({"clients": n, "peak_rss_mib": round(mib, 1), "wall_s": round(wall, 1)})
            print(f"{n:>6} clients: peak RSS {mib:8.1f} MiB  wall {wall:6.1f} s")
    ratio = rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
    print(f"peak RSS ratio {sizes[-1]} vs {sizes[0]} clients: {ratio:.3f}x")
    print(json.dumps({"bench": "memory", "rows": rows, "ratio": round(ratio, 4)}))


if __name__ == "__main__":
    main()
