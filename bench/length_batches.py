"""Seconds per P-RGE step with `batch-order=random` vs `length`, side by side in one run.

A simulated device's rounds as the federated worker draws them (`clients/worker.py`): K batches
of `--batch` examples from its own ~N examples, then either used as drawn or regrouped by length
(`prge/batching.py`). Every batch of both orders runs one P-RGE step on the suffix adapter from
the frozen-prefix cache (eager, filled before timing), interleaved round by round so that both
see the same machine noise. Reports padded tokens per step and seconds per step for each order.

    python bench/length_batches.py                        # last-1, q 4, K 8, batch 16
    python bench/length_batches.py --layers last-4 --rounds 10
    python bench/length_batches.py --save                 # also docs/results/length-batches.md

Ends with one JSON line holding `"length_speedup"` (random / length seconds per step).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from suffix_adapter import add_adapter_args, build_adapter, describe  # bench/, beside this script

from prge.batching import group_by_length
from prge.engines.eager import EagerEngine
from prge.estimator import projected_grads
from prge.perturb import derive_seed
from prge.prefix_cache import warm_examples, with_prefix_cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_adapter_args(ap)
    ap.add_argument("--q", type=int, default=4)
    ap.add_argument("--k", type=int, default=8, help="local steps per round")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--examples", type=int, default=100, help="a device's training examples")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="as one client under Ray")
    ap.add_argument("--save", nargs="?", const=True, metavar="PAGE",
                    help="also write docs/results/length-batches.json and its page "
                         "(or PAGE.json: a second setting's page)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    task, enc, scorer = build_adapter(args)
    engine = with_prefix_cache(EagerEngine(scorer), 2**30, enc.pad_id)
    pick = np.random.default_rng(derive_seed(0, "bench-device")).choice(
        len(task.train), size=args.examples, replace=False)
    device = [task.train[i] for i in pick]
    warm_examples(engine, enc, device)  # one-time cost, not timed
    lengths = enc.lengths(device)
    theta = torch.zeros(scorer.dim)
    seconds = {"random": [], "length": []}
    tokens = {"random": [], "length": []}
    for r in range(args.rounds):
        drawn = [np.random.default_rng(derive_seed(0, "local-batch", r, k))
                 .choice(len(device), size=args.batch, replace=False) for k in range(args.k)]
        orders = {"random": drawn,
                  "length": group_by_length(drawn, lengths,
                                            np.random.default_rng(derive_seed(0, "order", r)))}
        for name, batches in orders.items():
            for k, idx in enumerate(batches):
                batch = enc.encode([device[i] for i in idx])
                seeds = [derive_seed(0, "bench", r, k, i) for i in range(args.q)]
                t0 = time.perf_counter()
                projected_grads(engine, batch, theta, seeds, eps=1e-2)
                seconds[name].append(time.perf_counter() - t0)
                tokens[name].append(int(batch.input_ids.shape[1]))
    per_step = {k: float(np.median(v)) for k, v in seconds.items()}
    mean_tokens = {k: float(np.mean(v)) for k, v in tokens.items()}
    for name in seconds:
        print(f"{name:7s}: {mean_tokens[name]:5.1f} padded tokens per step, "
              f"{1000 * per_step[name]:6.1f} ms per step (median of {len(seconds[name])})")
    figures = {"bench": "length_batches", "layers": args.layers, "dim": scorer.dim,
               "q": args.q, "k": args.k, "batch": args.batch, "threads": args.threads,
               "tokens_per_step": mean_tokens, "seconds_per_step": per_step,
               "length_speedup": round(per_step["random"] / per_step["length"], 3)}
    if args.save:
        from simulation.benchpage import save, table

        title = (f"Padded tokens and milliseconds (median) per P-RGE step on "
                 f"{describe(args, scorer.dim)} from the prefix cache (eager), q = {args.q}, K = "
                 f"{args.k} batches of {args.batch} per round from {args.examples} examples, "
                 f"{args.rounds} rounds, {args.threads} thread(s)")
        save("length-batches", [table(
            title, ["batch-order", "padded tokens per step", "ms per step", "steps timed",
                    "speed-up vs random"],
            [[name, f"{mean_tokens[name]:.1f}", f"{1000 * per_step[name]:.1f}", len(seconds[name]),
              f"{per_step['random'] / per_step[name]:.2f}x"] for name in seconds])],
            figures, notes=[
                "the same K batches of each round in both orders (length: regrouped by length, "
                "prge/batching.py), interleaved round by round; the cache filled before timing",
                "not measured: accuracy (the order changes which examples share a step)"],
                page=args.save)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
