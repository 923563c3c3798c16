"""Forward engines. Every engine answers one question: the label-word logits of a batch under a
stack of adapter copies, `label_logits(batch, thetas (C, D)) -> (C, N, num_labels)`."""

from prge.engines.base import Engine, losses

__all__ = ["Engine", "losses"]
