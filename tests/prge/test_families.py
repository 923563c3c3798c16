"""Every supported model family through the one decoder loop: tiny random models built with
transformers' own config classes (prge/models.py `tiny_config`), float64, norm weights randomized
so that each norm form counts. Our logits equal the Hugging Face forward's to float32 rounding
(RMSNorm accumulates in float32 in both, in another order), on prompts longer than the sliding
windows; the prefix cache, the packed suffix and the batched copies change nothing; P-RGE's
scalars are the same in parallel and sequential mode."""

from __future__ import annotations

import copy

import pytest
import torch

from prge.engines.eager import EagerEngine
from prge.estimator import projected_grads
from prge.families import FamilyError, family_of
from prge.models import TINY_FAMILIES, tiny_model
from prge.perturb import derive_seed
from prge.prefix_cache import with_prefix_cache
from prge.scorer import LabelScorer
from prge.tasks import Example, PromptEncoder
from tests.conftest import LABEL_WORDS, TEMPLATE, random_thetas, sample_examples
from tests.prge.test_scorer import _hf_label_logits

FAMILIES = [f for f in TINY_FAMILIES if f != "llama"]  # llama: tests/prge/test_scorer.py
LONGER = [Example("an hour too long, and every minute of it is a chore to sit through", 0),
          Example("yes", 1)]


def _model(family: str):
    model, tokenizer = tiny_model(seed=3, layers=3, family=family)
    model = model.double()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():  # HF starts norms at 1 (or 0 with the 1 + w form): make them matter
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model, tokenizer


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    model, tokenizer = _model(request.param)
    encoder = PromptEncoder(tokenizer, TEMPLATE, LABEL_WORDS, max_length=48)
    return request.param, model, encoder


def _scorer(model, encoder, **kw) -> LabelScorer:
    """A scorer on a copy of the model (the scorer wraps the model's linears in place)."""
    kw = {"targets": ("q", "k", "v", "o", "gate", "up", "down"), "rank": 4, "layers": "all", **kw}
    return LabelScorer(copy.deepcopy(model), encoder.label_ids, adapter_seed=0, **kw)


def test_logits_equal_the_hugging_face_forward(family):
    name, model, encoder = family
    batch = encoder.encode(sample_examples() + LONGER)
    assert int(batch.last_index.max()) > 10  # longer than every window (5-6 positions)
    expected = _hf_label_logits(model, batch, encoder.label_ids)
    got = _scorer(model, encoder)(batch.input_ids, batch.last_index)[0]
    assert torch.allclose(got, expected, atol=1e-6, rtol=0), name
    assert torch.equal(got.argmax(-1), expected.argmax(-1))


def test_cache_packing_and_copies_change_nothing(family):
    """The frozen prefix from the cache, the packed suffix, and C copies in one forward give the
    reference forward's logits, copy by copy."""
    name, model, encoder = family
    batch = encoder.encode(sample_examples() + LONGER)
    scorer = _scorer(model, encoder, layers="last-2")
    assert scorer.first_adapted == 1
    thetas = random_thetas(scorer.dim, copies=3)
    reference = torch.cat([scorer(batch.input_ids, batch.last_index, t[None]) for t in thetas])
    for packed in (False, True):
        engine = with_prefix_cache(EagerEngine(scorer), budget_bytes=2**26,
                                   pad_id=encoder.pad_id, packed=packed)
        got = engine.label_logits(batch, thetas)
        # float32 RMSNorm sums over other row groupings: float32 rounding, as for Llama
        # (tests/prge/test_prefix_cache.py)
        assert torch.allclose(got, reference, atol=1e-6, rtol=0), (name, packed)


def test_prge_scalars_are_the_same_in_parallel_and_sequential_mode(family):
    name, model, encoder = family
    batch = encoder.encode(sample_examples() + LONGER)
    engine = EagerEngine(_scorer(model, encoder))
    theta = random_thetas(engine.dim, 1, scale=0.1)[0]
    seeds = [derive_seed(0, "family", i) for i in range(4)]
    parallel, _ = projected_grads(engine, batch, theta, seeds, 1e-3, "parallel")
    sequential, _ = projected_grads(engine, batch, theta, seeds, 1e-3, "sequential")
    rel = ((parallel - sequential).abs() / sequential.abs().clamp_min(1e-12)).max().item()
    assert rel <= 1e-5, (name, rel)  # as tests/prge/test_estimator.py asks of Llama
    assert (parallel.abs() > 0).all()


def test_an_unsupported_family_is_one_line_naming_the_supported_ones():
    from transformers import GPT2Config

    with pytest.raises(FamilyError, match=r"model type 'gpt2' is not supported yet "
                                          r"\(supported: llama, mistral, qwen2, qwen3, gemma3_text, phi3\)"):
        family_of(GPT2Config())
