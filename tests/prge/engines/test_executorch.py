"""The ExecuTorch engine against the eager reference, on a tiny float32 Llama."""

import pytest
import torch

from prge.engines import executorch as et
from prge.engines.eager import EagerEngine
from prge.engines.executorch import ExecuTorchEngine
from prge.estimator import projected_grads
from prge.models import tiny_model
from prge.perturb import derive_seed
from prge.scorer import LabelScorer
from prge.tasks import Example, PromptEncoder
from tests.conftest import SAMPLE_TEXTS

ROWS, LENGTH = 4, 32


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    model, tok = tiny_model(seed=2)
    encoder = PromptEncoder(tok, "{text} It was", (" terrible", " great"), max_length=LENGTH)
    scorer = LabelScorer(model, encoder.label_ids, targets=["q", "k", "v", "o", "gate", "up",
                                                            "down", "head"], rank=4)
    cache = tmp_path_factory.mktemp("programs")
    lowered = ExecuTorchEngine(scorer, cache, batch_rows=ROWS, max_length=LENGTH, log=lambda m: None)
    return encoder, EagerEngine(scorer), lowered, cache


def _examples(n):
    return [Example(SAMPLE_TEXTS[i % len(SAMPLE_TEXTS)] + " x" * i, i % 2) for i in range(n)]


def test_logits_match_eager_for_many_copies_and_chunked_batches(engines):
    encoder, eager, lowered, _ = engines
    batch = encoder.encode(_examples(6))  # 6 rows: two chunks of the program's 4
    thetas = 0.2 * torch.randn(4, eager.dim, generator=torch.Generator().manual_seed(0))
    want = eager.label_logits(batch, thetas)
    got = lowered.label_logits(batch, thetas)
    assert got.shape == want.shape == (4, 6, 2)
    assert (got - want).abs().max().item() <= 1e-4
    assert torch.equal(got.argmax(-1), want.argmax(-1))
    assert lowered.partitions >= 1


def test_projected_gradients_agree_with_eager(engines):
    encoder, eager, lowered, _ = engines
    batch = encoder.encode(_examples(4))
    theta = 0.1 * torch.randn(eager.dim, generator=torch.Generator().manual_seed(1))
    seeds = [derive_seed(3, "et", i) for i in range(2)]
    g_eager, _ = projected_grads(eager, batch, theta, seeds, eps=1e-2)
    g_et, _ = projected_grads(lowered, batch, theta, seeds, eps=1e-2)
    assert torch.allclose(g_et, g_eager, rtol=1e-3, atol=1e-4), (g_et, g_eager)


def test_programs_are_cached_on_disk_by_key(engines):
    encoder, eager, lowered, cache = engines
    lowered.label_logits(encoder.encode(_examples(2)), torch.zeros(4, eager.dim))
    files = sorted(cache.glob("*.pte"))
    assert files
    et._LOADED.clear()  # a new process: nothing loaded, the files are there
    again = ExecuTorchEngine(lowered.scorer, cache, batch_rows=ROWS, max_length=LENGTH,
                             log=lambda m: None)
    again.label_logits(encoder.encode(_examples(2)), torch.zeros(4, eager.dim))
    assert again.lowering_s == {4: 0.0}  # loaded, not lowered again
    assert sorted(cache.glob("*.pte")) == files
    assert again._key(4) != again._key(2)  # the number of copies changes the program
