"""`fedprge train`: single-client (centralized) P-RGE fine-tuning.

Writes a run directory with the resolved config, `metrics.jsonl` (one line per step; test
accuracy on evaluation steps), the update log (seed, projected gradient, lr per query: the whole
adapter state, replayable with `prge.estimator.apply_update`) and a summary.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from clients.build import Setup, build
from clients.runconfig import Config
from prge.batching import group_by_length
from prge.estimator import prge_step, scheduled_lr
from prge.evaluate import evaluate
from prge.perturb import derive_seed
from prge.prefix_cache import cache_summary, warm_examples
from simulation.environment import record_environment
from simulation.rundir import JsonlWriter, claim_run_dir, write_json

LENGTH_WINDOW = 8  # batch-order=length regroups the examples of this many steps of one epoch


def batch_order(n_examples: int, batch_size: int, steps: int, seed: int,
                lengths: np.ndarray | None = None) -> list[np.ndarray]:
    """Example indices for every step: seeded reshuffle at each epoch, no repeats within one.
    With `lengths` (tokens per example), every window of LENGTH_WINDOW steps within an epoch is
    regrouped into batches of similar length: each epoch still sees the same examples."""
    rng = np.random.default_rng(derive_seed(seed, "train-data"))
    batches, perm, pos = [], rng.permutation(n_examples), 0
    for _ in range(steps):
        if pos + batch_size > n_examples:
            perm, pos = rng.permutation(n_examples), 0
        batches.append(perm[pos:pos + batch_size])
        pos += batch_size
    if lengths is None:
        return batches
    per_epoch = n_examples // batch_size
    order_rng = np.random.default_rng(derive_seed(seed, "length-order"))
    grouped = []
    for epoch_start in range(0, steps, per_epoch):
        epoch = batches[epoch_start:epoch_start + per_epoch]
        for w in range(0, len(epoch), LENGTH_WINDOW):
            grouped += group_by_length(epoch[w:w + LENGTH_WINDOW], lengths, order_rng)
    return grouped


def train(cfg: Config, out: str | Path | None = None, progress: bool = True) -> Path:
    setup = build(cfg)
    run_dir, lock = claim_run_dir(cfg.runs_dir, "train", out)
    try:
        return _train_in(run_dir, setup, cfg, progress)
    finally:
        os.close(lock)


def _train_in(run_dir: Path, setup: Setup, cfg: Config, progress: bool) -> Path:
    write_json(run_dir / "config.json", cfg.to_dict())
    record_environment(run_dir)
    train_set = setup.task.train
    test_set = setup.task.test[: cfg.eval_size or None]
    theta = setup.scorer.layout.zeros()
    metrics = JsonlWriter(run_dir / "metrics.jsonl")
    update_log = JsonlWriter(run_dir / "update_log.jsonl")
    lengths = setup.encoder.lengths(train_set) if cfg.batch_order == "length" else None
    order = batch_order(len(train_set), min(cfg.batch_size, len(train_set)), cfg.steps, cfg.seed,
                        lengths)

    start = time.perf_counter()
    warm_s = 0.0
    if cfg.prefix_cache_fill == "upfront":  # else each example's prefix runs at its first use
        warm_s = warm_examples(setup.engine, setup.encoder, list(train_set) + list(test_set))
    zero_shot = evaluate(setup.engine, setup.encoder, test_set, theta)
    record = {"step": 0, "prefix_cache_s": warm_s, "test_acc": zero_shot.acc,
              "test_acc_cal": zero_shot.acc_calibrated, "test_loss": zero_shot.loss,
              "elapsed_s": time.perf_counter() - start}
    metrics.write(record)
    last_eval = zero_shot
    bar = tqdm(range(1, cfg.steps + 1), disable=not progress, desc="train", unit="step")
    for step in bar:
        batch = setup.encoder.encode([train_set[i] for i in order[step - 1]])
        seeds = [derive_seed(cfg.seed, "train", step, i) for i in range(cfg.q)]
        lr = scheduled_lr(cfg.lr, step - 1, cfg.steps, cfg.lr_schedule)
        t0 = time.perf_counter()
        result = prge_step(setup.engine, batch, theta, seeds, eps=cfg.eps, lr=lr, mode=cfg.mode)
        record = {"step": step, "train_loss": result.loss, "lr": lr,
                  "step_s": time.perf_counter() - t0, "theta_norm": float(theta.norm())}
        for seed, g in zip(result.seeds, result.grads, strict=True):
            update_log.write({"step": step, "seed": seed, "grad": g, "lr": lr, "q": cfg.q})
        if step % cfg.eval_every_steps == 0 or step == cfg.steps:
            last_eval = evaluate(setup.engine, setup.encoder, test_set, theta)
            record.update(test_acc=last_eval.acc, test_acc_cal=last_eval.acc_calibrated,
                          test_loss=last_eval.loss)
        record["elapsed_s"] = time.perf_counter() - start
        metrics.write(record)
        bar.set_postfix(loss=f"{result.loss:.3f}", acc=f"{last_eval.acc:.3f}",
                        cal=f"{last_eval.acc_calibrated:.3f}")
    metrics.close()
    update_log.close()
    summary = {
        "steps": cfg.steps, "adapter_dim": setup.scorer.dim, "eval_examples": len(test_set),
        "zero_shot_acc": zero_shot.acc, "zero_shot_acc_cal": zero_shot.acc_calibrated,
        "final_acc": last_eval.acc, "final_acc_cal": last_eval.acc_calibrated,
        "dense_bytes": 4 * setup.scorer.dim,  # one float32 upload of the adapter itself
        "wall_s": time.perf_counter() - start,
        **cache_summary(setup.engine),  # the frozen-prefix cache: examples, bytes, compute time
    }
    write_json(run_dir / "summary.json", summary)
    if progress:
        print(f"run directory: {run_dir}")
        print(f"adapter dims {summary['adapter_dim']:,}  steps {cfg.steps}  "
              f"wall {summary['wall_s'] / 60:.1f} min  eval on {len(test_set)} test examples")
        print(f"  zero-shot  acc {zero_shot.acc:.3f}  calibrated {zero_shot.acc_calibrated:.3f}")
        print(f"  final      acc {last_eval.acc:.3f}  calibrated {last_eval.acc_calibrated:.3f}")
    return run_dir
