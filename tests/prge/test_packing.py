import pytest
import torch

from prge.engines.eager import EagerEngine
from prge.estimator import projected_grads
from prge.packing import pack_rows, to_rows, to_slots
from prge.perturb import derive_seed
from prge.prefix_cache import with_prefix_cache
from tests.conftest import make_scorer, random_thetas
from tests.prge.test_prefix_cache import _examples


def test_slots_and_rows_round_trip_the_real_tokens():
    rows = [torch.full((n, 2), float(i + 1)) for i, n in enumerate([3, 1, 4])]
    hidden, pack = pack_rows(rows, tokens=5, n_examples=4)
    assert hidden.shape == (8, 2)
    assert pack.last_rows.tolist() == [2, 3, 7, 0] and pack.last_index.tolist() == [2, 0, 3, 0]
    slots = to_slots(hidden.unsqueeze(0), pack)  # (4, 5, 2)
    for n, r in enumerate(rows):
        assert torch.equal(slots[n, : r.shape[0]], r)
    assert torch.equal(to_rows(slots, pack)[0], hidden)


def test_bad_lengths_are_refused():
    with pytest.raises(ValueError, match="within 1..3"):
        pack_rows([torch.zeros(4, 2)], tokens=3)
    with pytest.raises(ValueError, match="do not fit"):
        pack_rows([torch.zeros(1, 2)] * 3, tokens=3, n_examples=2)


@pytest.mark.parametrize("targets,layers", [(("q", "k", "v", "o", "gate", "up", "down"), "last-2"),
                                            (("v", "down"), "last-1"), (("head",), "all")])
def test_packed_suffix_equals_the_padded_one(tiny, encoder, targets, layers):
    scorer = make_scorer(tiny, encoder, targets=targets, layers=layers)
    eager = EagerEngine(scorer)
    padded = with_prefix_cache(eager, budget_bytes=2**30)
    packed = with_prefix_cache(eager, budget_bytes=2**30, packed=True)
    packed.cache = padded.cache
    thetas = random_thetas(scorer.dim, copies=4)
    for part in (_examples(), _examples()[2:5], _examples()[:1]):
        batch = encoder.encode(part)
        expected = eager.label_logits(batch, thetas)  # the full forward, padded
        # RMSNorm averages in float32 (as Hugging Face's does), whose sums may round
        # differently for another row count: equal to float32 precision, not to the bit
        assert torch.allclose(packed.label_logits(batch, thetas), expected, atol=1e-5, rtol=0)
    batch = encoder.encode(_examples())
    seeds = [derive_seed(0, "pack", i) for i in range(3)]
    g_padded, _ = projected_grads(padded, batch, torch.zeros(scorer.dim), seeds, 1e-2)
    g_packed, _ = projected_grads(packed, batch, torch.zeros(scorer.dim), seeds, 1e-2)
    assert torch.allclose(g_packed, g_padded, rtol=1e-3, atol=1e-4)
