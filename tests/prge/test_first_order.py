"""First-order SGD on B: the gradient is the true one, and steps lower the loss."""

import torch
import torch.nn.functional as F

from prge.first_order import fo_step
from tests.conftest import make_scorer, random_thetas, sample_examples


def _loss(scorer, batch, theta):
    with torch.no_grad():
        logits = scorer(batch.input_ids, batch.last_index, theta[None])[0]
    return F.cross_entropy(logits, batch.labels).item()


def test_fo_step_moves_theta_along_the_true_gradient(tiny, encoder):
    scorer = make_scorer(tiny, encoder, targets=("v", "head"), rank=2)
    batch = encoder.encode(sample_examples())
    theta = random_thetas(scorer.dim, 1, scale=0.1)[0]
    before = theta.clone()
    loss = fo_step(scorer, batch, theta, lr=1.0)
    assert abs(loss - _loss(scorer, batch, before)) < 1e-12
    grad = before - theta  # lr = 1
    # central finite differences along coordinates of each adapted module; h = 1e-3 because
    # RMSNorm computes in float32 even in a float64 model (rounding / h must stay small)
    for i in (0, scorer.dim // 2, scorer.dim - 1):
        e = torch.zeros_like(before)
        e[i] = 1e-3
        fd = (_loss(scorer, batch, before + e) - _loss(scorer, batch, before - e)) / 2e-3
        assert abs(fd - grad[i].item()) < 1e-3, (i, fd, grad[i].item())


def test_fo_steps_lower_the_loss(tiny, encoder):
    scorer = make_scorer(tiny, encoder, targets=("head",), rank=4)
    batch = encoder.encode(sample_examples())
    theta = torch.zeros(scorer.dim, dtype=torch.float64)
    start = _loss(scorer, batch, theta)
    for _ in range(20):
        fo_step(scorer, batch, theta, lr=0.5)
    assert _loss(scorer, batch, theta) < start - 0.1


def test_fo_step_from_cached_prefix_equals_the_full_backprop(tiny, encoder):
    """A suffix adapter: backprop from the cached hidden states gives the same step."""
    scorer = make_scorer(tiny, encoder, targets=("q", "v", "down"), rank=2, layers="last-1")
    assert scorer.cache_layer > 0
    batch = encoder.encode(sample_examples())
    theta = random_thetas(scorer.dim, 1, scale=0.1)[0]
    full, cached = theta.clone(), theta.clone()
    loss_full = fo_step(scorer, batch, full, lr=0.5)
    with torch.no_grad():
        hidden = scorer.prefix(batch.input_ids)
    loss_cached = fo_step(scorer, batch, cached, lr=0.5, hidden=hidden)
    assert abs(loss_full - loss_cached) < 1e-10
    assert torch.allclose(full, cached, atol=1e-10) and not torch.equal(full, theta)
