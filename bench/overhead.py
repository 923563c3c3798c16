"""Flower + Ray wall time vs the same client work in an in-process loop, side by side in one run.

    python bench/overhead.py --model tiny
    python bench/overhead.py --model smollm2-135m
    python bench/overhead.py --model smollm2-135m --save   # also docs/results/overhead.md

The loop uses the same ServerApp logic (FederatedServer) and the same ClientApp, but delivers each
message by calling the ClientApp in this process: no Ray actors, no SuperLink, one client at a
time with one torch thread (client-cpus = 1). The simulation runs twice: with one client actor
(`ray-cpus=1`, the loop's parallelism: the difference is what the runtime costs) and with one
actor per core (the difference is the parallel speed-up, not an overhead). Ends with one JSON
line of its figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from clients.app import build_client_app
from clients.runconfig import load_config
from simulation.rundir import read_jsonl
from simulation.runner import run_federated
from simulation.server_app import FederatedServer


class LoopGrid(Grid):
    """A Grid that runs each message through the ClientApp in this process, one after another."""

    def __init__(self, client_app, num_nodes: int):
        self.app = client_app
        self.contexts = {
            1000 + i: Context(run_id=1, node_id=1000 + i, state=RecordDict(), run_config={},
                              node_config={"partition-id": i, "num-partitions": num_nodes})
            for i in range(num_nodes)}

    def set_run(self, run):  # pragma: no cover - not used by FederatedServer
        pass

    @property
    def run(self):  # pragma: no cover
        raise NotImplementedError

    def create_message(self, *args, **kwargs):  # pragma: no cover
        raise NotImplementedError

    def get_node_ids(self):
        return list(self.contexts)

    def push_messages(self, messages):  # pragma: no cover
        raise NotImplementedError

    def pull_messages(self, message_ids):  # pragma: no cover
        raise NotImplementedError

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for msg in messages:
            try:
                replies.append(self.app(msg, self.contexts[msg.metadata.dst_node_id]))
            except Exception as err:  # an error reply, as Flower's runtime would send
                replies.append(Message(Error(code=0, reason=repr(err)), reply_to=msg))
        return replies


def loop_run(cfg, out: Path) -> float:
    # what the ServerApp runtime would set before the first message
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    FederatedServer(cfg, out, LoopGrid(build_client_app(cfg), cfg.num_clients), progress=False).run()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--save", nargs="?", const=True, metavar="PAGE",
                    help="also write docs/results/overhead.json and its page "
                         "(or PAGE.json: a second setting's page)")
    args = ap.parse_args()
    base = [f"model={args.model}", "rounds=5", "num-clients=10", "clients-per-round=4",
            "local-steps=2", "q=16", "targets=head", "rank=16", "lr=0.05", "batch-size=16",
            "eval-every=5", "eval-size=100", "personal-steps=1", "client-eval-size=8",
            "client-cpus=1"]
    cfg = load_config(None, base + args.overrides)
    if cfg.engine == "executorch":  # untimed: lowering is paid once per machine, by either path
        # in a child process: loading ExecuTorch programs here before the loop's client sets its
        # torch threads hung this process on a lock
        subprocess.run([sys.executable, "-c", "import sys; from clients.runconfig import "
                        "load_config; from simulation.runner import _lower_programs; "
                        "_lower_programs(load_config(None, sys.argv[1:]))",
                        *base, *args.overrides], check=True, capture_output=True)
    with tempfile.TemporaryDirectory() as tmp:
        loop_s = loop_run(cfg, Path(tmp) / "loop")
        seconds, hashes = {}, {"loop": read_jsonl(Path(tmp) / "loop" / "metrics.jsonl")[-1]}
        for name, actors in (("one_actor", ["ray-cpus=1"]), ("all_cores", [])):
            run_cfg = load_config(None, base + args.overrides + actors)
            t0 = time.perf_counter()
            run_federated(run_cfg, out=Path(tmp) / name, progress=False)
            seconds[name] = time.perf_counter() - t0
            hashes[name] = read_jsonl(Path(tmp) / name / "metrics.jsonl")[-1]
        same = len({m["theta_hash"] for m in hashes.values()}) == 1
    overhead = seconds["one_actor"] / loop_s - 1
    speedup = seconds["one_actor"] / seconds["all_cores"]
    print(f"model {args.model}: in-process loop {loop_s:.1f} s; Flower + Ray with one actor "
          f"{seconds['one_actor']:.1f} s (overhead at equal parallelism {100 * overhead:+.1f} %), "
          f"with one actor per core {seconds['all_cores']:.1f} s (parallel speed-up "
          f"{speedup:.2f}x); same final theta in all three: {same}")
    figures = {"bench": "overhead", "model": args.model, "loop_s": round(loop_s, 2),
               "one_actor_s": round(seconds["one_actor"], 2),
               "all_cores_s": round(seconds["all_cores"], 2),
               "overhead_equal_parallelism": round(overhead, 4),
               "parallel_speedup": round(speedup, 3), "same_final_theta": same,
               "config": base + args.overrides}
    if args.save:
        from simulation.benchpage import save, table

        title = (f"Wall time of one federated run on {cfg.model}: {cfg.rounds} rounds, "
                 f"{cfg.num_clients} clients, {cfg.clients_per_round} per round, K = "
                 f"{cfg.local_steps}, q = {cfg.q}, {','.join(cfg.targets)} rank {cfg.rank}, engine "
                 f"{cfg.engine}, {cfg.client_cpus:g} CPU per client")
        save("overhead", [table(title, ["path", "wall", "compared"], [
            ["in-process loop (one client at a time)", f"{loop_s:.1f} s", ""],
            ["Flower + Ray, one client actor (ray-cpus=1)", f"{seconds['one_actor']:.1f} s",
             f"{100 * overhead:+.1f} % (overhead at equal parallelism)"],
            [f"Flower + Ray, one actor per core (ray-cpus={cfg.ray_cpus}: 0 is every core)",
             f"{seconds['all_cores']:.1f} s", f"{speedup:.2f}x (parallel speed-up vs one actor)"]])],
             figures, notes=[
                 "the same ServerApp logic and ClientApp three ways, one run each (no "
                 "repetitions), one after another; Flower + Ray: simulation.runner.run_federated, "
                 "what fedprge run does (a local SuperLink, Ray), start-up and teardown included; "
                 "programs (engine executorch) lowered before timing",
                 f"same final theta in all three: {'yes' if same else 'NO'}",
                 "not measured: multi-machine clusters, more rounds"], page=args.save)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
