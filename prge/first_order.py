"""First-order local training of the LoRA-FA B matrices: the accuracy reference for P-RGE.

Backpropagation through the frozen base model into theta (all B's), plain SGD. It needs autograd,
so it runs on the eager scorer, never on an inference engine: exactly what P-RGE avoids on a device.
With a frozen-prefix cache the forward starts from the cached hidden states and only the suffix is
differentiated: the prefix does not depend on theta, so the gradient is the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prge.scorer import LabelScorer
from prge.tasks import Batch


def fo_step(scorer: LabelScorer, batch: Batch, theta: torch.Tensor, lr: float,
            hidden: torch.Tensor | None = None) -> float:
    """theta <- theta - lr * d loss / d theta, in place; returns the loss before the step.
    `hidden` (N, T, hidden): the batch's states entering `scorer.cache_layer`, when cached."""
    dtype = next(scorer.parameters()).dtype
    t = theta.detach().to(dtype).requires_grad_(True)
    if hidden is None:
        logits = scorer(batch.input_ids, batch.last_index, t[None])[0]  # (N, num_labels)
    else:
        logits = scorer.suffix(hidden.to(dtype), batch.last_index, t[None])[0]
    loss = F.cross_entropy(logits, batch.labels)  # in the model's dtype (float32 or float64)
    (grad,) = torch.autograd.grad(loss, t)
    theta.sub_(lr * grad.to(theta.dtype))
    return loss.detach().item()
