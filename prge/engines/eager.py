"""Plain PyTorch engine: the reference every other engine is checked against."""

from __future__ import annotations

import torch

from prge.scorer import LabelScorer
from prge.tasks import Batch


class EagerEngine:
    def __init__(self, scorer: LabelScorer, threads: int = 0):
        if threads > 0:
            torch.set_num_threads(threads)  # clients sharing cores must not oversubscribe them
        self.scorer = scorer
        self.dim = scorer.dim
        self.dtype = next(scorer.parameters()).dtype

    def label_logits(self, batch: Batch, thetas: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.scorer(batch.input_ids, batch.last_index, thetas.to(self.dtype))
