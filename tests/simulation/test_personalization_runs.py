"""Personalization methods through the real server and ClientApp (in this process, on a grid that
delivers each message: tests/simulation/local_grid.py): per-client evaluation every few rounds,
exact kill and resume of the devices' personal state, `local` as each client alone, nothing
personal on the wire, and a user's own method through the plug-in path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from clients.app import build_client_app
from clients.personal_store import PersonalStore
from clients.runconfig import load_config
from clients.worker import ClientWorker
from prge.estimator import scheduled_lr
from simulation.rundir import read_jsonl, write_json
from simulation.server_app import FederatedServer, sample_cohort
from tests.simulation.local_grid import LocalGrid

SETS = ["model=tiny", "engine=eager", "num-clients=4", "clients-per-round=2", "partition=iid",
        "local-steps=2", "q=2", "batch-size=4", "eval-size=8", "client-eval-size=8",
        "personal-steps=2", "eval-every=100", "rounds=4", "client-eval-every=2",
        "round-deadline-s=0"]  # no deadline: nothing of this host's time in the records


class KilledGrid(LocalGrid):
    """Delivers round `kill_at`'s training messages, then dies as a killed server would: the
    devices did the round, the server never checkpointed it."""

    def __init__(self, *args, kill_at: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.kill_at = kill_at

    def send_and_receive(self, messages, timeout=None):
        replies = super().send_and_receive(messages, timeout)
        if messages and messages[0].metadata.group_id == str(self.kill_at):
            raise KeyboardInterrupt("killed")
        return replies


def _run(run_dir, sets=(), kill_at=None, resume=False):
    cfg = load_config(None, [*SETS, *sets])
    app = build_client_app(cfg, device_dir=run_dir / "devices")
    grid = (KilledGrid(app, cfg.num_clients, kill_at=kill_at) if kill_at
            else LocalGrid(app, cfg.num_clients))
    run_dir.mkdir(exist_ok=True)
    write_json(run_dir / "config.json", cfg.to_dict())  # as the runner does
    return FederatedServer(cfg, run_dir, grid, progress=False, resume=resume).run()


def _outputs(run_dir) -> dict:
    metrics = [{k: v for k, v in m.items() if k not in ("elapsed_s", "round_s")}  # host time
               for m in read_jsonl(run_dir / "metrics.jsonl")]
    return {"metrics": metrics, "clients": json.loads((run_dir / "clients.json").read_text()),
            "clients_eval": read_jsonl(run_dir / "clients_eval.jsonl"),
            "personal": {p.name: p.read_bytes() for p in (run_dir / "devices").glob("*.personal")}}


@pytest.mark.parametrize("method", ["finetune", "ditto", "mixture", "split", "local", "none"])
def test_a_killed_and_resumed_run_equals_the_uninterrupted_one(tmp_path, method):
    """Killed after the devices did round 3 (Ditto and local updated their personal state)
    but before the server checkpointed it: the resumed run redoes round 3 from the state each
    device had before it, and every output, personal state included, is the uninterrupted run's."""
    sets = [f"personalization={method}"]
    whole = _run(tmp_path / "whole", sets)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "killed", sets, kill_at=3)
    resumed = _run(tmp_path / "killed", sets, resume=True)
    assert _outputs(tmp_path / "killed") == _outputs(tmp_path / "whole")
    # a resume adds its own start: this host's time, one more node discovery, a cold server cache
    launch = ("wall_s", "bytes_discovery", "prefix_cache")
    assert ({k: v for k, v in resumed.items() if k not in launch}
            == {k: v for k, v in whole.items() if k not in launch})
    stateful = method in ("ditto", "mixture", "split", "local")
    assert bool(_outputs(tmp_path / "whole")["personal"]) == stateful


