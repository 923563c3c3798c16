"""FLOPs of the scorer's calls, counted on a meta-device twin: equal to PyTorch's count of the
real forward, to a hand count of the decoder's products, and free of the real weights."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from prge.flops import FlopCounter, meta_twin
from prge.models import tiny_model
from prge.packing import pack_rows
from prge.scorer import LabelScorer


@pytest.fixture(scope="module")
def scorer():
    model, _ = tiny_model(0, layers=4)
    return LabelScorer(model, [5, 7], targets=["q", "v", "down"], rank=4, layers="last-2")


def _real(fn, *args) -> int:
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return int(counter.get_total_flops())


def test_the_twin_counts_what_the_real_forward_counts(scorer):
    counter, n, t, copies = FlopCounter(scorer), 3, 10, 8
    ids = torch.randint(0, 50, (n, t))
    thetas = 0.01 * torch.randn(copies, scorer.dim)
    h = scorer.prefix(ids)
    assert counter.prefix(n, t) == _real(scorer.prefix, ids)
    assert counter.suffix(n, t, copies) == _real(scorer.suffix, h, torch.tensor([9, 4, 6]), thetas)
    lengths = [7, 2, 10]  # 19 real tokens packed
    packed, pack = pack_rows([h[i, :k] for i, k in enumerate(lengths)], t)
    assert counter.suffix(n, t, copies, sum(lengths)) == _real(
        scorer.suffix, packed, pack.last_index, thetas, pack)
    assert counter.suffix(n, t, copies, 19) < counter.suffix(n, t, copies)  # padding skipped


def test_the_prefix_count_is_the_decoders_products_by_hand(scorer):
    """The prefix is layers 0-1 of the tiny Llama (hidden 64, MLP 128, 4 query and 2 k/v heads
    of 16), no adapter. Per token and layer: 2 * (q 64x64 + k, v 64x32 + o 64x64 + gate, up,
    down 64x128) FLOPs; attention's two products, 2 * t * 4 heads * 16 each; and the two
    RMSNorms' means, which the scorer writes as a product with a 64x1 row (XNNPACK runs it)."""
    n, t, layers = 5, 12, 2
    linear = 2 * (64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 128)
    attention = 2 * (2 * t * 4 * 16)
    norms = 2 * (2 * 64)
    assert FlopCounter(scorer).prefix(n, t) == layers * n * t * (linear + attention + norms)


def test_the_twin_holds_no_real_weight_and_leaves_the_scorer_alone(scorer):
    before = {k: v.clone() for k, v in scorer.state_dict().items()}
    twin = meta_twin(scorer)
    assert all(p.device.type == "meta" for p in twin.parameters())
    assert all(b.device.type == "meta" for b in twin.buffers())
    assert all(torch.equal(before[k], v) for k, v in scorer.state_dict().items())


def test_packed_counts_depend_on_the_token_total_only_and_bad_totals_are_refused(scorer):
    counter = FlopCounter(scorer)
    h = torch.randn(3, 10, 64)
    counts = []
    for lengths in ([7, 2, 10], [6, 6, 7]):
        packed, pack = pack_rows([h[i, :k] for i, k in enumerate(lengths)], 10)
        counts.append(_real(scorer.suffix, packed, pack.last_index, torch.zeros(2, scorer.dim),
                            pack))
    assert counts[0] == counts[1] == counter.suffix(3, 10, 2, 19)
    with pytest.raises(ValueError, match="cannot fill"):
        counter.suffix(3, 10, 2, 31)
