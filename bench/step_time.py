"""Seconds per P-RGE step, parallel (one batched forward of 2q copies) vs sequential (2q forwards,
MeZO-style), on the same examples and seeds, measured side by side in one run.

    python bench/step_time.py                       # SmolLM2-135M, all 7 projections, rank 8
    python bench/step_time.py --model tiny --reps 5
    python bench/step_time.py --suffix               # suffix adapters: cache, pruning, ExecuTorch
    python bench/step_time.py [--suffix] --save      # also docs/results/step-time[-suffix].md

Prints a table and ends with one JSON line of its figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from prge.engines.eager import EagerEngine
from prge.estimator import projected_grads
from prge.models import load_model
from prge.perturb import derive_seed
from prge.scorer import LabelScorer
from prge.tasks import PromptEncoder, load_task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--qs", default="1,2,4")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--targets", default="q,k,v,o,gate,up,down")
    ap.add_argument("--layers", default="all")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--suffix", action="store_true",
                    help="suffix adapters (bench/suffix_step.py): last-N layers, cache vs none")
    ap.add_argument("--ns", default="1,2,4", help="--suffix: N of layers=last-N")
    ap.add_argument("--eps", type=float, default=1e-2, help="--suffix: perturbation scale")
    ap.add_argument("--schemes", default="none,int8", help="--suffix: ExecuTorch base weights")
    ap.add_argument("--save", nargs="?", const=True, metavar="PAGE",
                    help="also write docs/results/step-time[-suffix].json and its page "
                         "(or PAGE.json: a second setting's page)")
    ap.add_argument("--et-full", default="4", type=lambda s: [int(x) for x in s.split(",") if x],
                    help="--suffix: N for which the whole forward is also timed as one program")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.suffix:
        import suffix_step

        if args.qs == "1,2,4":
            args.qs = "4,16"
        if args.batch == 8:
            args.batch = 16
        figures = suffix_step.run(args)
        if args.save:
            suffix_step.save_page(args, figures)
        print(json.dumps(figures))
        return

    model, tok = load_model(args.model)
    task = load_task("mr")
    enc = PromptEncoder(tok, task.template, task.label_words)
    scorer = LabelScorer(model, enc.label_ids, targets=args.targets.split(","), rank=args.rank,
                         layers=args.layers)
    engine = EagerEngine(scorer)
    batch = enc.encode(task.train[: args.batch])
    theta = torch.zeros(scorer.dim)
    rows = []
    for q in (int(x) for x in args.qs.split(",")):
        seeds = [derive_seed(0, "bench", i) for i in range(q)]
        times: dict[str, list[float]] = {"parallel": [], "sequential": []}
        grads = {}
        projected_grads(engine, batch, theta, seeds, 1e-2, "parallel")  # warm-up
        for _ in range(args.reps):
            for mode in ("parallel", "sequential"):  # interleaved: both see the same noise
                t0 = time.perf_counter()
                grads[mode], _ = projected_grads(engine, batch, theta, seeds, 1e-2, mode)
                times[mode].append(time.perf_counter() - t0)
        par, seq = statistics.median(times["parallel"]), statistics.median(times["sequential"])
        agree = torch.allclose(grads["parallel"], grads["sequential"], rtol=1e-2, atol=1e-3)
        rows.append({"q": q, "parallel_s": round(par, 3), "sequential_s": round(seq, 3),
                     "speedup": round(seq / par, 3), "scalars_agree": bool(agree)})
    print(f"model {args.model}  adapter dims {scorer.dim:,}  batch {args.batch} x "
          f"{batch.input_ids.shape[1]} tokens  threads {torch.get_num_threads()}")
    print(f"{'q':>3} {'parallel s':>11} {'sequential s':>13} {'speedup':>8}")
    for r in rows:
        print(f"{r['q']:>3} {r['parallel_s']:>11.3f} {r['sequential_s']:>13.3f} "
              f"{r['speedup']:>7.2f}x")
    figures = {"bench": "step_time", "model": args.model, "dim": scorer.dim,
               "batch": args.batch, "tokens": int(batch.input_ids.shape[1]), "rows": rows}
    if args.save:
        from simulation.benchpage import save, table

        title = (f"Seconds per P-RGE step on {args.model} (D = {scorer.dim:,}, layers "
                 f"{args.layers}), batch {args.batch} x {figures['tokens']} tokens, median of "
                 f"{args.reps}")
        save("step-time", [table(title, ["q", "parallel s", "sequential s", "speed-up",
                                         "same scalars"],
                                 [[r["q"], f"{r['parallel_s']:.3f}", f"{r['sequential_s']:.3f}",
                                   f"{r['speedup']:.2f}x", "yes" if r["scalars_agree"] else "NO"]
                                  for r in rows])],
             figures, notes=["parallel: one batched forward of the 2q copies; sequential: 2q "
                             "forwards one copy at a time (MeZO-style), the same seeds and "
                             "examples, interleaved"], page=args.save)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
