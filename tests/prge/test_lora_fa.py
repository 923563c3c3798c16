import copy

import pytest
import torch

from prge.lora_fa import AdapterError, LoRAFALinear, normalize_targets, select_layers
from tests.conftest import make_scorer, sample_examples


def test_zero_B_reproduces_base_logits_exactly(tiny, encoder):
    model, _ = tiny
    base = copy.deepcopy(model)
    batch = encoder.encode(sample_examples())
    scorer = make_scorer((model, tiny[1]), encoder, rank=4)
    assert isinstance(model.model.layers[0].self_attn.q_proj, LoRAFALinear)
    with torch.no_grad():
        expected = base(input_ids=batch.input_ids).logits
        scorer.layout.set_copies(scorer.layout.zeros(torch.float64)[None])
        got = model(input_ids=batch.input_ids).logits  # Hugging Face forward, adapters active
        scorer.layout.set_copies(None)
    assert torch.equal(got, expected)


def test_layout_covers_every_B_once(tiny, encoder):
    scorer = make_scorer(tiny, encoder, targets=("q", "down", "head"), rank=3)
    slots = scorer.layout.slots
    cfg = tiny[0].config
    assert [s.name for s in slots[:2]] == ["layers.0.self_attn.q_proj", "layers.0.mlp.down_proj"]
    assert slots[-1].name == "head" and slots[-1].out_features == 2
    assert scorer.dim == cfg.num_hidden_layers * (cfg.hidden_size * 3 + cfg.hidden_size * 3) + 6
    assert all(a.offset + a.size == b.offset for a, b in zip(slots, slots[1:], strict=False))


def test_A_is_frozen_and_seeded(tiny, encoder):
    s1 = make_scorer(tiny, encoder, targets=("v",), seed=3)
    A1 = tiny[0].model.layers[1].self_attn.v_proj.A.detach().clone()
    assert not tiny[0].model.layers[1].self_attn.v_proj.A.requires_grad
    model2, tok2 = copy.deepcopy(tiny[0]), tiny[1]
    for layer in model2.model.layers:  # unwrap to inject again with the same seed
        layer.self_attn.v_proj = layer.self_attn.v_proj.base
    make_scorer((model2, tok2), encoder, targets=("v",), seed=3)
    assert torch.equal(A1, model2.model.layers[1].self_attn.v_proj.A)
    assert s1.dim > 0


def test_target_and_layer_specs():
    assert normalize_targets(["down_proj", "q", "head"]) == ("q", "down", "head")
    with pytest.raises(AdapterError, match="unknown adapter target"):
        normalize_targets(["qq"])
    assert select_layers("all", 4) == [0, 1, 2, 3]
    assert select_layers("last-2", 4) == [2, 3]
    assert select_layers("1-2", 4) == [1, 2]
    for bad in ("last-9", "3-1", "x"):
        with pytest.raises(AdapterError):
            select_layers(bad, 4)
