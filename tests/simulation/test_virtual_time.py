"""Edge devices in virtual time: the real server and ClientApp in this process (LocalGrid), with
device profiles, availability, deadlines and over-selection in the devices' time."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clients.devices import SHIPPED_DIR, fleet, load_profiles, shipped_profiles
from clients.runconfig import ConfigError, load_config
from fedprge import load_runs
from simulation.availability import AvailabilityError, Diurnal, Trace
from simulation.failures import ClientsFailedError
from simulation.plot import plot
from simulation.report import report
from simulation.rundir import read_jsonl, write_json
from simulation.units import duration
from tests.simulation.test_cli import fedprge
from tests.simulation.test_server_faults import _server

BASE = ["rounds=3", "lr-schedule=constant", "personal-steps=1", "client-eval-size=4",
        "num-clients=4", "clients-per-round=2"]


def _rows(path, lines: list[str], header="client,gflops-fp32,uplink-mbps,downlink-mbps,rtt-ms,"
                                          "memory-gib") -> str:
    path.write_text(header + "\n" + "\n".join(lines) + "\n")
    return str(path)


def _run(tmp_path, name, sets):
    srv, grid = _server(tmp_path / name, [*BASE, *sets])
    write_json(tmp_path / name / "config.json", srv.cfg.to_dict())  # as the runner does
    summary = srv.run()
    rounds = [m for m in read_jsonl(tmp_path / name / "metrics.jsonl") if m["round"] > 0]
    clients = json.loads((tmp_path / name / "clients.json").read_text())
    return summary, rounds, clients, grid, tmp_path / name


@pytest.fixture(scope="module")
def phones(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("phones")
    return _run(tmp, "a", ["devices=phones"]), _run(tmp, "b", ["devices=phones"]), \
        _run(tmp, "off", [])


def test_two_runs_of_one_config_have_identical_virtual_time(phones):
    (sa, ra, ca, _, _), (sb, rb, cb, _, _), _ = phones
    assert [r["virtual_s"] for r in ra] == [r["virtual_s"] for r in rb]
    assert [r["round_flops"] for r in ra] == [r["round_flops"] for r in rb]
    assert all(r["round_virtual_s"] > 0 and r["round_flops"] > 0 for r in ra)
    assert ra[-1]["virtual_s"] == pytest.approx(sum(r["round_virtual_s"] for r in ra))
    assert sa["virtual_s"] == sb["virtual_s"] == ra[-1]["virtual_s"]
    assert sa["device_hours"] > 0 and sa["energy_j"] == sb["energy_j"]
    assert ca == cb


def test_the_clock_changes_nothing_but_time(phones):
    """Always-on, no deadline, no over-selection: the same cohorts, bytes and model."""
    (sa, ra, _, ga, _), _, (so, ro, _, go, _) = phones
    keys = ("replies", "bytes_up", "bytes_down", "theta_hash", "log_entries_down")
    assert [[r[k] for k in keys] for r in ra] == [[r[k] for k in keys] for r in ro]
    assert sa["final_theta_hash"] == so["final_theta_hash"]
    assert ga.sent == go.sent
    assert "virtual_s" not in ro[0] and "virtual_s" not in so


def test_clients_json_holds_each_devices_time_and_work(phones):
    (summary, rounds, clients, _, _), _, _ = phones
    devices = {c.name for c in load_profiles(SHIPPED_DIR / "phones.toml")}
    assert all(c["device"] in devices for c in clients)
    worked = [c for c in clients if c["rounds"]]
    assert sum(c["rounds"] for c in clients) == sum(r["replies"] for r in rounds)
    assert sum(c["flops"] for c in clients) == sum(r["round_flops"] for r in rounds)
    assert all(c["compute_s"] > 0 and c["radio_s"] > 0 and c["idle_s"] >= 0 for c in worked)
    assert summary["device_hours"] == pytest.approx(
        sum(c["compute_s"] + c["radio_s"] for c in clients) / 3600)
    assert all(c["personalize_virtual_s"] > 0 for c in clients)
    assert summary["personalize_virtual_s"] > 0


def test_a_slower_device_takes_exactly_its_profiles_ratio_longer(tmp_path):
    """Clients 0 and 2 on one device, 1 and 3 on one with half its GFLOP/s: the same FLOPs take
    exactly twice the compute seconds."""
    rows = _rows(tmp_path / "fleet.csv", ["0,20,10,10,0,", "1,10,10,10,0,"])
    _, _, clients, _, _ = _run(tmp_path, "run", [f"devices={rows}"])
    per_flop = {c["client"]: c["compute_s"] / c["flops"] for c in clients if c["flops"]}
    assert {p % 2 for p in per_flop} == {0, 1}
    fast, slow = (np.mean([v for p, v in per_flop.items() if p % 2 == k]) for k in (0, 1))
    assert slow / fast == pytest.approx(2.0, rel=1e-12)
    assert fast == pytest.approx(1 / 20e9, rel=1e-12)


def test_a_trace_unavailable_client_is_never_sampled(tmp_path):
    trace = tmp_path / "trace.csv"
    # clients 0 and 1 always on; client 2 only at night (never reached in these rounds);
    # client 3 absent from the trace
    trace.write_text("client,start,end\n0,0,86400\n1,0,86400\n2,80000,80001\n")
    summary, rounds, clients, grid, _ = _run(tmp_path, "run", ["devices=phones",
                                                            f"availability={trace}"])
    assert {p for _, p in grid.sent if _ == "train"} == {0, 1}
    assert all(r["available"] == 2 for r in rounds)
    by_client = {c["client"]: c for c in clients}
    assert by_client[2]["rounds"] == by_client[3]["rounds"] == 0


def test_a_device_short_of_memory_is_refused_with_its_own_reason(tmp_path):
    rows = _rows(tmp_path / "fleet.csv", ["0,20,10,10,0,0.000001", "1,20,10,10,0,"])
    _, rounds, clients, grid, _ = _run(tmp_path, "run", [f"devices={rows}", "clients-per-round=4"])
    assert all(r["rejected_reasons"] == {"memory": 2} for r in rounds)
    assert "need 0.0" in rounds[0]["errors"]["memory"]
    assert not any(p % 2 == 0 for kind, p in grid.sent if kind == "train")
    assert [c.get("error", "")[:8] for c in clients] == ["memory: ", "", "memory: ", ""]


def test_a_virtual_deadline_makes_slow_devices_late_and_ends_the_round(tmp_path):
    rows = _rows(tmp_path / "fleet.csv", ["0,1000,1000,1000,0,", "1,0.001,1000,1000,0,"])
    _, rounds, _, _, _ = _run(tmp_path, "run", [f"devices={rows}", "clients-per-round=4",
                                             "virtual-deadline-s=1"])
    assert all(r["rejected_reasons"] == {"late": 2} and r["replies"] == 2 for r in rounds)
    assert all(r["round_virtual_s"] == 1.0 for r in rounds)


def test_over_selection_keeps_the_first_replies_to_arrive(tmp_path):
    rows = _rows(tmp_path / "fleet.csv", ["0,1000,1000,1000,0,", "1,0.01,1000,1000,0,"])
    _, rounds, clients, grid, _ = _run(tmp_path, "run", [f"devices={rows}", "clients-per-round=2",
                                                      "over-selection=2"])
    assert all(r["replies"] == 2 and r["rejected_reasons"] == {"surplus": 2} for r in rounds)
    fast = [c for c in clients if c["client"] % 2 == 0]
    # the round closes when the two fast replies are in: slow devices' work outlasts it
    assert all(r["round_virtual_s"] < 1 for r in rounds)
    assert len([p for kind, p in grid.sent if kind == "train"]) == 3 * 4  # all sampled
    assert all(c["rounds"] == 3 for c in fast)


def test_a_resumed_run_keeps_the_clock_and_the_filled_prefixes(tmp_path):
    full = _run(tmp_path, "full", ["devices=phones", "rounds=4", "personal-steps=0",
                                   "client-eval-size=0"])[1]
    srv, _ = _server(tmp_path / "cut", [*BASE, "devices=phones", "rounds=2", "personal-steps=0",
                                        "client-eval-size=0"])
    srv.run()
    again, _ = _server(tmp_path / "cut", [*BASE, "devices=phones", "rounds=4",
                                          "personal-steps=0", "client-eval-size=0"], resume=True)
    again.run()
    cut = [m for m in read_jsonl(tmp_path / "cut" / "metrics.jsonl") if m["round"] > 0]
    assert [r["virtual_s"] for r in cut] == [r["virtual_s"] for r in full]
    assert [r["round_flops"] for r in cut] == [r["round_flops"] for r in full]


def test_virtual_time_keys_need_devices_and_bad_files_are_one_line_errors(tmp_path):
    for key in ("availability=diurnal", "virtual-deadline-s=5", "over-selection=1.3"):
        with pytest.raises(ConfigError, match="needs devices"):
            load_config(None, [key])
    with pytest.raises(ValueError, match="no shipped profile set"):
        fleet("tablets", 4, 0)
    bad = _rows(tmp_path / "bad.csv", ["0,fast,1,1,0,"])
    with pytest.raises(ValueError, match="line 2: gflops-fp32 must be a number"):
        fleet(bad, 4, 0)
    trace = tmp_path / "t.csv"
    trace.write_text("client,start,end\n9,0,10\n")
    with pytest.raises(AvailabilityError, match="no interval for any of the run's 4 clients"):
        Trace(4, trace)
    assert set(shipped_profiles()) >= {"phones", "laptops"}


def test_diurnal_availability_follows_each_clients_window():
    d = Diurnal(200, hours=6, seed=0)
    day = [len(d.available(h * 3600.0)) for h in range(24)]
    assert 30 < np.mean(day) < 70  # a quarter of the fleet on average
    t = 12_345.0
    assert set(d.available(t)) == set(d.available(t + 86_400.0))  # it repeats daily
    lonely = Diurnal(1, hours=1, seed=3)
    start = lonely.next_start(0.0 if not lonely.available(0.0) else 4000.0)
    assert lonely.available(start) == [0]


def test_report_plot_and_the_api_read_virtual_time(phones, tmp_path):
    (summary, rounds, _, _, run), _, (_, _, _, _, off) = phones
    text = report([run, off], targets=[0.0])
    header = text.splitlines()[0]
    assert "device time" in header and "to 0 % cal (bytes · time · device time)" in header
    assert duration(summary["virtual_s"]) in text.splitlines()[2]
    written = plot([run], out=tmp_path / "figs", x=["virtual-time"], write_csv=True)
    points = (tmp_path / "figs" / "acc_vs_virtual_time.csv").read_text().splitlines()
    assert written[0].name == "acc_vs_virtual_time.png" and len(points) > 2
    assert "acc_vs_virtual_time.png" not in [p.name for p in plot([off], out=tmp_path / "o")]
    df = load_runs([run, off]).to_dataframe()
    mine = df[df["run"] == run.name]
    assert mine["virtual_s"].iloc[0] == 0.0
    assert mine["virtual_s"].iloc[-1] == rounds[-1]["virtual_s"]
    assert df[df["run"] == off.name]["virtual_s"].isna().all()


def test_a_run_retimed_on_another_fleet_is_that_fleets_run(tmp_path):
    """The same training on laptops: re-timing the phones run gives the laptops run's clock."""
    _, _, _, _, on_phones = _run(tmp_path, "phones", ["devices=phones"])
    _, laptop_rounds, laptop_clients, _, on_laptops = _run(tmp_path, "laptops", ["devices=laptops"])
    proc = fedprge("retime", str(on_phones), "--devices", "laptops", "--out", str(tmp_path / "re"))
    assert proc.returncode == 0, proc.stderr
    retimed = tmp_path / "re" / "phones"
    assert proc.stdout.split() == [str(retimed)]
    rounds = [m for m in read_jsonl(retimed / "metrics.jsonl") if m["round"] > 0]
    assert [r["virtual_s"] for r in rounds] == [r["virtual_s"] for r in laptop_rounds]
    summary = json.loads((retimed / "summary.json").read_text())
    want = json.loads((on_laptops / "summary.json").read_text())
    assert summary["virtual_s"] == want["virtual_s"] and summary["energy_j"] == want["energy_j"]
    personal = ("personalize_virtual_s", "personalize_flops", "personalize_energy_j")
    clients = json.loads((retimed / "clients.json").read_text())
    assert clients == [{k: v for k, v in c.items() if k not in personal} for c in laptop_clients]
    assert json.loads((retimed / "config.json").read_text())["devices"] == "laptops"


