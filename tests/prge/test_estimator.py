import math

import pytest
import torch
import torch.nn.functional as F

from prge.engines.eager import EagerEngine
from prge.estimator import apply_update, perturbed_copies, prge_step, projected_grads, scheduled_lr
from prge.evaluate import evaluate
from prge.perturb import derive_seed, directions
from prge.tasks import Example, PromptEncoder
from tests.conftest import make_scorer, random_thetas, sample_examples


def test_copies_are_interleaved_plus_minus_pairs():
    theta, zs = torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64)[:2]
    copies = perturbed_copies(theta, zs, 0.5)
    assert torch.equal(copies, torch.tensor([[0.5, 0, 0], [-0.5, 0, 0], [0, 0.5, 0], [0, -0.5, 0]],
                                            dtype=torch.float64))


def test_parallel_and_sequential_give_the_same_scalars(tiny, encoder):
    engine = EagerEngine(make_scorer(tiny, encoder))
    batch = encoder.encode(sample_examples())
    theta = random_thetas(engine.dim, 1, scale=0.1)[0]
    seeds = [derive_seed(0, "t", i) for i in range(4)]
    par, _ = projected_grads(engine, batch, theta, seeds, eps=1e-3, mode="parallel")
    seq, _ = projected_grads(engine, batch, theta, seeds, eps=1e-3, mode="sequential")
    rel = ((par - seq).abs() / seq.abs().clamp_min(1e-12)).max().item()
    assert rel <= 1e-5, rel
    assert (par.abs() > 0).all()


def test_parallel_and_sequential_agree_in_float32_too():
    from prge.models import tiny_model

    model, tok = tiny_model(seed=1)
    encoder = PromptEncoder(tok, "{text} It was", (" terrible", " great"), max_length=48)
    engine = EagerEngine(make_scorer((model, tok), encoder))
    batch = encoder.encode(sample_examples())
    seeds = [derive_seed(1, "t", i) for i in range(3)]
    theta = torch.zeros(engine.dim)
    par, _ = projected_grads(engine, batch, theta, seeds, eps=1e-2, mode="parallel")
    seq, _ = projected_grads(engine, batch, theta, seeds, eps=1e-2, mode="sequential")
    assert torch.allclose(par, seq, rtol=1e-3, atol=1e-4)


# With d trainable dimensions and q Gaussian directions, the estimate's cosine with the true
# gradient is about 1 / sqrt(1 + (d + 1) / q). Here d = 64 (rank-1 B of one o_proj, hidden 64);
# q = 1024 gives about 0.97 in expectation, so the 0.9 bar has a wide margin.
ESTIMATE_Q = 1024


def test_estimate_points_along_the_autograd_gradient(tiny, encoder):
    scorer = make_scorer(tiny, encoder, targets=("o",), rank=1, layers="last-1")
    assert scorer.dim == 64
    batch = encoder.encode(sample_examples())
    theta = random_thetas(scorer.dim, 1, scale=0.5)[0]
    # exact gradient of the mean loss w.r.t. theta, by backprop through the frozen model
    t = theta.clone().requires_grad_(True)
    logits = scorer(batch.input_ids, batch.last_index, t[None])[0]
    F.cross_entropy(logits, batch.labels).backward()
    true_grad = t.grad
    seeds = [derive_seed(0, "cos", i) for i in range(ESTIMATE_Q)]
    grads, _ = projected_grads(EagerEngine(scorer), batch, theta, seeds, eps=1e-4)
    estimate = (grads[:, None] * directions(seeds, scorer.dim, theta.dtype)).mean(0)
    cos = F.cosine_similarity(estimate, true_grad, dim=0).item()
    assert cos > 0.9, cos


def test_update_replays_from_seeds_and_scalars_alone(tiny, encoder):
    engine = EagerEngine(make_scorer(tiny, encoder))
    batch = encoder.encode(sample_examples())
    theta = torch.zeros(engine.dim, dtype=torch.float64)
    log = []
    for step in range(3):
        seeds = [derive_seed(0, "r", step, i) for i in range(2)]
        result = prge_step(engine, batch, theta, seeds, eps=1e-3, lr=0.1)
        log.append((result.seeds, result.grads))
    replayed = torch.zeros(engine.dim, dtype=torch.float64)
    for seeds, grads in log:
        apply_update(replayed, seeds, grads, lr=0.1)
    assert torch.equal(replayed, theta)
    assert theta.norm() > 0


def _synthetic(n: int, seed: int) -> list[Example]:
    """Separable toy sentiment: the text repeats a positive or a negative word."""
    g = torch.Generator().manual_seed(seed)
    pos, neg = ["good", "fun", "great"], ["bad", "dull", "awful"]
    out = []
    for _ in range(n):
        label = int(torch.randint(2, (1,), generator=g))
        words = pos if label else neg
        k = int(torch.randint(1, 4, (1,), generator=g))
        out.append(Example(" ".join(words[int(torch.randint(3, (1,), generator=g))]
                                    for _ in range(k)), label))
    return out


def test_prge_learns_a_separable_toy_task(tiny, encoder):
    engine = EagerEngine(make_scorer(tiny, encoder, targets=("v", "o", "head"), rank=4))
    train, test = _synthetic(256, 0), _synthetic(128, 1)
    theta = torch.zeros(engine.dim, dtype=torch.float64)
    before = evaluate(engine, encoder, test, theta)
    for step in range(150):
        batch = encoder.encode(train[(step * 16) % 256:(step * 16) % 256 + 16])
        seeds = [derive_seed(0, "toy", step, i) for i in range(8)]
        prge_step(engine, batch, theta, seeds, eps=1e-3, lr=0.5)
    after = evaluate(engine, encoder, test, theta)
    assert after.loss < before.loss - 0.2, (before, after)
    assert after.acc >= before.acc + 0.25 and after.acc >= 0.9, (before, after)


def test_lr_schedules():
    assert scheduled_lr(1.0, 5, 10, "constant") == 1.0
    assert scheduled_lr(1.0, 5, 10, "linear") == pytest.approx(0.5)
    assert scheduled_lr(1.0, 0, 10, "cosine") == pytest.approx(1.0)
    assert scheduled_lr(1.0, 10, 10, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert math.isclose(scheduled_lr(2.0, 5, 10, "cosine"), 1.0)


def test_bad_mode_and_mismatched_update_are_rejected():
    with pytest.raises(ValueError, match="mode"):
        projected_grads(None, None, torch.zeros(2), [1], 0.1, mode="diagonal")
    with pytest.raises(ValueError, match="seeds"):
        apply_update(torch.zeros(2), [1, 2], [0.5], lr=0.1)
