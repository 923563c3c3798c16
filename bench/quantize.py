"""Quantized base weights in the ExecuTorch program vs fp32, side by side in one run.

    python bench/quantize.py                 # SmolLM2-135M, the demo's training program:
                                             # head adapter r16, 32 copies x 16 examples x 64 tokens
    python bench/quantize.py --targets q,k,v,o,gate,up,down --rank 8 --copies 4 --rows 4 --tokens 32
    python bench/quantize.py --model tiny --examples 32
    python bench/quantize.py --run runs/demo           # a suffix adapter a run trained: the prefix
                                                       # cache and packed suffix programs, copies
                                                       # around the run's final adapter
    python bench/quantize.py --save          # also docs/results/quantize.md (--run: quantize-run.md)

For each scheme (none = fp32, int8, int4; see prge/quantize.py): lowering seconds, XNNPACK
partitions, `.pte` size, peak resident memory of a fresh process that loads the program and runs
it once (and of one that only imports the runtime), seconds per forward (all schemes and eager
interleaved), and test accuracy (raw and calibrated) of every adapter copy on `--examples` test
examples: copy 0 is the base model (B = 0), the others random adapters. Ends with one JSON line.

With `--run RUN_DIR` the adapter is the run's (model, targets, rank, layers and the frozen A from
its config.json) and every engine is the run's: the frozen-prefix cache filled by the prefix
program, then packed suffix programs. Copy 1 is the run's final adapter, copies 2.. are it plus
`eps * z` for Gaussian z, what a P-RGE step evaluates around it. Memory is not measured there
(one program per token bucket).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

from prge.engines.eager import EagerEngine
from prge.engines.executorch import ExecuTorchEngine
from prge.evaluate import scores
from prge.models import load_model
from prge.perturb import derive_seed
from prge.prefix_cache import with_prefix_cache
from prge.scorer import LabelScorer
from prge.tasks import PromptEncoder, load_task


def held_rss_mib(path: str, scheme: str, copies: int, rows: int, tokens: int, dim: int) -> dict:
    """Peak RSS of a fresh process that loads `path` and executes it once, and of one that only
    imports the runtime (the floor every process pays)."""
    shape = f"{copies},{rows},{tokens},{dim}"
    out = {}
    for mode in ("imports", "program"):
        res = subprocess.run([sys.executable, __file__, "--hold", path, "--scheme", scheme,
                              "--shape", shape, "--hold-mode", mode],
                             capture_output=True, text=True, check=True)
        out[mode] = float(res.stdout.strip().splitlines()[-1])
    return out


def _hold(path: str, scheme: str, shape: str, mode: str) -> None:
    from executorch.runtime import Runtime

    from prge.quantize import ensure_runtime_kernels

    ensure_runtime_kernels(scheme)
    if mode == "program":
        copies, rows, tokens, dim = (int(x) for x in shape.split(","))
        method = Runtime.get().load_program(path).load_method("forward")
        method.execute([torch.zeros(rows, tokens, dtype=torch.long),
                        torch.zeros(rows, dtype=torch.long), torch.zeros(copies, dim)])
    # VmHWM, not ru_maxrss: on Linux a child's ru_maxrss starts from its parent's at fork
    status = open("/proc/self/status").read().splitlines()
    print(next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024)


def accuracies(engine, enc, examples, thetas, rows: int) -> dict:
    """Raw and calibrated accuracy of each adapter copy; copy 0 is the base model."""
    log_probs = []
    for start in range(0, len(examples), rows):
        batch = enc.encode(examples[start:start + rows])
        log_probs.append(F.log_softmax(engine.label_logits(batch, thetas).float(), dim=-1))
    lp = torch.cat(log_probs, dim=1)  # (C, N, L)
    labels = torch.tensor([ex.label for ex in examples])
    per_copy = [scores(lp[c], labels) for c in range(lp.shape[0])]
    return {"base_acc": per_copy[0].acc, "base_acc_cal": per_copy[0].acc_calibrated,
            "mean_acc": statistics.mean(r.acc for r in per_copy),
            "mean_acc_cal": statistics.mean(r.acc_calibrated for r in per_copy),
            "trained_acc": per_copy[1].acc, "trained_acc_cal": per_copy[1].acc_calibrated,
            "predictions": lp.argmax(-1)}


def run_adapter(args) -> dict:
    """The adapter a run trained: its config's model and adapter, its final theta."""
    needed = [os.path.join(args.run, name) for name in ("config.json", "final_theta.npy")]
    if missing := [path for path in needed if not os.path.exists(path)]:
        raise SystemExit(f"bench/quantize.py: --run needs a finished run, {missing[0]} is missing")
    cfg = json.load(open(needed[0]))
    if cfg["task"] != "mr":  # the accuracies below are on MR's test split
        raise SystemExit(f"bench/quantize.py: --run needs an MR run, {args.run} is {cfg['task']!r}")
    args.model, args.targets, args.rank = cfg["model"], ",".join(cfg["targets"]), cfg["rank"]
    args.rows, args.tokens = cfg["batch-size"], cfg["max-length"]
    theta = np.load(needed[1])
    return {"scorer": {"layers": cfg["layers"],
                       "adapter_seed": derive_seed(cfg["seed"], "lora-A")},  # as clients/build.py
            "theta": torch.from_numpy(theta).float()}


