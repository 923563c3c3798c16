"""Plain PyTorch engine: the reference every other engine is checked against."""

from __future__ import annotations

import torch

from prge.packing import pack_rows
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

    # The two halves, for the frozen-prefix cache (prge/prefix_cache.py).
    def prefix_hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(N, T) -> hidden states entering `scorer.cache_layer`, (N, T, hidden)."""
        with torch.inference_mode():
            return self.scorer.prefix(input_ids)

    def suffix_logits(self, hidden: torch.Tensor, last_index: torch.Tensor,
                      thetas: torch.Tensor) -> torch.Tensor:
        """hidden (N, T, hidden), last_index (N,), thetas (C, D) -> logits (C, N, L)."""
        with torch.inference_mode():
            return self.scorer.suffix(hidden.to(self.dtype), last_index, thetas.to(self.dtype))

    def packed_suffix_logits(self, rows: list[torch.Tensor], tokens: int,
                             thetas: torch.Tensor) -> torch.Tensor:
        """rows: each example's cached hidden states (length_n, hidden), for a batch padded to
        `tokens`; the suffix on them packed (prge/packing.py) -> logits (C, N, L)."""
        hidden, pack = pack_rows(rows, tokens)
        with torch.inference_mode():
            return self.scorer.suffix(hidden.to(self.dtype), pack.last_index,
                                      thetas.to(self.dtype), pack)
