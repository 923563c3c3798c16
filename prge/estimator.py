"""P-RGE: parallelized randomized gradient estimation (arXiv 2409.15520) on a flat adapter theta.

One step with q seeds s_1..s_q, perturbation scale eps and batch x:
    z_i = direction(s_i)                                  (regenerated from the seed)
    L+_i, L-_i = loss(theta + eps z_i; x), loss(theta - eps z_i; x)
    g_i = (L+_i - L-_i) / (2 eps)                        (projected gradient: a scalar)
    theta <- theta - lr * (1/q) * sum_i g_i z_i
`parallel` evaluates all 2q copies in ONE batched forward (outer loop: the q queries; inner loop:
the +/- pair); `sequential` runs 2q separate forwards (MeZO-style), the reference and the baseline.
Only seeds and the scalars g_i are needed to repeat an update anywhere: see `apply_update`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from prge.engines.base import Engine, losses
from prge.perturb import directions
from prge.tasks import Batch

MODES = ("parallel", "sequential")


@dataclass(frozen=True)
class StepResult:
    seeds: tuple[int, ...]
    grads: tuple[float, ...]  # projected gradients g_i, one per seed
    loss: float  # mean of the 2q perturbed losses: a cheap estimate of the loss at theta


def perturbed_copies(theta: torch.Tensor, zs: torch.Tensor, eps: float) -> torch.Tensor:
    """(2q, D): rows 2i and 2i+1 are theta + eps z_i and theta - eps z_i."""
    plus, minus = theta + eps * zs, theta - eps * zs  # (q, D) each
    return torch.stack([plus, minus], dim=1).reshape(-1, theta.numel())


def projected_grads(engine: Engine, batch: Batch, theta: torch.Tensor, seeds: Sequence[int],
                    eps: float, mode: str = "parallel") -> tuple[torch.Tensor, torch.Tensor]:
    """Scalars g (q,) and the mean loss of each of the 2q copies (2q,)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    zs = directions(list(seeds), theta.numel(), theta.dtype)
    copies = perturbed_copies(theta, zs, eps)
    if mode == "parallel":
        copy_losses = losses(engine, batch, copies).mean(dim=1)
    else:
        copy_losses = torch.cat([losses(engine, batch, c[None]).mean(dim=1) for c in copies])
    plus, minus = copy_losses[0::2], copy_losses[1::2]
    return (plus - minus) / (2 * eps), copy_losses


def apply_update(theta: torch.Tensor, seeds: Sequence[int], grads: Sequence[float],
                 lr: float) -> torch.Tensor:
    """theta <- theta - lr * mean_i(g_i z_i), in place; z_i regenerated from seeds."""
    if len(seeds) != len(grads):
        raise ValueError(f"{len(seeds)} seeds but {len(grads)} projected gradients")
    scale = lr / len(seeds)
    for seed, g in zip(seeds, grads, strict=True):
        z = directions([seed], theta.numel(), theta.dtype)[0]
        theta.add_(z, alpha=-scale * float(g))
    return theta


def prge_step(engine: Engine, batch: Batch, theta: torch.Tensor, seeds: Sequence[int], *,
              eps: float, lr: float, mode: str = "parallel") -> StepResult:
    """Estimate with `projected_grads`, then update theta in place."""
    grads, copy_losses = projected_grads(engine, batch, theta, seeds, eps, mode)
    apply_update(theta, seeds, grads.tolist(), lr)
    return StepResult(tuple(int(s) for s in seeds), tuple(grads.tolist()),
                      float(copy_losses.mean()))


def scheduled_lr(base_lr: float, step: int, total_steps: int, schedule: str = "constant") -> float:
    """Step size in force at `step` (0-based): constant, or linear/cosine decay to 0."""
    if schedule == "constant" or total_steps <= 0:
        return base_lr
    progress = min(step / total_steps, 1.0)
    if schedule == "linear":
        return base_lr * (1.0 - progress)
    if schedule == "cosine":
        import math

        return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown lr schedule {schedule!r}")
