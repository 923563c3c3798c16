"""Batches of similar length: less padding per step, the same examples.

A batch is right-padded to its longest prompt (rounded up to a token bucket), so a batch that
mixes a 12-token review with a 60-token one pays for 64 tokens on every row. Regrouping the
examples drawn for several steps by length keeps exactly those examples (the same multiset, the
same batch size) and only changes which of those steps sees which of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def group_by_length(batches: Sequence[np.ndarray], lengths: np.ndarray,
                    rng: np.random.Generator) -> list[np.ndarray]:
    """batches: equal-size arrays of example indices, one per step; lengths[i]: tokens of
    example i. Returns as many batches of that size over the same indices, cut in order from
    the pool sorted by length; the batches' order is shuffled with `rng`, so that the steps do
    not go from short to long prompts (a trend that a learning-rate schedule would meet)."""
    if not batches:
        return []
    size = len(batches[0])
    if any(len(b) != size for b in batches):
        raise ValueError("group_by_length needs batches of one size")
    pool = np.concatenate([np.asarray(b, dtype=np.int64) for b in batches])
    pool = pool[np.argsort(lengths[pool], kind="stable")]  # ties keep their drawn order
    grouped = pool.reshape(len(batches), size)  # (steps, batch), row k = k-th shortest block
    return [grouped[k] for k in rng.permutation(len(batches))]
