"""Shared fixtures: tiny random Llama models (seeded), built in-process; no hub, no network."""

from __future__ import annotations

import pytest
import torch

from prge.models import tiny_model
from prge.scorer import LabelScorer
from prge.tasks import Example, PromptEncoder

LABEL_WORDS = (" terrible", " great")
TEMPLATE = "{text} It was"


@pytest.fixture
def tiny():
    """(model, tokenizer) in float64, so algorithm checks are not blurred by float32 rounding."""
    model, tokenizer = tiny_model(seed=0)
    return model.double(), tokenizer


@pytest.fixture
def encoder(tiny):
    return PromptEncoder(tiny[1], TEMPLATE, LABEL_WORDS, max_length=48)


def make_scorer(tiny, encoder, targets=("q", "k", "v", "o", "gate", "up", "down"), rank=4,
                layers="all", seed=0) -> LabelScorer:
    model, _ = tiny
    return LabelScorer(model, encoder.label_ids, targets=targets, rank=rank, layers=layers,
                       adapter_seed=seed)


SAMPLE_TEXTS = [
    "a gripping, funny and warm film",
    "dull",
    "the plot collapses under its own weight and the acting is wooden",
    "an instant classic",
]


def sample_examples() -> list[Example]:
    return [Example(t, i % 2) for i, t in enumerate(SAMPLE_TEXTS)]


def random_thetas(dim: int, copies: int, scale: float = 0.3, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(copies, dim, generator=g, dtype=torch.float64)
