"""Flower + Ray wall time vs the same client work in an in-process loop, side by side in one run.

    python bench/overhead.py --model tiny
    python bench/overhead.py --model smollm2-135m

The loop uses the same ServerApp logic (FederatedServer) and the same ClientApp, but delivers each
message by calling the ClientApp in this process: no Ray actors, no SuperLink. The difference is
what the simulation runtime costs. Ends with one JSON line of its figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from clients.app import build_client_app
from simulation.config import load_config
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
    args = ap.parse_args()
    base = [f"model={args.model}", "rounds=5", "num-clients=10", "clients-per-round=4",
            "local-steps=2", "q=16", "targets=head", "rank=16", "lr=0.05", "batch-size=16",
            "eval-every=5", "eval-size=100", "personal-steps=1", "client-eval-size=8"]
    cfg = load_config(None, base + args.overrides)
    with tempfile.TemporaryDirectory() as tmp:
        loop_s = loop_run(cfg, Path(tmp) / "loop")
        t0 = time.perf_counter()
        run_federated(cfg, out=Path(tmp) / "flower", progress=False)
        flower_s = time.perf_counter() - t0
        same = read_jsonl(Path(tmp) / "loop" / "metrics.jsonl")[-1]["theta_hash"] == \
            read_jsonl(Path(tmp) / "flower" / "metrics.jsonl")[-1]["theta_hash"]
    overhead = flower_s / loop_s - 1
    print(f"model {args.model}: in-process loop {loop_s:.1f} s, Flower + Ray {flower_s:.1f} s, "
          f"overhead {100 * overhead:+.1f} %, same final theta: {same}")
    print(json.dumps({"bench": "overhead", "model": args.model, "loop_s": round(loop_s, 2),
                      "flower_ray_s": round(flower_s, 2), "overhead": round(overhead, 4),
                      "same_final_theta": same, "config": base + args.overrides}))


if __name__ == "__main__":
    main()
