"""Centralized training: its batch order (epochs see every example once, with or without
grouping) and its claim on the run directory."""

import threading

import numpy as np

from simulation.rundir import read_jsonl
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


def test_two_trains_given_one_empty_out_dir_do_not_both_write_into_it(tmp_path, monkeypatch):
    """Both commands can find DIR empty before either writes; only one may then go on, and the
    other stops with the one-line error, before writing anything."""
    from clients.runconfig import ConfigError, load_config
    from simulation import train as train_module
    from tests.simulation.test_cli import TINY

    cfg = load_config(None, TINY[1::2])
    both_checked = threading.Barrier(2, timeout=120)
    real_write_json = train_module.write_json

    def write_json_after_both_checked(path, data):
        if path.name == "config.json":  # the first thing a train writes into its directory
            try:
                both_checked.wait()
            except threading.BrokenBarrierError:  # the other command has stopped
                pass
        real_write_json(path, data)

    monkeypatch.setattr(train_module, "write_json", write_json_after_both_checked)
    done, refused = [], []

    def one_command():
        try:
            done.append(train_module.train(cfg, out=tmp_path / "run", progress=False))
        except ConfigError as err:
            refused.append(str(err))
            both_checked.abort()

    commands = [threading.Thread(target=one_command) for _ in range(2)]
    for c in commands:
        c.start()
    for c in commands:
        c.join()
    assert len(done) == 1 and len(refused) == 1, (done, refused)
    assert "is in use by another fedprge command" in refused[0]
    assert len(read_jsonl(tmp_path / "run" / "metrics.jsonl")) == cfg.steps + 1  # one run's lines
