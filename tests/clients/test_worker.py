"""The device's local batches: batch-order=length regroups, never changes, what a round draws."""

import numpy as np

from clients.runconfig import load_config
from clients.worker import ClientWorker


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


def test_the_reply_hash_pins_the_base_model_and_A():
    """A device that rebuilt the right theta on another base model or another A fails the
    server's hash check (it would send gradients for another model)."""
    import copy

    import torch

    from clients.protocol import TrainRes, encode_train_res
    from prge.perturb import derive_seed
    from prge.scorer import model_fingerprint
    from prge.update_log import LogEntry, replay, state_hash
    from simulation.validate import validate_reply

    sets = ["model=tiny", "engine=eager", "num-clients=2", "clients-per-round=2", "partition=iid",
            "batch-size=4"]
    server = ClientWorker(load_config(None, sets))  # the same build the server evaluates with
    other = ClientWorker(load_config(None, [*sets, "seed=1"]))  # other base weights and A
    log = [LogEntry(derive_seed(0, "log", i), 0.5, 0.1, 4) for i in range(3)]
    theta = replay(server.setup.scorer.layout.zeros(), log)
    expected = state_hash(theta, model_fingerprint(server.setup.scorer))
    seeds = [derive_seed(0, "round", 1, j) for j in range(8)]

    def reply_hash(worker):
        return worker.train(0, replay(worker.setup.scorer.layout.zeros(), log), 1, seeds, 1e-2,
                            0.1).theta_hash

    assert reply_hash(ClientWorker(load_config(None, sets))) == expected  # a fresh process agrees
    assert reply_hash(other) != expected
    reply = encode_train_res(TrainRes(1, [0.0] * 8, 3, 0.5, reply_hash(other)), 32)
    ok, reason = validate_reply(reply, server_round=1, expected_hash=expected, dense=False, size=8,
                                max_abs=1e6)
    assert ok is None and reason == "hash-mismatch"
    another_a = copy.deepcopy(server.setup.scorer)  # only one frozen A differs, by one value
    with torch.no_grad():
        frozen_a = next(k for k in another_a.state_dict() if k.endswith("q_proj.A"))
        another_a.state_dict()[frozen_a].view(-1)[0] += 1.0
    another_a._fingerprint = None
    assert state_hash(theta, model_fingerprint(another_a)) != expected
    assert state_hash(theta, model_fingerprint(server.setup.scorer)) == expected
