from pathlib import Path

import numpy as np
import pytest
import torch

from prge.engines.eager import EagerEngine
from prge.estimator import projected_grads
from prge.prefix_cache import CacheBudgetError, with_prefix_cache
from prge.tasks import Example
from tests.conftest import make_scorer, random_thetas, sample_examples

MORE = ["not good at all", "a small miracle of a film", "two hours i will never get back",
        "warm"]


def _examples():
    return sample_examples() + [Example(t, i % 2) for i, t in enumerate(MORE)]


def test_pruned_last_layer_equals_the_full_layer_at_the_last_token(tiny, encoder):
    scorer = make_scorer(tiny, encoder, layers="last-1")
    batch = encoder.encode(_examples())
    thetas = random_thetas(scorer.dim, copies=3)
    C, N = 3, len(batch)
    h = scorer.prefix(batch.input_ids).repeat(C, 1, 1)
    last = batch.last_index.repeat(C)
    scorer.layout.set_copies(thetas)
    try:
        layer = len(scorer.layers) - 1
        full = scorer._decoder_layer(layer, h)[torch.arange(C * N), last]  # every position
        pruned = scorer._last_layer(layer, h, last)  # the last token only
    finally:
        scorer.layout.set_copies(None)
    assert pruned.shape == full.shape == (C * N, h.shape[-1])
    assert torch.allclose(pruned, full, atol=1e-12, rtol=0)


@pytest.mark.parametrize("targets,layers", [(("q", "k", "v", "o", "gate", "up", "down"), "last-1"),
                                            (("v", "down"), "all"), (("head",), "all")])
def test_suffix_from_the_cache_equals_the_full_forward(tiny, encoder, targets, layers):
    scorer = make_scorer(tiny, encoder, targets=targets, layers=layers)
    eager = EagerEngine(scorer)
    cached = with_prefix_cache(eager, budget_bytes=2**30)
    examples = _examples()
    thetas = random_thetas(scorer.dim, copies=4)
    # fill the cache from batches of another composition (other padding) than the ones scored
    cached.cache.warm([encoder.encode(examples[:3]), encoder.encode(examples[3:])])
    misses = cached.cache.stats.misses
    for part in (examples, examples[::-1], examples[2:5]):
        batch = encoder.encode(part)
        expected = eager.label_logits(batch, thetas)
        got = cached.label_logits(batch, thetas)
        # RMSNorm takes its mean in float32 (as Hugging Face's Llama does), as a product whose
        # summation order the GEMM kernel picks by shape and thread count: a row computed in a
        # batch of another shape may differ by float32 rounding (it did by 6e-7 at 2 threads)
        assert torch.allclose(got, expected, atol=1e-6, rtol=0)
    assert cached.cache.stats.misses == misses == len(examples)  # nothing recomputed
    assert cached.cache.stats.hits == len(examples) * 2 + 3


def test_cached_p_rge_scalars_equal_the_uncached_ones(tiny, encoder):
    scorer = make_scorer(tiny, encoder, layers="last-1")
    eager = EagerEngine(scorer)
    cached = with_prefix_cache(eager, budget_bytes=2**30)
    batch = encoder.encode(_examples())
    theta = torch.zeros(scorer.dim, dtype=torch.float64)
    seeds = [11, 12, 13]
    want, _ = projected_grads(eager, batch, theta, seeds, 1e-3)
    got, _ = projected_grads(cached, batch, theta, seeds, 1e-3)
    assert torch.allclose(got, want, rtol=1e-8, atol=1e-10)
    assert got.abs().max() > 0


