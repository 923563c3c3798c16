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


@pytest.mark.parametrize("n,t,copies,rows", [(1, 1, 2, 1), (1, 9, 8, 5), (4, 1, 2, 4),
                                             (5, 12, 8, 37), (3, 16, 1, 3), (2, 7, 4, None),
                                             (6, 13, 3, None)])
def test_scaled_counts_equal_direct_counts(scorer, n, t, copies, rows):
    """The counter scales per-example and per-row terms; a direct count of the shape agrees."""
    counter = FlopCounter(scorer)
    counter.suffix(2, t, copies, 2 if rows is not None and t > 1 else None)  # memoise first
    assert counter.suffix(n, t, copies, rows) == counter._suffix(n, t, copies, rows)
    assert counter.prefix(n, t) == counter._prefix(n, t)


def _first_order_real(scorer, n, t, cached):
    """(FLOPs, bytes of the distinct tensors autograd saved) of a real first-order step."""
    ids = torch.randint(0, 50, (n, t))
    last = torch.full((n,), t - 1)
    theta = torch.zeros(scorer.dim, requires_grad=True)
    saved = {}

    def keep(x):
        saved[id(x)] = x
        return x

    h = scorer.prefix(ids).detach()
    with FlopCounterMode(display=False) as real:
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda x: x):
            logits = (scorer.suffix(h, last, theta[None]) if cached
                      else scorer(ids, last, theta[None]))[0]
            loss = torch.nn.functional.cross_entropy(logits, torch.zeros(n, dtype=torch.long))
        torch.autograd.grad(loss, theta)
    return int(real.get_total_flops()), sum(x.numel() * x.element_size() for x in saved.values())


@pytest.mark.parametrize("cached", [True, False])
def test_a_first_order_step_counts_its_backward_and_its_activations(scorer, cached):
    n, t = 3, 10
    counter = FlopCounter(scorer)
    flops, saved = _first_order_real(scorer, n, t, cached)
    assert counter.first_order(n, t, cached) == flops
    # the backward adds the activations' gradients (never the frozen weights'), down to the
    # first adapted layer only
    forward = counter.suffix(n, t, 1) if cached else counter.forward(n, t, 1)
    assert forward < counter.first_order(n, t, cached) < 3 * forward
    # activations grow with the examples; the saved frozen weights do not and are left out
    _, saved_one = _first_order_real(scorer, 1, t, cached)
    per_example = counter.first_order_saved_bytes(1, t, cached)
    assert saved - saved_one == 2 * per_example > 0
    assert counter.first_order_saved_bytes(n, t, cached) == n * per_example
