"""Resuming a run directory from someone else never runs code it names, and a resume that races
the run's finish refuses once it holds the directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import simulation.runner as runner
from clients.runconfig import ConfigError, load_config
from simulation.cli import main
from simulation.rundir import hold_run_dir, write_json

EVIL = "from pathlib import Path\nPath(__file__).with_name('pwned').touch()\n"


def _run_dir(tmp_path, strategy: str):
    run = tmp_path / "received"
    run.mkdir(parents=True)
    write_json(run / "config.json",
               load_config(None, ["model=tiny", "engine=eager", f"strategy={strategy}"]).to_dict())
    (run / "evilmod.py").write_text(EVIL + "class Evil:\n    pass\n")
    return run


def _resume(run, *extra):
    return subprocess.run([sys.executable, "-m", "simulation.cli", "run", "--resume", str(run),
                           *extra], capture_output=True, text=True, cwd=run, timeout=300)


def test_resuming_never_imports_a_strategy_the_run_directory_names(tmp_path):
    """From inside the received directory (where its module would resolve first), a plug-in
    strategy is refused with one line unless named on the command line; the module never runs
    (it did: the loader imported it, and the sentinel file appeared)."""
    run = _run_dir(tmp_path, "evilmod:Evil")
    proc = _resume(run)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "uses the plug-in strategy 'evilmod:Evil'" in proc.stderr
    assert "--trust-strategy evilmod:Evil" in proc.stderr
    assert not (run / "pwned").exists()
    proc = _resume(run, "--trust-strategy", "othermod:Other")  # not the one it names
    assert proc.returncode == 2 and not (run / "pwned").exists()


def test_a_named_strategy_is_trusted_and_a_built_in_needs_nothing(tmp_path):
    run = _run_dir(tmp_path, "evilmod:Evil")
    assert runner.resume_config(run, trust_strategy="evilmod:Evil").strategy == "evilmod:Evil"
    built_in = _run_dir(tmp_path / "b", "median")
    assert runner.resume_config(built_in).strategy == "median"
    with pytest.raises(ConfigError, match="drop --trust-strategy"):
        runner.resume_config(built_in, trust_strategy="evilmod:Evil")


def _never_started(*args, **kwargs):
    raise AssertionError("the simulation was started")


def test_a_run_that_finishes_before_the_resume_holds_its_lock_is_not_run_again(
        tmp_path, monkeypatch):
    """resume_config saw an unfinished run; the run then finished (and let go of its lock)
    before the resume took it. Checked once more under the lock, the resume stops before
    starting anything (it went on to run personalization again and rewrite summary.json)."""
    run = _run_dir(tmp_path, "mean")
    cfg = runner.resume_config(run)  # unfinished: passes
    (run / "summary.json").write_text(json.dumps({"rounds": 1}))  # the run finishes meanwhile
    monkeypatch.setattr(runner, "_run_in", _never_started)
    with pytest.raises(ConfigError, match="has already finished"):
        runner.run_federated(cfg, resume=run)
    assert json.loads((run / "summary.json").read_text()) == {"rounds": 1}


def test_a_checkpoint_damaged_before_the_resume_holds_its_lock_stops_it_and_frees_the_lock(
        tmp_path, monkeypatch):
    run = _run_dir(tmp_path, "mean")
    cfg = runner.resume_config(run)  # no checkpoint yet: passes
    (run / "checkpoint.json").write_text("{")
    monkeypatch.setattr(runner, "_run_in", _never_started)
    with pytest.raises(ConfigError, match="cannot be read"):
        runner.run_federated(cfg, resume=run)
    os.close(hold_run_dir(run))  # free again: the refused resume does not keep the run locked


@pytest.fixture
def cli(monkeypatch):
    """simulation.cli.main, with the environment variable it sets restored afterwards."""
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    return main


def test_the_command_line_passes_the_trusted_strategy_on(tmp_path, monkeypatch, cli):
    run = _run_dir(tmp_path, "evilmod:Evil")
    started = {}
    monkeypatch.setattr(runner, "run_federated", lambda cfg, **kw: started.update(cfg=cfg, **kw))
    assert cli(["run", "--resume", str(run), "--trust-strategy", "evilmod:Evil", "--quiet"]) == 0
    assert started["cfg"].strategy == "evilmod:Evil" and started["resume"] == str(run)


def test_trust_strategy_goes_with_resume_only(capsys, cli):
    assert cli(["run", "--trust-strategy", "evilmod:Evil"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedprge: error: --trust-strategy goes with --resume") and err.count("\n") == 1


def test_an_unknown_name_is_refused_as_unknown_not_as_a_plugin_to_trust(
        tmp_path, monkeypatch, capsys, cli):
    """Only module:Class imports code; another name the loader does not know is refused as such
    (advice to trust it would not help: the loader refuses it then too)."""
    run = _run_dir(tmp_path, "median-of-means")
    monkeypatch.setattr(runner, "_run_in", _never_started)
    assert cli(["run", "--resume", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "unknown strategy 'median-of-means'" in err and "--trust-strategy" not in err