def cached(engine, enc, run):
    """With --run, the engine behind the frozen-prefix cache with packed suffixes, as a run's."""
    return with_prefix_cache(engine, 2**31, enc.pad_id, packed=True) if run else engine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--targets", default="head")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--copies", type=int, default=32)
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--schemes", default="none,int8,int4")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--examples", type=int, default=0, help="test examples (0: the whole split)")
    ap.add_argument("--cache", help="program cache to reuse (default: a fresh one, timed lowering)")
    ap.add_argument("--run", help="a run directory: its suffix adapter, cached prefix, packed suffix")
    ap.add_argument("--eps", type=float, default=0.01, help="--run: perturbation of copies 2..")
    ap.add_argument("--save", nargs="?", const=True, metavar="PAGE",
                    help="also write docs/results/quantize[-run].json and its page "
                         "(or PAGE.json: a second setting's page)")
    ap.add_argument("--hold", help=argparse.SUPPRESS)
    ap.add_argument("--hold-mode", help=argparse.SUPPRESS)
    ap.add_argument("--scheme", help=argparse.SUPPRESS)
    ap.add_argument("--shape", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.hold:
        return _hold(args.hold, args.scheme, args.shape, args.hold_mode)

    run = run_adapter(args) if args.run else None
    model, tok = load_model(args.model)
    task = load_task("mr")
    enc = PromptEncoder(tok, task.template, task.label_words, max_length=args.tokens)
    scorer = LabelScorer(model, enc.label_ids, targets=args.targets.split(","), rank=args.rank,
                         **(run["scorer"] if run else {}))
    noise = torch.randn(args.copies, scorer.dim, generator=torch.Generator().manual_seed(0))
    if run:  # copies around the trained adapter, as a P-RGE step evaluates them
        thetas = run["theta"] + args.eps * noise
        thetas[1] = run["theta"]
    else:
        thetas = 0.05 * noise
    thetas[0] = 0  # the base model
    batch = enc.encode(task.test[: args.rows])
    schemes = args.schemes.split(",")
    engines, figures = {"eager": cached(EagerEngine(scorer), enc, run)}, {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or tmp
        for scheme in schemes:
            folder = os.path.join(cache, scheme)
            engine = ExecuTorchEngine(scorer, folder, batch_rows=args.rows, max_length=args.tokens,
                                      quantize=scheme)
            if run:
                t0 = time.perf_counter()
                engine = cached(engine, enc, run)
                engine.prepare([args.copies], enc.token_buckets())
                engine.label_logits(batch, thetas)  # fills this batch's prefixes before timing
                figures[scheme] = {"lowering_s": round(time.perf_counter() - t0, 1)}
                engines[scheme] = engine
                continue
            engine.prepare([args.copies])
            (pte,) = [f for f in os.listdir(folder) if f.endswith(".pte")]  # not its .lock
            path = os.path.join(folder, pte)
            rss = held_rss_mib(path, scheme, args.copies, args.rows, args.tokens, scorer.dim)
            engines[scheme] = engine
            figures[scheme] = {"lowering_s": round(engine.lowering_s[args.copies], 1),
                               "partitions": engine.partitions,
                               "pte_mib": round(os.path.getsize(path) / 2**20, 1),
                               "rss_program_mib": round(rss["program"], 1),
                               "rss_imports_mib": round(rss["imports"], 1)}
        engines["eager"].label_logits(batch, thetas)  # warm-up (and the cache fill, with --run)
        times = {name: [] for name in engines}
        for _ in range(args.reps):  # interleaved: every engine sees the same machine noise
            for name, engine in engines.items():
                t0 = time.perf_counter()
                engine.label_logits(batch, thetas)
                times[name].append(time.perf_counter() - t0)
        eager_s = statistics.median(times["eager"])
        examples = task.test[: args.examples or None]
        reference = None
        for scheme in schemes:
            f = figures[scheme]
            f["forward_s"] = round(statistics.median(times[scheme]), 4)
            f["speedup_vs_eager"] = round(eager_s / f["forward_s"], 2)
            acc = accuracies(engines[scheme], enc, examples, thetas, args.rows)
            preds = acc.pop("predictions")
            reference = preds if reference is None else reference
            f.update({k: round(v, 4) for k, v in acc.items()})
            f["same_predictions_as_first"] = round((preds == reference).float().mean().item(), 4)
    base = figures[schemes[0]]
    for scheme in schemes:
        f = figures[scheme]
        f["speedup_vs_first"] = round(base["forward_s"] / f["forward_s"], 2)
        if run:
            print(f"{scheme}: lowering and prefix fill {f['lowering_s']} s, forward "
                  f"{f['forward_s']} s ({f['speedup_vs_first']}x vs {schemes[0]}, "
                  f"{f['speedup_vs_eager']}x vs eager {eager_s:.3f} s), accuracy base "
                  f"{100 * f['base_acc']:.1f}/{100 * f['base_acc_cal']:.1f} %, trained "
                  f"{100 * f['trained_acc']:.1f}/{100 * f['trained_acc_cal']:.1f} %, "
                  f"{args.copies} copies {100 * f['mean_acc']:.1f}/{100 * f['mean_acc_cal']:.1f} % "
                  f"(raw/calibrated), {100 * f['same_predictions_as_first']:.1f} % same "
                  "predictions", flush=True)
            continue
        f["size_ratio"] = round(base["pte_mib"] / f["pte_mib"], 2)
        f["rss_own_mib"] = round(f["rss_program_mib"] - f["rss_imports_mib"], 1)  # the program's share
        f["rss_ratio"] = round(base["rss_own_mib"] / max(f["rss_own_mib"], 1e-3), 2)
        print(f"{scheme}: lowering {f['lowering_s']} s, {f['partitions']} partitions, "
              f"{f['pte_mib']} MiB .pte ({f['size_ratio']}x smaller), peak RSS holding it "
              f"{f['rss_program_mib']} MiB = imports {f['rss_imports_mib']} + program "
              f"{f['rss_own_mib']} MiB ({f['rss_ratio']}x smaller), forward {f['forward_s']} s "
              f"({f['speedup_vs_first']}x vs {schemes[0]}, {f['speedup_vs_eager']}x vs eager "
              f"{eager_s:.3f} s), accuracy "
              f"base {100 * f['base_acc']:.1f}/{100 * f['base_acc_cal']:.1f} %, {args.copies} copies "
              f"{100 * f['mean_acc']:.1f}/{100 * f['mean_acc_cal']:.1f} % (raw/calibrated), "
              f"{100 * f['same_predictions_as_first']:.1f} % same predictions", flush=True)
    figures = {"bench": "quantize", "model": args.model, "targets": args.targets,
               "rank": args.rank, "run": args.run,
               "layers": run["scorer"]["layers"] if run else "all",
               "copies": args.copies, "rows": args.rows,
               "tokens": args.tokens, "examples": len(examples), "eager_s": round(eager_s, 4),
               "schemes": figures}
    if args.save:
        save_page(args, figures, scorer.dim)
    print(json.dumps(figures))


def save_page(args, figures: dict, dim: int) -> None:
    """`--save`: docs/results/quantize.json (quantize-run.json with --run) and its page."""
    from simulation.benchpage import save, table

    schemes, first = figures["schemes"], next(iter(figures["schemes"]))
    n, copies = figures["examples"], args.copies

    def acc(f: dict, key: str) -> str:
        return f"{100 * f[key]:.1f}/{100 * f[key + '_cal']:.1f} %"

    what = (f"{args.model} ({args.targets}, rank {args.rank}, layers {figures['layers']}, "
            f"D = {dim:,}): {copies} copies x {args.rows} examples x {args.tokens} tokens per forward, "
            f"median of {args.reps}; accuracy on {n} MR test examples, raw/calibrated")
    timing = [f"every scheme and eager (at {figures['eager_s']:.3f} s) side by side on one batch: "
              f"{args.reps} interleaved repetitions, medians"]
    if args.cache:
        timing.append(f"lowering: programs found in {args.cache} (not lowered afresh)")
    if args.run:
        save("quantize-run", [table(
            f"Quantized base weights on the adapter of {args.run}, prefix cache and packed suffix "
            f"programs, {what}",
            ["base weights (none: fp32)", "lowering and prefix fill", "forward", f"vs {first}", "vs eager",
             "base model", "trained adapter", f"mean of {copies} copies", "same predictions"],
            [[s, f"{f['lowering_s']} s", f"{f['forward_s']} s", f"{f['speedup_vs_first']}x",
              f"{f['speedup_vs_eager']}x", acc(f, "base_acc"), acc(f, "trained_acc"),
              acc(f, "mean_acc"), f"{100 * f['same_predictions_as_first']:.1f} %"]
             for s, f in schemes.items()])], figures, notes=[
            *timing, f"copy 0: the base model; copy 1: the run's final adapter; copies 2..: it "
            f"plus {args.eps} z for Gaussian z, as a P-RGE step evaluates them; same predictions: "
            f"the share of every copy's predictions equal to {first}'s",
            "lowering and prefix fill: the prefix and suffix programs' lowering and one batch's "
            "cache fill, one run", "not measured: memory (one program per token bucket)"],
            page=args.save)
        return
    save("quantize", [table(
        f"Quantized base weights in the ExecuTorch program, {what}",
        ["base weights (none: fp32)", "lowering", "partitions", ".pte", "program's resident memory",
         "forward", f"vs {first}", "vs eager", "accuracy, base", f"mean of {copies} copies",
         "same predictions"],
        [[s, f"{f['lowering_s']} s", f["partitions"], f"{f['pte_mib']} MiB ({f['size_ratio']}x smaller)",
          f"{f['rss_own_mib']} MiB ({f['rss_ratio']}x smaller)", f"{f['forward_s']} s",
          f"{f['speedup_vs_first']}x", f"{f['speedup_vs_eager']}x", acc(f, "base_acc"),
          acc(f, "mean_acc"), f"{100 * f['same_predictions_as_first']:.1f} %"]
         for s, f in schemes.items()])], figures, notes=[
        *timing, "resident memory: peak RSS (VmHWM) of a fresh process that loads the .pte and runs "
        "it once, less that of one that only imports the runtime "
        f"({schemes[first]['rss_imports_mib']} MiB); one process each",
        f"copy 0: the base model (B = 0); copies 1..: random adapters (0.05 z); same predictions: "
        f"the share of every copy's predictions equal to {first}'s",
        "not measured: training with quantized weights (their P-RGE scalars: bench/step_time.py "
        "--suffix)"], page=args.save)


if __name__ == "__main__":
    main()
