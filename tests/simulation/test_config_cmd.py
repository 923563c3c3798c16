"""`fedprge config show|validate`."""

from clients.runconfig import load_config
from simulation.cli import main

SETS = ["--set", "seed=3", "--set", "strategy-args.trim=0.1", "--set",
        "template=Say \"yes\": {text}", "--set", "label-words=[\" no\", \" yes\"]"]


def test_show_prints_toml_that_reads_back_to_the_same_config(tmp_path, capsys):
    assert main(["config", "show", "--config", "configs/demo.toml", *SETS]) == 0
    shown = capsys.readouterr().out
    saved = tmp_path / "resolved.toml"
    saved.write_text(shown)
    overrides = [a for a in SETS if a != "--set"]
    assert load_config(saved) == load_config("configs/demo.toml", overrides)
    lines = dict(line.split(" = ", 1) for line in shown.splitlines())
    assert lines["seed"].endswith("# --set") and lines["rounds"].endswith("# configs/demo.toml")
    assert lines["strategy-args"].endswith("# --set") and lines["mode"].endswith("# default")


def test_validate_says_ok_or_names_the_mistake_in_one_line(capsys):
    assert main(["config", "validate", "--config", "configs/demo.toml", "--set", "seed=1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: ") and "from configs/demo.toml, 1 from --set" in out
    assert main(["config", "validate", "--set", "round=3"]) == 2
    err = capsys.readouterr().err
    assert err == "fedprge: error: unknown config key 'round' (did you mean 'rounds'?)\n"


def test_keys_the_command_does_not_read_are_named(capsys):
    import argparse

    from simulation.cli import _warn_unused
    from simulation.config_cmd import unused_keys

    # a federated config handed to `train`: its federation keys do nothing there
    assert {"rounds", "num-clients", "local-steps"} <= set(
        unused_keys("train", "configs/demo.toml", []))
    assert unused_keys("run", "configs/demo.toml", ["steps=5"]) == ["steps"]
    assert unused_keys("run", "configs/demo.toml", []) == []  # every shipped key is read
    _warn_unused("train", argparse.Namespace(config=None, overrides=["rounds=5", "q=4"]))
    assert capsys.readouterr().err == (
        "fedprge: warning: `fedprge train` does not use rounds (use steps)\n")
    # one meaning per key: evaluations are counted in rounds by `run`, in steps by `train`
    _warn_unused("train", argparse.Namespace(config=None, overrides=["eval-every=5", "lr=0.1"]))
    assert capsys.readouterr().err == (
        "fedprge: warning: `fedprge train` does not use eval-every (use eval-every-steps)\n")
    assert unused_keys("run", "configs/train-mr.toml", []) == ["eval-every-steps", "steps"]
