"""Centralized training's batch order: epochs see every example once, with or without grouping."""

import numpy as np

from simulation.train import batch_order


def test_length_grouping_keeps_every_epochs_examples():
    n, size, steps = 100, 8, 40  # 12 steps per epoch: 3 full epochs and part of a fourth
    lengths = np.random.default_rng(0).integers(5, 60, size=n)
    plain = batch_order(n, size, steps, seed=3)
    grouped = batch_order(n, size, steps, seed=3, lengths=lengths)
    assert len(grouped) == steps and all(len(b) == size for b in grouped)
    for start in range(0, steps, 12):  # each epoch: the same examples, none twice
        a = np.concatenate(plain[start:start + 12])
        b = np.concatenate(grouped[start:start + 12])
        assert sorted(a.tolist()) == sorted(b.tolist()) and len(set(b.tolist())) == len(b)
    pad = lambda order: sum(int(lengths[b].max()) for b in order)  # noqa: E731
    assert pad(grouped) < pad(plain)
