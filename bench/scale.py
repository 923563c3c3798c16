"""Scale that is really exercised: runs where every one of N simulated clients is contacted, with
the memory of the driver and of each client process, and the wall time per round and per message.

    python bench/scale.py                                   # N = 100, 1,000, 10,000, tiny model
    python bench/scale.py --clients 1000 --model smollm2-135m --set targets=head
    python bench/scale.py --save                            # also docs/results/scale.md
    python bench/scale.py --clients 10000 --devices phones --save scale-devices

Each run is `fedprge run` with clients-per-round = num-clients and 2 rounds: every client is
contacted in round 1 (from theta_0) and again in round 2 (with round 1's log block to replay),
one local P-RGE step each (K = 1, q = 2, batch 2). The task is `mixed` (MR + vaderSentiment's
rated texts, about 18,700 training examples) so that 10,000 clients each hold at least one;
personalization is off. Peak resident memory is sampled every 0.2 s over the command's process tree
(the driver: the flwr-simulation process that runs the server and Flower's simulation engine; each
Ray worker process, i.e. client actor; and the rest: the command, the SuperLink, Ray's daemons).
Wall per message = the round's wall time / N at the run's parallelism (`ray-cpus` actors).

With `--devices PROFILE`, each N runs twice, side by side: without devices, then with the
virtual clock on that profile set (its FLOP count of every device's work, per-device times and
the `devices_work` records), and the page gives the host's cost of the clock as ratios.

Ends with one JSON line: the rows, and the driver's peak RSS at the largest N over the smallest.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def _processes(root: int) -> dict[int, tuple[str, int]]:
    """pid -> (command line, RSS KiB) for `root` and every process it started, however deep: the
    SuperLink runs in a session of its own, so the tree, not the session, is the run."""
    try:
        top = psutil.Process(root)
        procs = [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    out = {}
    for proc in procs:
        try:
            out[proc.pid] = (" ".join(proc.cmdline()), proc.memory_info().rss // 1024)
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
    return out


def _kind(cmd: str) -> str:
    if "flwr-simulation" in cmd:  # the server (ServerApp) and Flower's simulation engine
        return "driver"
    if "ClientAppActor" in cmd:  # a Ray worker process serving clients (titled once it is one)
        return "client"
    # the fedprge command, the SuperLink, raylet, GCS, dashboard and its agents, idle workers...
    return "other"


def run_sets(n: int, args) -> list[str]:
    """The run's settings with N clients (a key's last value wins)."""
    return [f"model={args.model}", "task=mixed", "rounds=2", f"num-clients={n}",
            f"clients-per-round={n}", "local-steps=1", "q=2", "batch-size=2", "partition=iid",
            "client-test-fraction=0", "personal-steps=0", "client-eval-size=0", "eval-size=32",
            "eval-every=100", f"ray-cpus={args.ray_cpus}", *args.set]


def measure(n: int, args, out: Path, extra: tuple[str, ...] = ()) -> dict:
    sets = run_sets(n, args) + list(extra)
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
                kinds[pid] = _kind(c)
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
    drivers = [peak[p] for p, k in kinds.items() if k == "driver"]
    if not clients or len(drivers) != 1:  # a renamed process would otherwise print 0 MiB
        raise SystemExit(f"expected client processes (Ray workers titled ClientAppActor) and one "
                         f"flwr-simulation process; saw {sorted(set(kinds.values()))}")
    mib = 1024
    return {"clients": n, "messages": sum(m["replies"] for m in rounds), "sets": list(extra),
            "driver_peak_mib": round(drivers[0] / mib, 1),
            "client_processes": len(clients),
            "client_peak_mib_max": round(max(clients) / mib, 1),
            "other_peak_mib": round(sum(peak[p] for p, k in kinds.items() if k == "other") / mib, 1),
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
    ap.add_argument("--devices", metavar="PROFILE",
                    help="also run each N with devices=PROFILE and compare (the clock's cost)")
    ap.add_argument("--save", nargs="?", const=True, metavar="PAGE",
                    help="also write docs/results/scale.json and its page "
                         "(or PAGE.json: a second setting's page)")
    args = ap.parse_args()
    sizes = [int(x) for x in args.clients.split(",")]
    if args.devices:
        return compare_devices(sizes, args)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            row = measure(n, args, Path(tmp) / f"run-{n}")
            rows.append(row)
            print(f"{n:>6} clients ({row['messages']:,} messages): driver {row['driver_peak_mib']:7.1f} "
                  f"MiB, client process max {row['client_peak_mib_max']:7.1f} MiB "
                  f"(x{row['client_processes']}), other processes {row['other_peak_mib']:7.1f} MiB, "
                  f"round s {row['round_s']}, ms/message {row['ms_per_message']}", flush=True)
    ratio = rows[-1]["driver_peak_mib"] / rows[0]["driver_peak_mib"]
    print(f"driver peak RSS at {sizes[-1]:,} vs {sizes[0]:,} clients: {ratio:.3f}x")
    figures = {"bench": "scale", "model": args.model, "rows": rows,
               "driver_ratio": round(ratio, 4)}
    if args.save:
        from simulation.benchpage import save, table

        run = dict(kv.split("=", 1) for kv in run_sets(sizes[0], args))
        title = (f"Runs where every client is contacted: {run['model']}, task {run['task']} "
                 f"({run['partition']}), {run['rounds']} rounds, K = {run['local-steps']}, q = "
                 f"{run['q']}, batch {run['batch-size']}, ray-cpus {run['ray-cpus']}"
                 + "".join(f", {kv}" for kv in args.set) + "; peak RSS in MiB")
        save("scale", [table(title, [
            "N clients", "messages", "driver peak RSS", "client process peak RSS (max)",
            "CLI, SuperLink, Ray daemons (sum)", "process tree (sum)", "wall per round",
            "per message, per round", "run wall"],
            [[f"{r['clients']:,}", f"{r['messages']:,}", f"{r['driver_peak_mib']:.1f}",
              f"{r['client_peak_mib_max']:.1f} (x{r['client_processes']})",
              f"{r['other_peak_mib']:.1f}", f"{r['tree_peak_mib']:.1f}",
              " / ".join(f"{s} s" for s in r["round_s"]),
              " / ".join(f"{ms} ms" for ms in r["ms_per_message"]), f"{r['wall_s']} s"]
             for r in rows])], figures, notes=[
            "clients-per-round = num-clients: every client trains in round 1 and again in round 2 "
            "(replaying round 1's block); one run per N, one after another",
            "peak RSS sampled every 0.2 s over the command's process tree: the driver (the "
            "flwr-simulation process: server and Flower's engine), each Ray worker serving clients "
            "(the largest; how many), the sum of the rest, and the whole tree at once; per "
            "message: a round's wall / N at the run's parallelism",
            f"driver peak RSS at {sizes[-1]:,} clients vs {sizes[0]:,}: {ratio:.3f}x",
            "not measured: more rounds, multi-machine clusters"], page=args.save)
    print(json.dumps(figures))


def compare_devices(sizes: list[int], args) -> None:
    """Each N without and with devices, one after the other: the virtual clock's host cost."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            plain = measure(n, args, Path(tmp) / f"plain-{n}")
            clock = measure(n, args, Path(tmp) / f"devices-{n}", (f"devices={args.devices}",))
            virtual = [json.loads(line).get("virtual_s") for line in
                       (Path(tmp) / f"devices-{n}" / "metrics.jsonl").read_text().splitlines()]
            ratios = {"driver_rss": clock["driver_peak_mib"] / plain["driver_peak_mib"],
                      "tree_rss": clock["tree_peak_mib"] / plain["tree_peak_mib"],
                      "round_s": sum(clock["round_s"]) / sum(plain["round_s"]),
                      "wall_s": clock["wall_s"] / plain["wall_s"]}
            rows.append({"clients": n, "plain": plain, "devices": clock, "virtual_s": virtual[-1],
                         "ratios": {k: round(v, 4) for k, v in ratios.items()}})
            print(f"{n:>6} clients: devices/plain driver RSS {ratios['driver_rss']:.3f}x, tree RSS "
                  f"{ratios['tree_rss']:.3f}x, round wall {ratios['round_s']:.3f}x, run wall "
                  f"{ratios['wall_s']:.3f}x; virtual time {virtual[-1]:.1f} s", flush=True)
    figures = {"bench": "scale-devices", "model": args.model, "devices": args.devices, "rows": rows}
    if args.save:
        from simulation.benchpage import save, table

        run = dict(kv.split("=", 1) for kv in run_sets(sizes[0], args))
        title = (f"The virtual clock's host cost: every client contacted, {run['model']}, task "
                 f"{run['task']}, {run['rounds']} rounds, K = {run['local-steps']}, q = {run['q']}, "
                 f"ray-cpus {run['ray-cpus']}; without devices vs devices={args.devices}")
        save("scale-devices", [table(title, [
            "N clients", "driver peak RSS (MiB)", "process tree peak RSS (MiB)",
            "wall per round (s)", "run wall (s)", "driver RSS ratio", "round wall ratio",
            "virtual time of the run"],
            [[f"{r['clients']:,}",
              f"{r['plain']['driver_peak_mib']:.1f} / {r['devices']['driver_peak_mib']:.1f}",
              f"{r['plain']['tree_peak_mib']:.1f} / {r['devices']['tree_peak_mib']:.1f}",
              f"{sum(r['plain']['round_s']):.1f} / {sum(r['devices']['round_s']):.1f}",
              f"{r['plain']['wall_s']} / {r['devices']['wall_s']}",
              f"{r['ratios']['driver_rss']:.3f}x", f"{r['ratios']['round_s']:.3f}x",
              f"{r['virtual_s']:.1f} s"] for r in rows])], figures, notes=[
            "each cell: without devices / with; one run of each per N, the plain one first, one "
            "after the other on the same machine",
            "round wall: the two rounds' wall time summed (the server counts every contacted "
            "device's FLOPs, times its round and records its work); RSS: peak over the run, "
            "sampled every 0.2 s",
            "not measured: repeated pairs (the ratio's noise), more rounds, other profile sets"],
            page=args.save)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
