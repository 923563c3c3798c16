import torch

from prge.tasks import Example
from tests.conftest import make_scorer, random_thetas, sample_examples


def _hf_label_logits(model, batch, label_ids):
    """Label logits from the Hugging Face forward with an attention mask (the reference)."""
    T = batch.input_ids.shape[1]
    mask = (torch.arange(T)[None] <= batch.last_index[:, None]).long()
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=mask).logits
    return logits[torch.arange(len(batch)), batch.last_index][:, label_ids]


def test_scorer_matches_hugging_face_forward_with_padding(tiny, encoder):
    model, _ = tiny
    batch = encoder.encode(sample_examples())  # lengths differ: right padding is exercised
    assert len(set(batch.last_index.tolist())) > 1
    expected = _hf_label_logits(model, batch, encoder.label_ids)
    scorer = make_scorer(tiny, encoder)
    got = scorer(batch.input_ids, batch.last_index)[0]
    # RMSNorm accumulates its variance in float32 (as Hugging Face does, even for float64 models)
    # but as a linear, in another summation order: agreement to float32 rounding.
    assert torch.allclose(got, expected, atol=1e-6, rtol=0)
    assert torch.equal(got.argmax(-1), expected.argmax(-1))


def test_batched_copies_equal_one_copy_at_a_time(tiny, encoder):
    batch = encoder.encode(sample_examples())
    for targets, layers in [(("q", "v", "down"), "all"), (("o", "up"), "last-1"), (("head",), "all")]:
        model = tiny[0]
        scorer = make_scorer((model, tiny[1]), encoder, targets=targets, layers=layers)
        thetas = random_thetas(scorer.dim, copies=5)
        together = scorer(batch.input_ids, batch.last_index, thetas)  # (5, N, 2)
        alone = torch.cat([scorer(batch.input_ids, batch.last_index, t[None]) for t in thetas])
        assert together.shape == (5, len(batch), 2)
        assert torch.allclose(together, alone, atol=1e-12, rtol=0)
        assert not torch.allclose(together[0], together[1])  # copies really differ
        # undo the injection so the next spec wraps the plain linears
        for layer in model.model.layers:
            for parent in (layer.self_attn, layer.mlp):
                for name, child in list(parent.named_children()):
                    if hasattr(child, "base"):
                        setattr(parent, name, child.base)


def test_shared_prefix_only_runs_adapted_layers_per_copy(tiny, encoder):
    scorer = make_scorer(tiny, encoder, targets=("down",), layers="last-1")
    assert scorer.first_adapted == 1
    batch = encoder.encode([Example("fine", 1)])
    out = scorer(batch.input_ids, batch.last_index, random_thetas(scorer.dim, 3))
    assert out.shape == (3, 1, 2)
