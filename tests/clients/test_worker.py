"""The device's local batches: batch-order=length regroups, never changes, what a round draws."""

import numpy as np

from clients.worker import ClientWorker
from simulation.config import load_config


def _worker(order):
    cfg = load_config(None, ["model=tiny", "engine=eager", "targets=head", "num-clients=2",
                             "clients-per-round=2", "batch-size=4", f"batch-order={order}",
                             "partition=iid"])
    return ClientWorker(cfg)


def test_length_order_keeps_each_rounds_examples_and_pads_less():
    random, length = _worker("random"), _worker("length")
    data = random.data(0)
    assert len(data.train) > 8
    texts = lambda batches: sorted(  # noqa: E731
        tuple(row.tolist()) for b in batches for row, n in zip(b.input_ids, b.last_index, strict=True)
        for row in [row[: int(n) + 1]])
    padded = lambda batches: sum(b.input_ids.numel() for b in batches)  # noqa: E731
    for server_round in range(1, 6):
        a = random._batches(data, 8, server_round, 0)
        b = length._batches(length.data(0), 8, server_round, 0)
        assert texts(a) == texts(b)  # the same examples (with their repeats) in the round
        assert padded(b) <= padded(a)
        # and it is seeded: the same round draws the same batches again
        again = length._batches(length.data(0), 8, server_round, 0)
        assert all(np.array_equal(x.input_ids, y.input_ids) for x, y in zip(b, again, strict=True))
