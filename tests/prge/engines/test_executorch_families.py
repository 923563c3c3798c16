"""Every supported model family through ExecuTorch: the prefix program and the packed suffix
program, from the frozen-prefix cache, give the eager reference's logits (which equal Hugging
Face's: tests/prge/test_families.py) on prompts longer than the sliding windows, and the same
P-RGE scalars."""

from __future__ import annotations

import pytest
import torch

from prge.engines.eager import EagerEngine
from prge.engines.executorch import ExecuTorchEngine
from prge.estimator import projected_grads
from prge.models import TINY_FAMILIES, tiny_model
from prge.perturb import derive_seed
from prge.prefix_cache import with_prefix_cache
from prge.scorer import LabelScorer
from prge.tasks import Example, PromptEncoder
from tests.conftest import SAMPLE_TEXTS

ROWS, LENGTH = 4, 32


@pytest.mark.parametrize("family", [f for f in TINY_FAMILIES if f != "llama"])
def test_programs_match_eager_for_each_family(tmp_path, family):
    model, tok = tiny_model(seed=2, family=family)  # 2 layers: one in the prefix, one suffix
    encoder = PromptEncoder(tok, "{text} It was", (" terrible", " great"), max_length=LENGTH)
    scorer = LabelScorer(model, encoder.label_ids, targets=["q", "k", "v", "o", "gate", "up",
                                                            "down"], rank=4, layers="last-1")
    eager = EagerEngine(scorer)
    lowered = ExecuTorchEngine(scorer, tmp_path, batch_rows=ROWS, max_length=LENGTH,
                               log=lambda m: None)
    packed = with_prefix_cache(lowered, budget_bytes=2**30, packed=True)
    batch = encoder.encode([Example(t, i % 2) for i, t in enumerate(SAMPLE_TEXTS)])
    assert int(batch.last_index.max()) > 10  # past every window (5-6 positions)
    thetas = 0.2 * torch.randn(4, eager.dim, generator=torch.Generator().manual_seed(7))
    want = eager.label_logits(batch, thetas)
    got = packed.label_logits(batch, thetas)
    assert (got - want).abs().max().item() <= 1e-4, family
    assert torch.equal(got.argmax(-1), want.argmax(-1))
    theta = 0.1 * torch.randn(eager.dim, generator=torch.Generator().manual_seed(8))
    seeds = [derive_seed(4, "family", i) for i in range(2)]
    g_eager, _ = projected_grads(eager, batch, theta, seeds, eps=1e-2)
    g_packed, _ = projected_grads(packed, batch, theta, seeds, eps=1e-2)
    assert torch.allclose(g_packed, g_eager, rtol=1e-3, atol=1e-4), family
