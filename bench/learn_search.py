"""Which zeroth-order settings learn a suffix adapter: P-RGE runs side by side on one cache.

Builds the scorer once for an adapter (layers, targets, rank), fills the frozen-prefix cache for
`--train` training and `--test` test examples of MR up front, then runs each setting of `--grid`
from theta = 0 for `--minutes` of P-RGE steps (cache already warm, so the settings compete on
step time alone), evaluating calibrated accuracy on the test examples every `--eval-every` steps.
`--steps N` budgets N steps instead: the schedule then spans exactly N steps and two runs print
the same curve on any machine (a time budget's step count, and so its schedule, varies with the
machine's speed).

    python bench/learn_search.py --layers last-1 --grid "q=16,lr=1e-2" --grid "q=4,lr=3e-2"
    python bench/learn_search.py --layers last-1 --steps 3000 --grid "q=4,lr=0.12,schedule=cosine" --save

Each --grid item is one setting: comma-separated key=value among q, lr, eps, batch, schedule,
seed; `method=fo` in an item runs first-order Adam on the same adapter instead (the reference),
`method=fo-sgd` plain SGD as the federated `fo` baseline's clients do (to choose its `fo-lr`).
`--cache-file X.npz` keeps the filled cache on disk for the next invocation on the same layers.
Prints a line per evaluation and ends with one JSON line of every curve.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from suffix_adapter import add_adapter_args, build_adapter, describe  # bench/, beside this script

from prge.engines.eager import EagerEngine
from prge.estimator import prge_step, scheduled_lr
from prge.evaluate import evaluate
from prge.first_order import fo_step
from prge.perturb import derive_seed
from prge.prefix_cache import with_prefix_cache

DEFAULTS = {"q": 16, "lr": 1e-2, "eps": 1e-2, "batch": 16, "schedule": "constant", "seed": 0,
            "method": "prge"}


def parse_setting(text: str) -> dict:
    setting = dict(DEFAULTS)
    for item in text.split(","):
        key, _, value = item.partition("=")
        if key not in DEFAULTS:
            raise SystemExit(f"unknown setting key {key!r}; choose from {', '.join(DEFAULTS)}")
        setting[key] = type(DEFAULTS[key])(value)
    return setting


def fo_adam_step(engine, batch, theta, adam, lr) -> None:
    """First-order reference: backprop through the suffix (from the cache) into theta, Adam."""
    (param,) = adam.param_groups[0]["params"]
    adam.param_groups[0]["lr"] = lr
    h = engine.cache.hidden(batch)
    logits = engine.inner.scorer.suffix(h, batch.last_index, param[None])[0]
    loss = F.cross_entropy(logits, batch.labels)
    adam.zero_grad()
    loss.backward()
    adam.step()
    theta.copy_(param.detach())


def run_setting(engine, enc, train, test, dim, s, minutes, steps, eval_every, log):
    """Train one setting from theta = 0 for `steps` steps if given, else `minutes` of steps."""
    theta = torch.zeros(dim)
    adam = torch.optim.Adam([torch.nn.Parameter(theta)], lr=s["lr"]) if s["method"] == "fo" else None
    rng = np.random.default_rng(derive_seed(s["seed"], "search-data"))
    budget = minutes * 60

    def spent() -> bool:
        return step >= steps if steps else elapsed >= budget

    # a time budget sizes the schedule from the first 20 steps' pace; a step budget knows it
    total_steps = steps or None
    curve, elapsed, step = [], 0.0, 0
    r = evaluate(engine, enc, test, theta)
    curve.append({"step": 0, "s": 0.0, "acc": r.acc, "acc_cal": r.acc_calibrated})
    while not spent():
        step += 1
        idx = rng.choice(len(train), size=s["batch"], replace=False)
        batch = enc.encode([train[i] for i in idx])
        seeds = [derive_seed(s["seed"], "search", step, i) for i in range(s["q"])]
        if total_steps is None and step > 20:
            total_steps = int(budget / (elapsed / (step - 1)))
        lr = scheduled_lr(s["lr"], step, total_steps or 10**9, s["schedule"])
        t0 = time.perf_counter()
        if s["method"] == "fo":
            fo_adam_step(engine, batch, theta, adam, lr)
        elif s["method"] == "fo-sgd":
            fo_step(engine.inner.scorer, batch, theta, lr, engine.cache.hidden(batch))
        else:
            prge_step(engine, batch, theta, seeds, eps=s["eps"], lr=lr)
        elapsed += time.perf_counter() - t0
        if step % eval_every == 0 or spent():
            r = evaluate(engine, enc, test, theta)
            curve.append({"step": step, "s": round(elapsed, 1), "acc": r.acc,
                          "acc_cal": r.acc_calibrated, "theta_norm": float(theta.norm())})
            log(f"  {s}  step {step:6d}  {elapsed:7.1f} s  raw {r.acc:.3f}  cal "
                f"{r.acc_calibrated:.3f}  |theta| {theta.norm():.3f}")
    return curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_adapter_args(ap)
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=1000)
    budget = ap.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=5.0,
                        help="steps for this many minutes per setting (default 5)")
    budget.add_argument("--steps", type=int, default=None,
                        help="exactly this many steps per setting: reproducible on any machine")
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--grid", action="append", default=[])
    ap.add_argument("--cache-file", default="")
    ap.add_argument("--save", nargs="?", const=True, metavar="PAGE",
                    help="also write docs/results/learn-search.json and its page "
                         "(or PAGE.json: a second setting's page)")
    args = ap.parse_args()
    settings = [parse_setting(g) for g in args.grid] or [dict(DEFAULTS)]
    if (args.steps is not None and args.steps <= 0) or args.minutes <= 0:
        raise SystemExit("--steps and --minutes must be positive")

    task, enc, scorer = build_adapter(args)
    engine = with_prefix_cache(EagerEngine(scorer), 8 * 2**30, enc.pad_id)
    train, test = task.train[: args.train], task.test[: args.test]
    t0 = time.perf_counter()
    order = sorted(train + test, key=lambda ex: len(ex.text))  # similar lengths: less padding
    path = Path(args.cache_file) if args.cache_file else None
    if path and path.is_file():
        engine.cache.load(path)  # an earlier call's hidden states (same layers and model)
    batches = [enc.encode(order[i:i + 32]) for i in range(0, len(order), 32)]
    engine.cache.warm(batches)
    if path and not path.is_file():
        engine.cache.save(path, [k for b in batches for k in engine.cache.keys(b)])
    warm_s = time.perf_counter() - t0
    print(f"adapter {args.layers} {args.targets} r{args.rank}: D = {scorer.dim:,}; cache of "
          f"{len(order)} examples in {warm_s:.1f} s, {engine.cache.stats.bytes / 2**20:.1f} MiB",
          flush=True)
    curves = []
    for s in settings:
        curve = run_setting(engine, enc, train, test, scorer.dim, s, args.minutes, args.steps,
                            args.eval_every, lambda m: print(m, flush=True))
        curves.append({"setting": s, "curve": curve})
    figures = {"bench": "learn_search", "layers": args.layers, "targets": args.targets,
               "rank": args.rank, "dim": scorer.dim, "train": len(train),
               "test": len(test), "cache_s": round(warm_s, 1), "runs": curves}
    if args.save:
        from simulation.benchpage import save, table

        budget = f"{args.steps} steps" if args.steps else f"{args.minutes:g} minutes of steps"
        title = (f"Accuracy on {len(test)} MR test examples while training {describe(args, scorer.dim)} "
                 f"from theta = 0 on {len(train)} training examples, {budget} per setting, evaluated "
                 f"every {args.eval_every} steps; accuracies as fractions")
        save("learn-search", [table(title, ["setting", "step", "seconds of steps", "raw acc",
                                            "calibrated acc", "theta norm"],
                                    [[" ".join(f"{k}={v}" for k, v in run["setting"].items())
                                      if i == 0 else "", c["step"], f"{c['s']:.1f}", f"{c['acc']:.3f}",
                                      f"{c['acc_cal']:.3f}", f"{c.get('theta_norm', 0.0):.3f}"]
                                     for run in curves for i, c in enumerate(run["curve"])])],
             figures, notes=[
                 f"the frozen-prefix cache of {len(order)} examples filled first"
                 + (f" (or read from {args.cache_file})" if args.cache_file else "")
                 + f": {warm_s:.1f} s, {engine.cache.stats.bytes / 2**20:.1f} MiB; then each "
                 "setting from theta = 0, one after another (not interleaved), eager; seconds: the "
                 "steps' own, evaluation left out",
                 "method=prge: P-RGE; fo: first-order Adam; fo-sgd: first-order plain SGD; a time "
                 "budget sizes a schedule from the first 20 steps' pace, so its steps vary with the "
                 "machine (--steps does not)",
                 "not measured: seeds' spread (one seed per setting), federated training"],
                 page=args.save)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
