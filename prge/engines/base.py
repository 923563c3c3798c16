"""The interface shared by the eager (reference) and ExecuTorch engines."""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from prge.tasks import Batch


class Engine(Protocol):
    dim: int  # length of the flat adapter vector theta

    def label_logits(self, batch: Batch, thetas: torch.Tensor) -> torch.Tensor:
        """thetas (C, dim) -> label-word logits (C, N, num_labels), without gradients."""
        ...


def losses(engine: Engine, batch: Batch, thetas: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy over the label words for every copy: (C, N)."""
    logits = engine.label_logits(batch, thetas)
    C, N, L = logits.shape
    labels = batch.labels.repeat(C)
    return F.cross_entropy(logits.reshape(C * N, L).float(), labels, reduction="none").view(C, N)
