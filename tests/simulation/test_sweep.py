"""`fedprge sweep`: grid parsing, point names, up-front validation, resuming; one real sweep."""

import json
import os

import pytest

from simulation import sweep as sweep_mod
from simulation.rundir import read_jsonl, write_json
from simulation.sweep import SweepError, expand_points, parse_grid, point_name, run_sweep
from tests.simulation.test_cli import fedprge


def test_grid_values_comma_separated_or_json_lists():
    assert parse_grid(["q=2, 4", "local-steps=1"]) == [("q", ["2", "4"]), ("local-steps", ["1"])]
    assert parse_grid(['targets=["head","q,v"]']) == [("targets", ["head", "q,v"])]
    # a list value becomes what `--set targets=q,v` takes; other JSON stays JSON
    assert parse_grid(['targets=[["q","v"],["head"]]']) == [("targets", ["q,v", "head"])]
    assert parse_grid(["lr=[0.1, 1e-3]"]) == [("lr", ["0.1", "0.001"])]
    assert parse_grid(['strategy-args=[{"trim": 0.1}]']) == [("strategy-args", ['{"trim":0.1}'])]


@pytest.mark.parametrize("items, message", [
    ([], "at least one --grid"),
    (["q"], "must look like key=v1,v2"),
    (["=2,4"], "must look like key=v1,v2"),
    (["q="], "has an empty value"),
    (["q=2,,4"], "has an empty value"),
    (["q=2,2"], "lists '2' twice"),
    (["q=[]"], "lists no values"),
    (["q=[2,"], "not a valid JSON list"),
    (["q=[null]"], "null is not a value"),
    (["q=2", "q=4"], "--grid q is given twice"),
])
def test_bad_grids_are_refused(items, message):
    with pytest.raises(SweepError, match=message.replace("[", r"\[")):
        parse_grid(items)


def test_points_are_the_cartesian_product_with_readable_safe_names():
    points = expand_points(parse_grid(["q=2,4", "local-steps=1,2"]))
    assert [p.name for p in points] == ["q=2_local-steps=1", "q=2_local-steps=2",
                                        "q=4_local-steps=1", "q=4_local-steps=2"]
    assert points[1].sets == ["q=2", "local-steps=2"]
    assert point_name([("model", "org/name:rev 2"), ("targets", "q,v")]) == "model=org-name-rev-2_targets=q,v"
    assert point_name([("strategy-args", '{"trim":0.1}')]) == "strategy-args=-trim-0.1-"
    long_a, long_b = point_name([("model", "x" * 300 + "a")]), point_name([("model", "x" * 300 + "b")])
    assert len(long_a) == 120 and long_a != long_b and long_a.startswith("model=xxx")
    with pytest.raises(SweepError, match="would share the directory 'model=a-b'"):
        expand_points(parse_grid(["model=a/b,a:b"]))


@pytest.mark.parametrize("grid, message", [
    (["nope=1,2"], "point nope=1: unknown config key 'nope'"),
    (["q=2,x"], "point q=x: q='x' is not a valid int"),
    (["q=4,04"], "points q=4 and q=04 resolve to the same config"),
    (["strategy=mean,nope"], "point strategy=nope: unknown strategy 'nope'"),
])
def test_every_point_is_validated_before_any_run(tmp_path, monkeypatch, grid, message):
    monkeypatch.setattr(sweep_mod, "_run_point", lambda *a: pytest.fail("a point ran"))
    with pytest.raises(SweepError, match=message):
        run_sweep(None, grid, [], tmp_path / "sweep", quiet=True)
    assert not (tmp_path / "sweep").exists()


class FakeRuns:
    """Stands in for the child `fedprge run`: writes a run directory, or dies half-way."""

    def __init__(self, fail=()):
        self.fail, self.ran = set(fail), []

    def __call__(self, config, overrides, point, out):
        self.ran.append(point.name)
        run = out / point.name
        run.mkdir()
        write_json(run / "config.json", {"q": int(dict(point.values)["q"])})
        (run / "metrics.jsonl").write_text('{"round": 0, "test_acc": 0.5, "test_acc_cal": 0.5}\n')
        if point.name in self.fail:
            return 1, 0.1
        write_json(run / "summary.json", {"final_acc": 0.5, "final_acc_cal": 0.5})
        return 0, 0.1


def statuses(out):
    return [(p["name"], p["status"], p.get("exit_code")) for p in
            json.loads((out / "sweep.json").read_text())["points"]]


