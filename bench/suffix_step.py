"""Seconds per P-RGE step on suffix adapters (`python bench/step_time.py --suffix`).

For each `layers=last-N` and q, one batch of MR examples and one set of seeds, timed side by side
(interleaved repetitions, medians):

  * `before`: the path this product had before the frozen-prefix cache: one forward of the token
    ids in which the frozen layers run once for all copies and the adapted layers run for every
    copy at every position, the last layer included (written out below, eager);
  * `eager`: today's forward without the cache (the last layer pruned to the last token);
  * `eager+cache`: the suffix only, from cached hidden states;
  * `eager+packed`: the same on the batch's real tokens only (prge/packing.py);
  * `et+cache`, `et+packed`, `et-int8+cache`: the suffix as an ExecuTorch program (fp32 padded,
    fp32 packed, int8 base weights), from the same cache; `et` (optional, `--et-full`): the
    whole forward as one fp32 program.
The cache is filled before timing (its one-time cost is reported apart, per example).
`suffix_speedup` = before / the fastest cached variant whose projected gradients agree with the
`before` path's (max relative difference <= 1 %), at the goal's row (last-4, q = 4). A variant that
is faster but whose scalars disagree (int8 activations can swamp eps-sized differences) is
reported, and not counted.
"""

from __future__ import annotations

import statistics
import tempfile
import time

import torch

from prge.engines.eager import EagerEngine
from prge.engines.executorch import ExecuTorchEngine
from prge.estimator import projected_grads
from prge.models import load_model
from prge.perturb import derive_seed
from prge.prefix_cache import with_prefix_cache
from prge.scorer import LabelScorer
from prge.tasks import PromptEncoder, load_task

AGREE = 0.01  # max relative difference of the scalars for a variant to count as the same step


class BeforeEngine:
    """The forward as it was: every adapted layer, the last one included, at every position."""

    def __init__(self, scorer: LabelScorer):
        self.scorer, self.dim = scorer, scorer.dim

    def label_logits(self, batch, thetas):
        s, (N, T) = self.scorer, batch.input_ids.shape
        C = thetas.shape[0]
        with torch.inference_mode():
            s.layout.set_copies(thetas)
            try:
                h = s.embed_ids(batch.input_ids)
                for i in range(len(s.layers)):
                    if i == s.first_adapted:
                        h = h.repeat(C, 1, 1)
                    h = s._decoder_layer(i, h)
                h_last = h.view(-1, N, T, h.shape[-1])[:, torch.arange(N), batch.last_index]
                h_last = h_last.reshape(-1, h.shape[-1])
                if s.first_adapted == len(s.layers):
                    h_last = h_last.repeat(C, 1)
                logits = s.head(s._rms_norm(s.norm, h_last))
            finally:
                s.layout.set_copies(None)
        return logits.view(C, N, -1)


def _time(engines: dict, batch, theta, seeds, reps: int, eps: float) -> tuple[dict, dict]:
    times = {name: [] for name in engines}
    grads = {}
    for name, engine in engines.items():  # warm-up (lowering happens here, untimed)
        grads[name], _ = projected_grads(engine, batch, theta, seeds, eps)
    for _ in range(reps):
        for name, engine in engines.items():  # interleaved: every variant sees the same noise
            t0 = time.perf_counter()
            projected_grads(engine, batch, theta, seeds, eps)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}, grads