def test_every_client_is_evaluated_every_few_rounds_and_summarised(tmp_path):
    summary = _run(tmp_path / "run", ["personalization=ditto"])
    rows = read_jsonl(tmp_path / "run" / "clients_eval.jsonl")
    assert [r["round"] for r in rows] == [2]  # round 4, the last, goes to clients.json
    assert sorted(c["client"] for c in rows[0]["clients"]) == [0, 1, 2, 3]
    metrics = {m["round"]: m for m in read_jsonl(tmp_path / "run" / "metrics.jsonl")}
    at2 = metrics[2]
    personal = sorted(c["personal_acc"] for c in rows[0]["clients"])
    assert at2["client_personal_acc"] == pytest.approx(sum(personal) / 4)
    assert personal[0] <= at2["client_personal_p10"] <= personal[1]
    assert 0 <= at2["client_hurt_share"] <= 1 and at2["clients_scored"] == 4
    assert "client_personal_p10" not in metrics[1] and "client_personal_p10" not in metrics[3]
    for key in ("client_personal_p10", "client_personal_median", "client_hurt_share"):
        assert key in summary
    assert summary["personalization"] == "ditto"


def test_local_equals_each_client_training_alone(tmp_path):
    """`local`: each client's adapter is what it gets training alone, from theta_0, K steps in
    each round it was sampled for (the same private seeds), whatever the federation did."""
    run = tmp_path / "run"
    _run(run, ["personalization=local"])
    cfg = load_config(None, [*SETS, "personalization=local"])
    alone = ClientWorker(cfg)
    clients = {c["client"]: c for c in json.loads((run / "clients.json").read_text())}
    for pid in range(cfg.num_clients):
        own = alone.setup.scorer.layout.zeros()
        for t in range(1, cfg.rounds + 1):
            if pid in sample_cohort(cfg, t):
                lr = scheduled_lr(cfg.lr, t - 1, cfg.rounds, cfg.lr_schedule)
                alone.device(alone.data(pid), None, lr).train(own, cfg.local_steps, "local", t, pid)
        stored = PersonalStore(run / "devices" / f"{pid}.personal").load(cfg.rounds + 1)
        if stored is None:  # never sampled: it never trained
            assert torch.equal(own, torch.zeros_like(own))
        else:
            assert torch.equal(stored, own)
        assert clients[pid]["personal_acc"] == alone.device(alone.data(pid), None, 0).evaluate(own)


def test_nothing_personal_crosses_the_wire(tmp_path):
    """The same run with Ditto and without personalization: the same log, bytes and global
    accuracy, round by round."""
    def wire(method):
        _run(tmp_path / method, [f"personalization={method}", "client-eval-every=0"])
        keys = ("bytes_up", "bytes_down", "replies", "test_acc", "theta_hash")
        return ([{k: m.get(k) for k in keys} for m in read_jsonl(tmp_path / method / "metrics.jsonl")],
                (tmp_path / method / "update_log.jsonl").read_bytes())

    assert wire("ditto") == wire("none")