def test_failed_points_are_recorded_and_resumed_without_losing_anything(tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    first = FakeRuns(fail={"q=4"})
    monkeypatch.setattr(sweep_mod, "_run_point", first)
    assert run_sweep(None, ["q=2,4,8"], ["rounds=1"], out, quiet=True) == 1
    assert first.ran == ["q=2", "q=4", "q=8"]  # the failure did not stop the sweep
    assert statuses(out) == [("q=2", "done", 0), ("q=4", "failed", 1), ("q=8", "done", 0)]

    second = FakeRuns()
    monkeypatch.setattr(sweep_mod, "_run_point", second)
    assert run_sweep(None, ["q=2,4,8"], ["rounds=1"], out, quiet=True) == 0
    assert second.ran == ["q=4"]
    assert statuses(out) == [("q=2", "skipped", None), ("q=4", "done", 0), ("q=8", "skipped", None)]
    assert (out / "q=4.incomplete-1" / "metrics.jsonl").is_file()  # the dead attempt is kept

    (out / "q=4" / "summary.json").unlink()  # killed again: the next name is free, never reused
    monkeypatch.setattr(sweep_mod, "_run_point", FakeRuns())
    assert run_sweep(None, ["q=2,4,8"], ["rounds=1"], out, quiet=True) == 0
    assert sorted(p.name for p in out.glob("q=4.incomplete-*")) == ["q=4.incomplete-1", "q=4.incomplete-2"]
    state = json.loads((out / "sweep.json").read_text())
    assert state["points"][1]["incomplete"] == ["q=4.incomplete-1", "q=4.incomplete-2"]


def test_a_resume_cannot_mix_two_sweeps(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_mod, "_run_point", FakeRuns())
    config = tmp_path / "base.toml"
    config.write_text("rounds = 1\n")
    out = tmp_path / "sweep"
    assert run_sweep(str(config), ["q=2,4"], ["lr=0.1"], out, quiet=True) == 0
    for grid, overrides, what in ((["q=2,8"], ["lr=0.1"], "grid"),
                                  (["q=2,4"], ["lr=0.2"], "--set overrides")):
        with pytest.raises(SweepError, match=f"holds a different sweep \\(its {what} differs\\)"):
            run_sweep(str(config), grid, overrides, out, quiet=True)
    config.write_text("rounds = 2\n")
    with pytest.raises(SweepError, match="its config file differs"):
        run_sweep(str(config), ["q=2,4"], ["lr=0.1"], out, quiet=True)
    (tmp_path / "a-run").mkdir()
    (tmp_path / "a-run" / "metrics.jsonl").write_text("")
    with pytest.raises(SweepError, match="is not a sweep directory"):
        run_sweep(None, ["q=2"], [], tmp_path / "a-run", quiet=True)
    assert sorted(p.name for p in (tmp_path / "a-run").iterdir()) == ["metrics.jsonl"]  # untouched


def test_two_sweeps_cannot_share_a_directory_at_once(tmp_path):
    held = sweep_mod._lock(tmp_path)
    try:
        with pytest.raises(SweepError, match="another sweep is running"):
            sweep_mod._lock(tmp_path)
    finally:
        os.close(held)
    os.close(sweep_mod._lock(tmp_path))  # released with its holder


def test_cli_sweep_errors_are_one_line_exit_2(tmp_path):
    for args, message in ((["--grid", "nope=1"], "point nope=1: unknown config key 'nope'"),
                          ([], "at least one --grid")):
        proc = fedprge("sweep", *args, "--out", str(tmp_path / "sweep"))
        assert proc.returncode == 2, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("fedprge:")]
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "sweep").exists()


SMALL = ["--set", "model=tiny", "--set", "engine=eager", "--set", "rounds=2", "--set", "num-clients=4",
         "--set", "clients-per-round=2", "--set", "local-steps=1", "--set", "lr=0.05",
         "--set", "eval-every=1", "--set", "eval-size=16", "--set", "personal-steps=0",
         "--set", "client-eval-size=0", "--set", "batch-size=4", "--set", "partition=iid"]


def test_real_sweep_resumes_and_feeds_report_and_plot(tmp_path):
    out = tmp_path / "sweep"
    args = ["sweep", *SMALL, "--grid", "q=2,4", "--out", str(out)]
    proc = fedprge(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert all((out / name / "summary.json").is_file() for name in ("q=2", "q=4"))
    assert statuses(out) == [("q=2", "done", 0), ("q=4", "done", 0)]

    (out / "q=4" / "summary.json").unlink()  # as if the run had been killed before its end
    proc = fedprge(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "q=2: skipped" in proc.stdout
    assert statuses(out) == [("q=2", "skipped", None), ("q=4", "done", 0)]
    aside = out / "q=4.incomplete-1"
    assert aside.is_dir() and not (aside / "summary.json").exists()
    # the rerun is the same run: same seed, same adapter after every round
    hashes = [[m["theta_hash"] for m in read_jsonl(d / "metrics.jsonl")] for d in (aside, out / "q=4")]
    assert hashes[0] == hashes[1]

    report = fedprge("report", str(out))
    assert report.returncode == 0, report.stderr
    rows = report.stdout.splitlines()[2:]
    assert [r.split(" | ")[0] for r in rows] == ["| q=2", "| q=4"]
    assert all("| prge | mean | " in r for r in rows)
    plots = fedprge("plot", str(out))
    assert plots.returncode == 0, plots.stderr
    assert plots.stdout.split() == [str(out / n) for n in ("acc_vs_bytes_up.png", "acc_vs_bytes.png",
                                                           "acc_vs_round.png", "acc_vs_time.png")]