def run(args) -> dict:
    model, tok = load_model(args.model)
    task = load_task("mr")
    enc = PromptEncoder(tok, task.template, task.label_words)
    batch = enc.encode(task.train[: args.batch])
    targets = args.targets.split(",")
    programs = tempfile.mkdtemp(prefix="suffix-programs-")
    rows, cache_rows = [], []
    for n in (int(x) for x in args.ns.split(",")):
        model, tok = load_model(args.model)  # fresh: LoRA-FA wraps the model's linears in place
        scorer = LabelScorer(model, enc.label_ids, targets=targets, rank=args.rank,
                             layers=f"last-{n}")
        eager = EagerEngine(scorer)
        cached = with_prefix_cache(eager, 2**30, enc.pad_id)
        t0 = time.perf_counter()
        cached.cache.warm([batch])
        cache_rows.append({"n": n, "prefix_s_per_example": (time.perf_counter() - t0) / len(batch),
                           "bytes_per_example": cached.cache.stats.bytes / len(batch)})
        packed = with_prefix_cache(eager, 2**30, enc.pad_id, packed=True)
        packed.cache = cached.cache
        engines = {"before": BeforeEngine(scorer), "eager": eager, "eager+cache": cached,
                   "eager+packed": packed}
        for name, scheme, pack in (("et+cache", "none", False), ("et+packed", "none", True),
                                   ("et-int8+cache", "int8", False)):
            if scheme in args.schemes.split(","):
                et = ExecuTorchEngine(scorer, programs, batch_rows=args.batch, max_length=64,
                                      quantize=scheme, log=lambda m: print("  " + m, flush=True))
                engine = with_prefix_cache(et, 2**30, enc.pad_id, packed=pack)
                engine.cache = cached.cache  # the same hidden states (computed by eager)
                engines[name] = engine
        if n in args.et_full:
            engines["et"] = ExecuTorchEngine(scorer, programs, batch_rows=args.batch,
                                             max_length=64, log=lambda m: print("  " + m))
        theta = torch.zeros(scorer.dim)
        for q in (int(x) for x in args.qs.split(",")):
            seeds = [derive_seed(0, "bench", i) for i in range(q)]
            medians, grads = _time(engines, batch, theta, seeds, args.reps, args.eps)
            ref = grads["before"]
            row = {"layers": f"last-{n}", "dim": scorer.dim, "q": q,
                   "seconds": {k: round(v, 4) for k, v in medians.items()},
                   "speedup_vs_before": {k: round(medians["before"] / v, 2)
                                         for k, v in medians.items()},
                   "max_rel_grad_diff": {k: round(float((g - ref).abs().max() /
                                                        ref.abs().max()), 5)
                                         for k, g in grads.items()}}
            rows.append(row)
            print(f"last-{n} (D {scorer.dim:,}) q {q}: " + "  ".join(
                f"{k} {v:.3f} s ({row['speedup_vs_before'][k]:.2f}x)" for k, v in medians.items()),
                flush=True)
    goal = next((r for r in rows if r["layers"] == "last-4" and r["q"] == 4), None)
    speedup = None
    if goal:
        exact = [(v, k) for k, v in goal["seconds"].items()
                 if k.endswith(("+cache", "+packed")) and goal["max_rel_grad_diff"][k] <= AGREE]
        best = min(exact)
        speedup = {"ratio": round(goal["seconds"]["before"] / best[0], 2), "variant": best[1]}
    return {"bench": "step_time_suffix", "model": args.model, "batch": args.batch,
            "tokens": int(batch.input_ids.shape[1]), "rank": args.rank, "targets": args.targets,
            "cache": cache_rows, "rows": rows, "suffix_speedup": speedup}


def save_page(args, figures: dict) -> None:
    """`--save`: docs/results/step-time-suffix.json and its page, from run()'s figures."""
    from simulation.benchpage import save, table

    rows = figures["rows"]
    variants = list(dict.fromkeys(k for r in rows for k in r["seconds"]))  # every row's, in order

    def cells(r: dict, cell) -> list:
        return [f"{r['layers']} ({r['dim']:,})", r["q"],
                *(cell(r, k) if k in r["seconds"] else "" for k in variants)]

    what = (f"{args.model}, {args.targets} at rank {args.rank}, batch {figures['batch']} x "
            f"{figures['tokens']} tokens, eps {args.eps}")
    timed = table(f"Seconds per P-RGE step on suffix adapters ({what}), median of {args.reps}; "
                  "(x): speed-up vs before", ["adapter (D)", "q", *variants],
                  [cells(r, lambda r, k: f"{r['seconds'][k]:.3f} s" if k == "before" else
                         f"{r['seconds'][k]:.3f} s ({r['speedup_vs_before'][k]:.2f}x)")
                   for r in rows])
    agree = table(f"Max relative difference of the q projected gradients from before's ({what})",
                  ["adapter (D)", "q", *variants],
                  [cells(r, lambda r, k: f"{r['max_rel_grad_diff'][k]:.1e}") for r in rows])
    fill = table(f"Filling the frozen-prefix cache (eager, one batch of {figures['batch']} x "
                 f"{figures['tokens']} tokens)", ["adapter", "seconds per example",
                                                  "KiB per example"],
                 [[f"last-{c['n']}", f"{c['prefix_s_per_example']:.3f} s",
                   f"{c['bytes_per_example'] / 1024:.1f}"] for c in figures["cache"]])
    best = figures["suffix_speedup"]
    save("step-time-suffix", [timed, agree, fill], figures, notes=[
        "before: every adapted layer per copy at every position, no cache (eager, the reference); "
        "eager: no cache, the last layer for the last token only; +cache: the suffix from cached "
        "hidden states; +packed: the same on the batch's real tokens only; et+cache, et+packed, "
        "et-int8+cache: the suffix as an ExecuTorch program (fp32, fp32 packed, int8 base "
        "weights) from the same cache; et: the whole forward as one fp32 program",
        f"the same examples and seeds for every variant, side by side: {args.reps} interleaved "
        "repetitions, medians; the cache filled and the programs lowered before timing",
        (f"suffix_speedup {best['ratio']}x ({best['variant']}): before / the fastest cached variant "
         f"whose gradients agree within {AGREE:.0%}, at last-4, q = 4" if best else
         "suffix_speedup not computed: no last-4, q = 4 row"),
        "not measured: lowering time, accuracy (int8 evaluation: bench/quantize.py --run)"],
        page=args.save)