def test_retime_refuses_what_it_cannot_redo_exactly(tmp_path):
    _, _, _, _, plain = _run(tmp_path, "plain", [])
    _, _, _, _, late = _run(tmp_path, "late", ["devices=phones", "virtual-deadline-s=1"])
    for run, why in ((plain, "without devices"), (late, "virtual-deadline-s")):
        proc = fedprge("retime", str(run), "--devices", "laptops", "--out", str(tmp_path / "x"))
        assert proc.returncode == 2 and why in proc.stderr and "\n" not in proc.stderr.strip()
    assert not (tmp_path / "x").exists()


def test_a_bad_profile_or_trace_stops_the_command_before_anything_starts(tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text("client,start,end\n0,5,1\n")
    for sets, why in ((["devices=tablets"], "no shipped profile set"),
                      (["devices=phones", f"availability={trace}"], "needs 0 <= start < end")):
        args = [a for kv in ["model=tiny", *sets] for a in ("--set", kv)]
        proc = fedprge("run", *args, "--out", str(tmp_path / "run"), "--quiet")
        assert proc.returncode == 2 and why in proc.stderr, proc.stderr
        assert not (tmp_path / "run").exists()


def test_a_fleet_that_cannot_hold_the_work_stops_the_run_saying_so(tmp_path):
    rows = _rows(tmp_path / "fleet.csv", ["0,20,10,10,0,0.000001"])
    srv, _ = _server(tmp_path / "run", [*BASE, f"devices={rows}", "rounds=6",
                                        "max-failed-rounds=2"])
    with pytest.raises(ClientsFailedError, match=r"rounds 1-2\): memory: client-0 holds 1e-06 GiB"):
        srv.run()
