"""The server on the paths off the happy one, message by message: what it believes each device
holds after a failure, a run whose clients all fail, personalization in cohorts, byte counts,
resumed deadlines and checked restores. The real server and ClientApp, driven in this process by
a grid that decides each message's fate (tests/simulation/local_grid.py)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from clients.app import build_client_app
from clients.faults import draw_faults
from clients.runconfig import load_config
from clients.worker import ClientWorker
from simulation.checkpoint import CheckpointError
from simulation.failures import ClientsFailedError
from simulation.rundir import read_jsonl
from simulation.server_app import FederatedServer
from tests.simulation.local_grid import ANSWER, LATE, NEVER_DELIVERED, LocalGrid

SETS = ["model=tiny", "engine=eager", "num-clients=3", "clients-per-round=3", "partition=iid",
        "local-steps=1", "q=2", "batch-size=4", "targets=head", "catch-up=log", "eval-size=8",
        "client-eval-size=4", "personal-steps=1", "eval-every=100"]
BLOCK = 2  # K * q log entries per round


def _server(run_dir, sets=(), fate=None, app=None, resume=False):
    cfg = load_config(None, [*SETS, *sets])
    client = app or build_client_app(cfg, device_dir=run_dir / "devices")
    grid = LocalGrid(client, cfg.num_clients, fate)
    run_dir.mkdir(exist_ok=True)
    return FederatedServer(cfg, run_dir, grid, progress=False, resume=resume), grid


def _rounds(run_dir) -> list[dict]:
    return [m for m in read_jsonl(run_dir / "metrics.jsonl") if m["round"] > 0]


def _seed_where(want, rounds=4, num_clients=3, **probs) -> int:
    """The first run seed whose fault draws satisfy `want(draws)`, draws[r][p] for round r."""
    for seed in range(500):
        sets = [f"{key.replace('_', '-')}={value}" for key, value in probs.items()]
        cfg = load_config(None, [*SETS, f"seed={seed}", *sets])
        draws = {r: {p: draw_faults(cfg, r, p) for p in range(num_clients)}
                 for r in range(1, rounds + 1)}
        if want(draws):
            return seed
    raise AssertionError("no seed fits")


def test_a_crashed_device_is_resent_only_what_it_lacks(tmp_path):
    """Client 0 crashes in round 2 after storing round 2's tail: round 3 sends it one block (the
    old rule believed it held nothing and sent the whole log again)."""
    seed = _seed_where(lambda d: d[2][0].crash and not any(
        d[r][p].crash for r in (1, 2, 3) for p in range(3) if (r, p) != (2, 0)), crash_prob=0.3)
    srv, _ = _server(tmp_path / "run", [f"seed={seed}", "crash-prob=0.3", "rounds=3",
                                        "max-failed-rounds=0"])
    srv.run()
    r1, r2, r3 = _rounds(tmp_path / "run")
    assert r2["rejected_reasons"] == {"crash": 1} and r3["replies"] == 3
    assert r2["errors"]["crash"].startswith("simulated device crash")
    # round 3: clients 1 and 2 lack round 2's block; client 0 stored it before it crashed
    assert r3["log_entries_down"] == 3 * BLOCK
    assert "cursor_queries" not in r3  # the crash reply said where the device is


@pytest.mark.parametrize("fate", [NEVER_DELIVERED, LATE])
def test_a_message_whose_fate_is_unknown_is_followed_by_a_cursor_query(tmp_path, fate):
    """Client 0's round-2 message is lost before the device saw it, or the device handled it
    and its reply was lost. The server cannot tell which: it asks in round 3, and sends the tail
    from where the device really is (the old rule assumed the tail was stored, and a device that
    never got it failed round 3 with a client-error)."""
    def fates(msg, pid):
        return fate if (msg.metadata.message_type, msg.metadata.group_id, pid) == (
            "train", "2", 0) else ANSWER

    srv, grid = _server(tmp_path / "run", ["rounds=3", "personal-steps=0", "client-eval-size=0"],
                        fates)
    srv.run()
    r1, r2, r3 = _rounds(tmp_path / "run")
    assert r2["rejected_reasons"] == {"timeout": 1}
    assert r3["replies"] == 3 and "rejected_reasons" not in r3
    assert r3["cursor_queries"] == 1 and ("query", 0) in grid.sent[-4:]
    # clients 1 and 2 lack round 2's block; client 0 lacks both blocks if the message never
    # reached it, round 2's if it stored round 1's before its reply was lost
    lacks = 2 * BLOCK if fate == NEVER_DELIVERED else BLOCK
    assert r3["log_entries_down"] == 2 * BLOCK + lacks
    assert srv.cursors.unsure == set()


def test_a_run_whose_clients_all_fail_stops_with_their_error(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(ClientWorker, "train", boom)
    srv, _ = _server(tmp_path / "run", ["rounds=6", "max-failed-rounds=3"])
    with pytest.raises(ClientsFailedError, match=r"rounds 1-3\): client-error: RuntimeError: boom"):
        srv.run()
    rounds = _rounds(tmp_path / "run")
    assert len(rounds) == 3 and all(r["replies"] == 0 for r in rounds)
    assert rounds[-1]["errors"] == {"client-error": "RuntimeError: boom"}
    assert not (tmp_path / "run" / "summary.json").exists()
    ckpt = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    assert ckpt["round"] == 3  # resumable from the last failed round
    monkeypatch.undo()  # the cause fixed, the run resumes and finishes
    again, _ = _server(tmp_path / "run", ["rounds=6", "max-failed-rounds=3"], resume=True)
    summary = again.run()
    assert summary["rounds"] == 6 and [r["replies"] for r in _rounds(tmp_path / "run")][3:] == [3] * 3


def test_personalization_goes_a_cohort_at_a_time(tmp_path):
    srv, grid = _server(tmp_path / "run", ["num-clients=5", "clients-per-round=2", "rounds=1"])
    batches = []
    send = grid.send_and_receive
    grid.send_and_receive = lambda msgs, timeout=None: (
        batches.append([m.metadata.message_type for m in msgs]) or send(msgs, timeout))
    srv.run()
    assert [len(b) for b in batches if b[0] == "evaluate"] == [2, 2, 1]
    clients = json.loads((tmp_path / "run" / "clients.json").read_text())
    assert [c["client"] for c in clients] == [0, 1, 2, 3, 4]
    assert all(0 <= c["personal_acc"] <= 1 for c in clients)


def test_a_malformed_evaluate_reply_costs_that_client_only(tmp_path):
    cfg = load_config(None, SETS)
    real = build_client_app(cfg, device_dir=tmp_path / "run" / "devices")

    def app(msg, context):
        reply = real(msg, context)
        if msg.metadata.message_type == "evaluate" and context.node_config["partition-id"] == 1:
            reply.content["res"]["global-acc"] = "high"
        return reply

    srv, _ = _server(tmp_path / "run", ["rounds=1"], app=app)
    summary = srv.run()
    clients = json.loads((tmp_path / "run" / "clients.json").read_text())
    # its scores are refused; what the exchange cost is still counted
    assert {k: v for k, v in clients[1].items() if not k.startswith("bytes_")} == {
        "client": 1, "error": "malformed"}
    assert clients[1]["bytes_up"] > 0
    assert "personal_acc" in clients[0] and summary["client_personal_acc"] is not None


def test_upload_per_client_round_counts_the_clients_that_uploaded(tmp_path):
    """With devices offline or crashing, the per-client figure is a reply's size (it divided by
    every sampled client, reached or not, and counted error replies above it)."""
    run = tmp_path / "run"
    srv, _ = _server(run, ["rounds=4", "dropout-prob=0.3", "crash-prob=0.3", "seed=1",
                           "max-failed-rounds=0", "personal-steps=0", "client-eval-size=0"])
    summary = srv.run()
    rounds = _rounds(run)
    assert sum(r["dropped"] for r in rounds) and sum(r["rejected"] for r in rounds)
    replies = sum(r["replies"] for r in rounds)
    valid_up = sum(r["bytes_up_valid"] for r in rounds)
    assert summary["bytes_up_per_client_round"] == valid_up / replies
    sizes = {r["bytes_up_valid"] / r["replies"] for r in rounds if r["replies"]}
    assert len(sizes) == 1  # every valid reply has one size: K*q scalars and their fields
    assert summary["bytes_discovery"] > 0


def test_a_resumed_run_keeps_the_deadline_the_uninterrupted_run_had(tmp_path):
    run = tmp_path / "run"
    srv, _ = _server(run, ["rounds=2", "personal-steps=0", "client-eval-size=0"])
    srv.run()  # checkpointed after round 2; a resume of a longer run goes on from there
    want = srv.deadlines.round()
    assert srv.deadlines.slowest > 0 and want < srv.cfg.round_deadline_first_s
    again, _ = _server(run, ["rounds=4", "personal-steps=0", "client-eval-size=0"], resume=True)
    assert again.deadlines.round() == want  # it was the first round's allowance


def test_a_simulated_straggler_is_late_at_once_and_keeps_the_log_it_was_sent(tmp_path):
    """Client 0 straggles in round 2: its reply, 120 simulated seconds after the work, is past
    the 60 s deadline. The server does not wait for it (a slept delay made the verdict depend on
    this host's speed and on a kill and resume), and the device, which answered, holds the log:
    round 3 sends it round 2's block like everyone else, with no cursor query."""
    seed = _seed_where(lambda d: d[2][0].straggle and not any(
        d[r][p].straggle for r in (1, 2, 3) for p in range(3) if (r, p) != (2, 0)),
        straggle_prob=0.3)
    srv, _ = _server(tmp_path / "run", [f"seed={seed}", "straggle-prob=0.3", "straggle-s=120",
                                        "round-deadline-s=60", "rounds=3"])
    t0 = time.monotonic()
    srv.run()
    assert time.monotonic() - t0 < 60
    r1, r2, r3 = _rounds(tmp_path / "run")
    assert r2["rejected_reasons"] == {"late": 1} and r2["replies"] == 2
    assert r2["errors"] == {"late": "a simulated straggler answered after the deadline"}
    assert r2["bytes_up"] > r2["bytes_up_valid"]  # the device did send its reply
    assert r3["replies"] == 3 and "cursor_queries" not in r3
    assert r3["log_entries_down"] == 3 * BLOCK


def test_the_first_round_of_each_launch_waits_for_start_up(tmp_path):
    """A fixed 5 s deadline, but the first round of a launch has the client processes load the
    model: it waits round-deadline-first-s, on a fresh run and on a resumed one (whose
    uninterrupted twin had its processes running), and the rounds after it wait 5 s. (The first
    wait, None, is discovery's: every node must answer it.)"""
    run, sets = tmp_path / "run", ["round-deadline-s=5", "round-deadline-first-s=100",
                                   "personal-steps=0", "client-eval-size=0"]
    srv, grid = _server(run, ["rounds=2", *sets])
    srv.run()
    assert grid.waits == [None, 100.0, 5.0]
    again, grid = _server(run, ["rounds=3", *sets], resume=True)
    again.run()
    assert grid.waits == [None, 100.0]
    assert [r.get("deadline_s") for r in _rounds(run)] == [5.0] * 3


def test_a_resume_checks_the_log_without_replaying_it(tmp_path):
    run = tmp_path / "run"
    srv, _ = _server(run, ["rounds=3", "personal-steps=0", "client-eval-size=0"])
    srv.run()
    (run / "summary.json").unlink()
    again, _ = _server(run, ["rounds=3", "personal-steps=0", "client-eval-size=0"], resume=True)
    assert np.array_equal(again.theta.numpy(), srv.theta.numpy()) and again.log == srv.log
    rows = (run / "update_log.jsonl").read_text().splitlines()
    row = json.loads(rows[1])
    row["grad"] += 1.0
    rows[1] = json.dumps(row, sort_keys=True)
    (run / "update_log.jsonl").write_text("\n".join(rows) + "\n")
    with pytest.raises(CheckpointError, match="not the log the checkpoint of round 3"):
        _server(run, ["rounds=3"], resume=True)


def test_a_rounds_error_text_does_not_depend_on_which_reply_came_first(tmp_path):
    """Two clients crash in round 1; replies arrive in reverse order. The round's `crash` text is
    client 1's, the lowest id (it was whichever arrived first: two runs of one config differed)."""
    seed = _seed_where(lambda d: d[1][1].crash and d[1][2].crash and not d[1][0].crash,
                       rounds=1, crash_prob=0.5)
    srv, grid = _server(tmp_path / "run", [f"seed={seed}", "crash-prob=0.5", "rounds=1",
                                           "max-failed-rounds=0", "personal-steps=0",
                                           "client-eval-size=0"])
    send = grid.send_and_receive
    grid.send_and_receive = lambda msgs, timeout=None: send(msgs, timeout)[::-1]
    srv.run()
    (r1,) = _rounds(tmp_path / "run")
    assert r1["rejected_reasons"] == {"crash": 2}
    assert r1["errors"] == {"crash": "simulated device crash (round 1, client 1)"}
