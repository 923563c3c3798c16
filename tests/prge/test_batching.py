"""Length-grouped batches: the same examples in batches of the same size, less padding."""

import numpy as np
import pytest

from prge.batching import group_by_length


def _draw(n_examples=200, steps=8, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.choice(n_examples, size=size, replace=False) for _ in range(steps)]


def test_same_examples_same_sizes_less_padding():
    lengths = np.random.default_rng(1).integers(8, 64, size=200)
    drawn = _draw()
    grouped = group_by_length(drawn, lengths, np.random.default_rng(2))
    assert [len(b) for b in grouped] == [16] * 8
    assert sorted(np.concatenate(grouped).tolist()) == sorted(np.concatenate(drawn).tolist())
    # each batch pays for its longest prompt: grouping can only lower the total
    padded = lambda batches: sum(int(lengths[b].max()) * len(b) for b in batches)  # noqa: E731
    assert padded(grouped) < 0.85 * padded(drawn)
    # blocks of the sorted pool: no batch's range overlaps another's interior
    spans = sorted((lengths[b].min(), lengths[b].max()) for b in grouped)
    assert all(hi <= nxt_lo for (_, hi), (nxt_lo, _) in zip(spans, spans[1:], strict=False))


def test_order_is_seeded_and_not_sorted():
    lengths = np.arange(200)
    drawn = _draw()
    a = group_by_length(drawn, lengths, np.random.default_rng(3))
    b = group_by_length(drawn, lengths, np.random.default_rng(3))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    maxima = [int(lengths[x].max()) for x in a]
    assert maxima != sorted(maxima)  # shuffled: no short-to-long trend across the steps


def test_unequal_sizes_are_refused():
    with pytest.raises(ValueError, match="one size"):
        group_by_length([np.arange(4), np.arange(3)], np.ones(10, dtype=int), np.random.default_rng(0))
    assert group_by_length([], np.ones(1, dtype=int), np.random.default_rng(0)) == []
