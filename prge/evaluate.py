"""Accuracy of an adapter on labelled examples: raw, and calibrated (label prior removed).

The raw zero-shot model is biased toward one label word. Calibrated accuracy divides each label's
probability by its mean probability over the evaluated examples (contextual calibration), so it
measures what the model knows about the task rather than its prior.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from prge.engines.base import Engine
from prge.tasks import Example, PromptEncoder


@dataclass(frozen=True)
class EvalResult:
    acc: float
    acc_calibrated: float
    loss: float
    n: int


EVAL_BATCH = 32  # examples per evaluation forward


def eval_order(examples: Sequence[Example], batch_size: int = EVAL_BATCH) -> list[list[int]]:
    """The evaluation batches, as indices: examples of similar length together (less padding,
    same results)."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].text))
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def label_log_probs(engine: Engine, encoder: PromptEncoder, examples: Sequence[Example],
                    theta: torch.Tensor, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """log softmax over the label words, (N, num_labels), in the order of `examples`."""
    out = torch.empty(len(examples), len(encoder.label_ids))
    for idx in eval_order(examples, batch_size):
        batch = encoder.encode([examples[i] for i in idx])
        logits = engine.label_logits(batch, theta[None])[0]
        out[idx] = F.log_softmax(logits.float(), dim=-1)
    return out


def scores(log_probs: torch.Tensor, labels: torch.Tensor) -> EvalResult:
    raw = (log_probs.argmax(-1) == labels).float().mean().item()
    log_prior = torch.logsumexp(log_probs, dim=0) - torch.log(torch.tensor(len(labels)))
    cal = ((log_probs - log_prior).argmax(-1) == labels).float().mean().item()
    loss = F.nll_loss(log_probs, labels).item()
    return EvalResult(raw, cal, loss, len(labels))


def evaluate(engine: Engine, encoder: PromptEncoder, examples: Sequence[Example],
             theta: torch.Tensor, batch_size: int = EVAL_BATCH) -> EvalResult:
    log_probs = label_log_probs(engine, encoder, examples, theta, batch_size)
    return scores(log_probs, torch.tensor([ex.label for ex in examples]))