def _docs_example() -> str:
    """The method written in docs/how-to/personalization.md: the page's python block."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "how-to" / "personalization.md")
    return page.read_text().split("```python\n")[1].split("```")[0]


def test_a_users_own_method_from_the_docs_runs_through_the_plug_in_path(tmp_path, monkeypatch):
    (tmp_path / "my_methods.py").write_text(_docs_example())
    monkeypatch.chdir(tmp_path)
    summary = _run(tmp_path / "run", ["personalization=my_methods:GlobalAverage",
                                      "personalization-args.decay=0.8"])
    assert summary["personalization"] == "my_methods:GlobalAverage"
    assert summary["clients_scored"] == 4
    assert list((tmp_path / "run" / "devices").glob("*.personal"))  # its state, on the devices
    from clients.runconfig import ConfigError
    from simulation.runner import check_plugins

    bad = load_config(None, [*SETS, "personalization=my_methods:GlobalAverage",
                             "personalization-args.decay=1.5"])
    with pytest.raises(ConfigError, match=r"GlobalAverage': decay must be in \[0, 1\), got 1.5"):
        check_plugins(bad)  # what fedprge run and sweep do before anything starts



def test_newcomers_never_train_and_are_reported_apart(tmp_path):
    """holdout-clients=1: client 3 is never sent a training message; at each client evaluation
    it catches up from nothing, does Ditto's round of work on a state it does not keep, and is
    summarised apart with the bytes its catch-up took."""
    run = tmp_path / "run"
    cfg = load_config(None, [*SETS, "personalization=ditto", "holdout-clients=1"])
    grid = LocalGrid(build_client_app(cfg, device_dir=run / "devices"), cfg.num_clients)
    run.mkdir()
    summary = FederatedServer(cfg, run, grid, progress=False).run()
    assert ("train", 3) not in grid.sent and ("evaluate", 3) in grid.sent
    assert all(3 not in sample_cohort(cfg, t) for t in range(1, 200))
    assert not (run / "devices" / "3.personal").exists()
    rows = read_jsonl(run / "clients_eval.jsonl")[0]["clients"]
    newcomer = next(r for r in rows if r["client"] == 3)
    assert newcomer["newcomer"] is True and not any(r.get("newcomer") for r in rows if r is not newcomer)
    at2 = next(m for m in read_jsonl(run / "metrics.jsonl") if m["round"] == 2)
    assert at2["newcomers_scored"] == 1 and at2["clients_scored"] == 3
    assert at2["newcomer_personal_acc"] == newcomer["personal_acc"]
    assert at2["newcomer_bytes_down"] == newcomer["bytes_down"]
    # it held nothing: its catch-up is the largest evaluation message of the round
    assert newcomer["bytes_down"] == max(r["bytes_down"] for r in rows)
    assert summary["newcomers_scored"] == 1


def test_too_many_newcomers_is_a_config_error():
    from clients.runconfig import ConfigError

    with pytest.raises(ConfigError, match="holdout-clients=3 must leave at least clients-per-round"):
        load_config(None, [*SETS, "holdout-clients=3"])


def test_report_and_plot_show_the_clients_distribution_over_seeds(tmp_path):
    from simulation.plot import plot
    from simulation.report import report

    (tmp_path / "runs").mkdir()
    for seed in (0, 1):
        _run(tmp_path / "runs" / f"seed={seed}", ["personalization=ditto", f"seed={seed}",
                                                  "holdout-clients=1"])
    runs = [tmp_path / "runs" / "seed=0", tmp_path / "runs" / "seed=1"]
    text = report(runs)
    header, _, first = text.splitlines()[:3]
    assert "clients' p10 (personalized)" in header and "newcomers: global / personalized" in header
    assert "ditto" in first and " ± " in first  # two seeds: mean ± interval
    written = plot(runs, out=tmp_path / "fig", write_csv=True)
    names = {p.name for p in written}
    assert {"clients_last.png", "p10_vs_round.png", "p10_vs_round.csv"} <= names
    rows = (tmp_path / "fig" / "p10_vs_round.csv").read_text().splitlines()
    assert [r.split(",")[1] for r in rows[1:]] == ["2", "4"]  # every client evaluation
    clients = (tmp_path / "fig" / "clients_last.csv").read_text().splitlines()
    assert len(clients) == 1 + 2 * 2 * 3  # 2 adapters x 2 seeds x 3 clients (no newcomer)


def test_the_report_counts_dittos_second_adapter_as_device_work(tmp_path):
    """With devices, the report's work per device round: Ditto's rounds do K more steps."""
    from simulation.report import _work_per_contact, report
    from simulation.rundata import load_runs

    for method in ("ditto", "none"):
        _run(tmp_path / method, [f"personalization={method}", "devices=phones"])
    ditto, none = (_work_per_contact(r) for r in load_runs([tmp_path / "ditto", tmp_path / "none"]))
    assert ditto > 1.5 * none
    assert "GFLOP / device round" in report([tmp_path / "ditto"]).splitlines()[0]
