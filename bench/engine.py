"""ExecuTorch vs eager on one batched P-RGE forward, side by side in one run.

    python bench/engine.py                                  # SmolLM2-135M, q=2, 4 examples x 32 tokens
    python bench/engine.py --model tiny --targets head --rank 16

Prints lowering time, XNNPACK partitions, max |logit diff| and seconds per forward for both engines,
and ends with one JSON line of its figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch

from prge.engines.eager import EagerEngine
from prge.engines.executorch import ExecuTorchEngine
from prge.models import load_model
from prge.scorer import LabelScorer
from prge.tasks import PromptEncoder, load_task


def timed(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--targets", default="q,k,v,o,gate,up,down")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--q", type=int, default=2)
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()

    model, tok = load_model(args.model)
    task = load_task("mr")
    enc = PromptEncoder(tok, task.template, task.label_words, max_length=args.tokens)
    scorer = LabelScorer(model, enc.label_ids, targets=args.targets.split(","), rank=args.rank)
    eager = EagerEngine(scorer)
    with tempfile.TemporaryDirectory() as cache:
        lowered = ExecuTorchEngine(scorer, cache, batch_rows=args.rows, max_length=args.tokens)
        batch = enc.encode(task.test[: args.rows])
        thetas = 0.05 * torch.randn(2 * args.q, scorer.dim, generator=torch.Generator().manual_seed(0))
        lowered.label_logits(batch, thetas)  # lowers (once)
        diff = (lowered.label_logits(batch, thetas) - eager.label_logits(batch, thetas)).abs().max()
        et_s = timed(lambda: lowered.label_logits(batch, thetas), args.reps)
        eager_s = timed(lambda: eager.label_logits(batch, thetas), args.reps)
    print(f"lowering {lowered.lowering_s[2 * args.q]:.1f} s, {lowered.partitions} partitions, "
          f"max |diff| {diff:.2e}; forward: executorch {et_s:.3f} s, eager {eager_s:.3f} s, "
          f"ratio {eager_s / et_s:.2f}x")
    print(json.dumps({"bench": "engine", "model": args.model, "targets": args.targets,
                      "copies": 2 * args.q, "rows": args.rows, "tokens": args.tokens,
                      "lowering_s": round(lowered.lowering_s[2 * args.q], 1),
                      "partitions": lowered.partitions, "max_abs_diff": float(diff),
                      "executorch_s": round(et_s, 4), "eager_s": round(eager_s, 4),
                      "speedup": round(eager_s / et_s, 3)}))


if __name__ == "__main__":
    main()