def test_the_cache_stays_within_its_budget_and_says_when_a_batch_cannot_fit(tiny, encoder):
    scorer = make_scorer(tiny, encoder, layers="last-1")
    eager = EagerEngine(scorer)
    examples = _examples()
    probe = with_prefix_cache(eager, budget_bytes=2**30)
    probe.cache.warm([encoder.encode(examples)])
    per_batch = probe.cache.stats.bytes  # bytes of all 8 examples
    small = with_prefix_cache(eager, budget_bytes=per_batch // 2 + 1)
    small.cache.warm([encoder.encode(examples[:2]), encoder.encode(examples[2:4]),
                      encoder.encode(examples[4:6])])
    assert small.cache.stats.bytes <= small.cache.budget
    assert small.cache.stats.evictions > 0
    thetas = random_thetas(scorer.dim, copies=2)
    batch = encoder.encode(examples[:2])  # evicted earlier: recomputed, same logits
    assert torch.allclose(small.label_logits(batch, thetas), eager.label_logits(batch, thetas),
                          atol=1e-10, rtol=0)
    with pytest.raises(CacheBudgetError, match="cannot hold one batch"):
        small.label_logits(encoder.encode(examples), thetas)


def test_a_device_store_is_written_once_and_read_back_without_computing(tiny, encoder, tmp_path):
    from prge.prefix_cache import warm_examples

    scorer = make_scorer(tiny, encoder, layers="last-1")
    examples, store = _examples(), tmp_path / "3.prefix.npz"
    first = with_prefix_cache(EagerEngine(scorer), budget_bytes=2**30)
    warm_examples(first, encoder, examples, batch_size=3, store=store)
    assert store.is_file() and first.cache.stats.misses == len(examples)
    other = with_prefix_cache(EagerEngine(scorer), budget_bytes=2**30)  # another process
    warm_examples(other, encoder, examples, store=store)
    assert other.cache.stats.misses == 0 and other.cache.stats.loaded == len(examples)
    assert other.cache.stats.bytes == first.cache.stats.bytes
    batch, thetas = encoder.encode(examples), random_thetas(scorer.dim, copies=2)
    assert torch.equal(other.label_logits(batch, thetas), first.label_logits(batch, thetas))
    assert other.cache.stats.misses == 0


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as stored:
        return {name: stored[name] for name in stored.files}


def _rewrite(change):
    """A damage that rewrites the stored arrays: change(name, array) -> {name: array}."""
    def damage(path: Path) -> None:
        arrays = {}
        for name, array in _arrays(path).items():
            arrays.update(change(name, array))
        np.savez(path, **arrays)
    return damage


def _unknown_zip_method(path: Path) -> None:
    """The first entry's compression method, in the zip's central directory, set to one that
    zipfile does not know (it raises NotImplementedError then)."""
    raw = bytearray(path.read_bytes())
    at = raw.index(b"PK\x01\x02") + 10
    raw[at:at + 2] = (99).to_bytes(2, "little")
    path.write_bytes(bytes(raw))


def _one_entry_renamed(path: Path) -> None:
    arrays = _arrays(path)
    first = next(iter(arrays))
    arrays["not-hex"] = arrays.pop(first)
    np.savez(path, **arrays)


DAMAGES = {
    "garbage bytes": lambda path: path.write_bytes(b"\x00not an npz file" * 7),
    "truncated zip": lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),
    "an unknown zip method": _unknown_zip_method,
    "a bare .npy": lambda path: np.save(open(path, "wb"), np.zeros((3, 4))),  # noqa: SIM115
    "float32 rows": _rewrite(lambda name, a: {name: a.astype(np.float32)}),
    "int64 rows": _rewrite(lambda name, a: {name: a.astype(np.int64)}),
    "flattened rows": _rewrite(lambda name, a: {name: a.reshape(-1)}),
    "wrong hidden size": _rewrite(lambda name, a: {name: a[:, :-1]}),
    "a row missing a token": _rewrite(lambda name, a: {name: a[:-1]}),
    "a key of odd length": _rewrite(lambda name, a: {name[:-2]: a}),
    "one bad key name": _one_entry_renamed,
}


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
def test_a_damaged_device_store_is_recomputed_and_rewritten(tiny, encoder, tmp_path, damage):
    """A stored prefix file was trusted as it was: a damaged one made every visit of the device
    fail (or train on rows of another dtype or shape). Now nothing of it is used: the prefixes
    are computed afresh, equal to a fresh computation's, and the file is written again."""
    from prge.prefix_cache import warm_examples

    scorer = make_scorer(tiny, encoder, layers="last-1")
    examples, store = _examples(), tmp_path / "3.prefix.npz"
    fresh = with_prefix_cache(EagerEngine(scorer), budget_bytes=2**30)
    warm_examples(fresh, encoder, examples, batch_size=3, store=store)
    damage(store)

    device = with_prefix_cache(EagerEngine(scorer), budget_bytes=2**30)
    warm_examples(device, encoder, examples, batch_size=3, store=store)
    assert device.cache.stats.loaded == 0 and device.cache.stats.misses == len(examples)
    batch, thetas = encoder.encode(examples), random_thetas(scorer.dim, copies=2)
    assert torch.equal(device.cache.hidden(batch), fresh.cache.hidden(batch))
    assert torch.equal(device.label_logits(batch, thetas), fresh.label_logits(batch, thetas))

    later = with_prefix_cache(EagerEngine(scorer), budget_bytes=2**30)  # the file was rewritten
    warm_examples(later, encoder, examples, store=store)
    assert later.cache.stats.loaded == len(examples) and later.cache.stats.misses == 0
