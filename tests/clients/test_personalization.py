"""Personalization on the device: its state's storage, the plug-in loader, and that a method's
work never changes what the device sends."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clients.personal_store import MemoryStore, PersonalStore
from clients.personalization import PersonalizationError, load_personalization
from clients.protocol import ProtocolError
from clients.runconfig import load_config
from clients.worker import ClientWorker
from prge.perturb import derive_seed


@pytest.mark.parametrize("kind", ["file", "memory"])
def test_a_round_run_again_starts_from_the_state_before_it(tmp_path, kind):
    store = PersonalStore(tmp_path / "0.personal") if kind == "file" else MemoryStore()
    assert store.load(1) is None
    store.save(2, torch.tensor([1.0, 2.0]))
    store.save(5, torch.tensor([3.0, 4.0, 5.0]))  # any length
    assert store.load(5).tolist() == [1.0, 2.0]  # round 5 again: from round 2's state
    assert store.load(6).tolist() == [3.0, 4.0, 5.0]
    store.save(5, torch.tensor([9.0]))  # round 5 run again replaces its own record only
    assert store.load(5).tolist() == [1.0, 2.0] and store.load(6).tolist() == [9.0]
    store.save(7, torch.tensor([7.0]))  # keeps round 5's (its start), drops round 2's
    assert store.load(7).tolist() == [9.0] and store.load(3) is None


def test_a_damaged_personal_state_is_an_error_not_a_wrong_adapter(tmp_path):
    store = PersonalStore(tmp_path / "0.personal")
    store.save(1, torch.ones(4))
    store.path.write_bytes(store.path.read_bytes()[:-3])
    with pytest.raises(ProtocolError, match="damaged"):
        store.load(2)


def test_the_loader_names_what_is_wrong_in_one_sentence(tmp_path, monkeypatch):
    with pytest.raises(PersonalizationError, match="unknown personalization 'dito'.*ditto"):
        load_personalization("dito")
    with pytest.raises(PersonalizationError, match="lam must be a number >= 0"):
        load_personalization("ditto", lam=-1)
    with pytest.raises(PersonalizationError, match="unexpected keyword"):
        load_personalization("finetune", lr=1)
    with pytest.raises(PersonalizationError, match="cannot import 'nowhere'"):
        load_personalization("nowhere:Class")
    (tmp_path / "not_a_method.py").write_text("class Thing:\n    pass\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PersonalizationError, match="not a Personalization subclass"):
        load_personalization("not_a_method:Thing")


SETS = ["model=tiny", "engine=eager", "num-clients=2", "clients-per-round=2", "partition=iid",
        "batch-size=4", "local-steps=2", "q=2", "client-eval-size=4"]


def _worker(method: str, *sets: str) -> ClientWorker:
    return ClientWorker(load_config(None, [*SETS, f"personalization={method}", *sets]))


def _round(worker: ClientWorker, theta: torch.Tensor, server_round: int, store):
    seeds = [derive_seed(0, "round", server_round, j) for j in range(4)]
    return worker.train(0, theta.clone(), server_round, seeds, 1e-2, 0.1, personal=store)


def test_a_methods_work_never_changes_the_reply(tmp_path):
    """Ditto trains a second adapter on the device; what the device sends is the same as with
    no personalization, to the bit (nothing personal crosses the wire)."""
    plain, ditto = _worker("none"), _worker("ditto")
    theta = plain.setup.scorer.layout.zeros()
    for server_round in (1, 2):
        a = _round(plain, theta, server_round, tmp_path / "none.personal")
        b = _round(ditto, theta, server_round, tmp_path / "ditto.personal")
        assert a == b
    assert not (tmp_path / "none.personal").exists()
    assert PersonalStore(tmp_path / "ditto.personal").load(3) is not None


def test_ditto_adds_the_proximal_gradient_exactly(tmp_path):
    """With lam = 1 / lr the proximal step lands v on theta_t before the loss's step is added:
    v_new - theta_t is the loss's step alone, taken from v."""
    worker = _worker("ditto", "lr=0.1", "personalization-args.lam=10.0",
                     "personalization-args.steps=1")
    theta = worker.setup.scorer.layout.zeros()
    store = tmp_path / "0.personal"
    _round(worker, theta, 1, store)  # v starts at theta_t = 0
    v1 = PersonalStore(store).load(2)
    theta2 = torch.full_like(theta, 0.01)
    _round(worker, theta2, 2, store)
    v2 = PersonalStore(store).load(3)
    loss_step = v1.clone()
    device = worker.device(worker.data(0), None, 0.1)
    device.train(loss_step, 1, "ditto", 2, 0, 0)  # the same seeds and batch as the method's
    want = loss_step - v1 + theta2  # v1 - 0.1 * 10 * (v1 - theta2) = theta2, plus the step
    assert torch.allclose(v2, want, atol=1e-7)
    assert not torch.equal(v2, v1)


