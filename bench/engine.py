"""ExecuTorch vs eager on the batched P-RGE forward, side by side in one run.

    python bench/engine.py                         # SmolLM2-135M, q = 1,2,4, 4 examples x 32 tokens
    python bench/engine.py --model tiny --qs 2 --equiv 32
    python bench/engine.py --save                  # also docs/results/engine.json and engine.md

For each q: lowering time, XNNPACK partitions, seconds per forward of the 2q copies (ExecuTorch and
eager, interleaved), and achieved GFLOP/s against this machine's fp32 matmul ceiling measured in the
same run (best of PyTorch's and XNNPACK's GEMM at 2048^3 and at the forward's shapes, bench/peak.py).
For the largest q: label logits of both engines on `--equiv` test examples with non-zero adapters
(max |diff|, identical predictions). Ends with one JSON line of its figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import torch
from peak import decoder_shapes, matmul_peak

from prge.engines.eager import EagerEngine
from prge.engines.executorch import ExecuTorchEngine
from prge.models import load_model
from prge.scorer import LabelScorer
from prge.tasks import PromptEncoder, load_task


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def forward_flops(scorer: LabelScorer, rows: int, tokens: int, copies: int) -> float:
    """Multiply-adds of the decoder's linear layers, x2 (attention scores are small at 32 tokens).
    Layers before the first adapted one run once; the rest once per copy."""
    per_layer = sum(p.numel() for n, p in scorer.layers[0].named_parameters()
                    if n.endswith("weight") and p.dim() == 2)
    shared = scorer.first_adapted
    runs = shared + (len(scorer.layers) - shared) * copies
    return 2.0 * per_layer * runs * rows * tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--targets", default="q,k,v,o,gate,up,down")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--qs", default="1,2,4")
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--equiv", type=int, default=200, help="test examples for the equivalence check")
    ap.add_argument("--save", nargs="?", const=True, metavar="PAGE",
                    help="also write docs/results/engine.json and its page "
                         "(or PAGE.json: a second setting's page)")
    args = ap.parse_args()

    model, tok = load_model(args.model)
    task = load_task("mr")
    enc = PromptEncoder(tok, task.template, task.label_words, max_length=args.tokens)
    scorer = LabelScorer(model, enc.label_ids, targets=args.targets.split(","), rank=args.rank)
    eager = EagerEngine(scorer)
    qs = [int(q) for q in args.qs.split(",")]
    # the ceiling at the forward's own linear shapes too (rows x tokens x copies token rows)
    shapes = [s for q in qs for s in decoder_shapes(model.config, args.rows * args.tokens * 2 * q)]
    ceiling = matmul_peak(shapes)
    peak = ceiling["peak_gflops"]
    print(f"matmul ceiling: torch {ceiling['torch_gflops']} GFLOP/s, XNNPACK "
          f"{ceiling['xnnpack_gflops']} GFLOP/s", flush=True)
    # the timed batch is padded to exactly `tokens`, as the program is (a fair FLOP count)
    batch = enc.encode(task.test[: args.rows])
    assert batch.input_ids.shape[1] == args.tokens, "pick --tokens reached by the first examples"
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        lowered = ExecuTorchEngine(scorer, cache, batch_rows=args.rows, max_length=args.tokens)
        for q in qs:
            thetas = 0.05 * torch.randn(2 * q, scorer.dim, generator=torch.Generator().manual_seed(q))
            lowered.label_logits(batch, thetas)  # lowers (once per q)
            pte = max(os.path.getsize(os.path.join(cache, f)) for f in os.listdir(cache))
            times = {"executorch": [], "eager": []}
            for _ in range(args.reps):  # interleaved: both engines see the same machine noise
                for name, engine in (("executorch", lowered), ("eager", eager)):
                    t0 = time.perf_counter()
                    engine.label_logits(batch, thetas)
                    times[name].append(time.perf_counter() - t0)
            et_s, eager_s = (statistics.median(times[k]) for k in ("executorch", "eager"))
            gflop = forward_flops(scorer, args.rows, args.tokens, 2 * q) / 1e9
            rows.append({"q": q, "copies": 2 * q, "lowering_s": round(lowered.lowering_s[2 * q], 1),
                         "partitions": lowered.partitions, "pte_mib": round(pte / 2**20, 1),
                         "executorch_s": round(et_s, 4), "eager_s": round(eager_s, 4),
                         "speedup": round(eager_s / et_s, 3),
                         "executorch_peak_frac": round(gflop / et_s / peak, 3),
                         "eager_peak_frac": round(gflop / eager_s / peak, 3)})
            r = rows[-1]
            print(f"q={q}: lowering {r['lowering_s']} s, {r['partitions']} partitions, "
                  f"{r['pte_mib']} MiB; forward executorch {et_s:.3f} s vs eager {eager_s:.3f} s "
                  f"({r['speedup']:.2f}x); {100 * r['executorch_peak_frac']:.0f} % vs "
                  f"{100 * r['eager_peak_frac']:.0f} % of the {peak:.0f} GFLOP/s matmul peak",
                  flush=True)
        # equivalence on many real examples with several non-zero adapters (largest q's program)
        q = qs[-1]
        thetas = 0.05 * torch.randn(2 * q, scorer.dim, generator=torch.Generator().manual_seed(q))
        examples = task.test[: args.equiv]
        diffs, same = [], True
        for start in range(0, len(examples), args.rows):
            b = enc.encode(examples[start:start + args.rows])
            a, e = lowered.label_logits(b, thetas), eager.label_logits(b, thetas)
            diffs.append((a - e).abs().max().item())
            same &= bool(torch.equal(a.argmax(-1), e.argmax(-1)))
    print(f"equivalence on {len(examples)} test examples x {2 * q} adapter copies: "
          f"max |diff| {max(diffs):.2e}, identical predictions: {same}")
    figures = {"bench": "engine", "model": args.model, "targets": args.targets,
               "rows": args.rows, "tokens": args.tokens, "peak_gflops": peak,
               "torch_gflops": ceiling["torch_gflops"], "xnnpack_gflops": ceiling["xnnpack_gflops"],
               "per_q": rows, "equiv_examples": len(examples),
               "equiv_max_abs_diff": max(diffs), "equiv_same_predictions": same}
    if args.save:
        from simulation.benchpage import save, table

        title = (f"ExecuTorch vs eager, one forward of the 2q copies on {args.model} ({args.targets}, "
                 f"rank {args.rank}, D = {scorer.dim:,}), {args.rows} examples x {args.tokens} "
                 f"tokens, median of {args.reps}")
        save("engine", [
            table(title, ["q (copies)", "lowering", "partitions", ".pte", "ExecuTorch", "eager",
                          "speed-up", f"fraction of the {peak:.0f} GFLOP/s ceiling (ExecuTorch / eager)"],
                  [[f"{r['q']} ({r['copies']})", f"{r['lowering_s']} s", r["partitions"],
                    f"{r['pte_mib']} MiB", f"{r['executorch_s']:.3f} s", f"{r['eager_s']:.3f} s",
                    f"{r['speedup']:.2f}x", f"{100 * r['executorch_peak_frac']:.0f} % / "
                    f"{100 * r['eager_peak_frac']:.0f} %"] for r in rows]),
            table(f"Label logits, ExecuTorch vs eager, on {len(examples)} MR test examples x {2 * q} "
                  "non-zero adapter copies (the largest q's program)",
                  ["examples", "copies", "max abs logit difference", "identical predictions"],
                  [[len(examples), 2 * q, f"{max(diffs):.2e}", "yes" if same else "NO"]])],
             figures, notes=[
                 "ExecuTorch and eager side by side on the same batch and adapters: "
                 f"{args.reps} interleaved repetitions per q, medians; lowering: once per q, "
                 "from an empty program cache",
                 f"ceiling: the best fp32 GEMM of PyTorch ({ceiling['torch_gflops']} GFLOP/s) and "
                 f"XNNPACK ({ceiling['xnnpack_gflops']} GFLOP/s) at 2048^3 and the forward's "
                 "shapes (bench/peak.py), same run; GFLOP/s count the decoder's linears only",
                 "not measured: quantized weights (bench/quantize.py), a whole P-RGE step, accuracy"],
                 page=args.save)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