def test_finetune_steps_from_the_global_adapter_and_keeps_nothing(tmp_path):
    worker = _worker("finetune")
    theta = worker.setup.scorer.layout.zeros()
    zero = worker.personalize(0, theta, 0, personal=tmp_path / "0.personal")
    assert zero["personal-acc"] == zero["global-acc"]
    out = worker.personalize(0, theta, 3, personal=tmp_path / "0.personal")
    manual = theta.clone()
    seeds = [derive_seed(0, "personal", 0, i) for i in range(3 * 2)]
    worker.local_steps(manual, worker.data(0), seeds, 1e-2, 0.12, "personal", 0)
    device = worker.device(worker.data(0), None, 0.12)
    assert out["personal-acc"] == device.evaluate(manual)
    assert not (tmp_path / "0.personal").exists()
    assert set(out) == {"num-test", "global-acc", "personal-acc"}
    assert np.isfinite(out["personal-acc"])


def test_mixture_moves_its_own_adapter_by_alpha_times_the_mixtures_step(tmp_path):
    """alpha = 1: the mixture is v alone, so v is theta_t after K steps of its own; alpha = 0:
    v never moves and the device predicts with the global adapter."""
    one = _worker("mixture", "personalization-args.alpha=1.0")
    theta = torch.full((one.setup.scorer.dim,), 0.01)
    _round(one, theta, 1, tmp_path / "one.personal")
    want = theta.clone()
    device = one.device(one.data(0), None, 0.1)
    for k in range(2):
        device.train(want, 1, "mixture", 1, 0, k)
    # v + (m' - m) with m = v: m' to float32 rounding
    assert torch.allclose(PersonalStore(tmp_path / "one.personal").load(2), want, atol=1e-7)
    assert not torch.equal(want, theta)
    zero = _worker("mixture", "personalization-args.alpha=0.0")
    _round(zero, theta, 1, tmp_path / "zero.personal")
    assert torch.equal(PersonalStore(tmp_path / "zero.personal").load(2), theta)
    out = zero.personalize(0, theta, 0, server_round=1, personal=tmp_path / "zero.personal")
    assert out["personal-acc"] == out["global-acc"]


def test_split_trains_only_its_own_parts_and_keeps_them(tmp_path):
    worker = _worker("split", "personalization-args.parts=[\"down\"]")
    theta = torch.full((worker.setup.scorer.dim,), 0.01)
    _round(worker, theta, 1, tmp_path / "0.personal")
    mask = worker.setup.scorer.layout.mask(["down"])
    own = PersonalStore(tmp_path / "0.personal").load(2)
    assert own.shape == (int(mask.sum()),) and own.abs().sum() > 0  # trained from theta_0's 0
    device = worker.device(worker.data(0), tmp_path / "0.personal", 0.1)
    adapter = worker.method.personal(device, theta, 1)
    assert torch.equal(adapter[~mask], theta[~mask]) and torch.equal(adapter[mask], own)


def test_a_split_part_the_run_does_not_adapt_stops_the_run_before_it_starts():
    from clients.runconfig import ConfigError
    from simulation.runner import check_plugins

    cfg = load_config(None, [*SETS, "targets=q,v", "personalization=split"])  # parts: down
    with pytest.raises(ConfigError, match="parts down are not among the run's targets"):
        check_plugins(cfg)
    with pytest.raises(PersonalizationError, match="unknown adapter target 'mlp'"):
        load_personalization("split", parts=["mlp"])
