import pytest

from clients.runconfig import Config, ConfigError, load_config


def test_defaults_validate_and_round_trip_to_kebab_case():
    cfg = load_config()
    assert cfg.q == 4 and cfg.model == "smollm2-135m"
    d = cfg.to_dict()
    assert d["batch-size"] == 16 and "batch_size" not in d


def test_a_bare_run_is_the_demos_setting_that_learns():
    """`fedprge run` with no config trains what the demo trains (the last layer's adapter at the
    step size that learns it); the demo only narrows the data and evaluates on more examples."""
    from pathlib import Path

    bare = load_config().to_dict()
    demo = load_config(Path(__file__).resolve().parents[2] / "configs" / "demo.toml").to_dict()
    differ = {key for key in bare if bare[key] != demo[key]}
    assert differ == {"train-size", "prefix-cache-fill", "eval-size"}


def test_a_renamed_key_names_its_new_name_and_saved_runs_still_read():
    from clients.runconfig import config_from_mapping

    with pytest.raises(ConfigError, match="config key 'out' is now 'runs-dir'"):
        load_config(None, ["out=elsewhere"])
    assert config_from_mapping({"out": "elsewhere"}, saved=True).runs_dir == "elsewhere"


def test_toml_then_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('model = "tiny"\nq = 4\neps = 0.001\ntargets = ["q", "v"]\n')
    cfg = load_config(path, ["q=8", "lr=2e-3", 'label-words=[" no", " yes"]', "targets=head,down"])
    assert (cfg.model, cfg.q, cfg.eps, cfg.lr) == ("tiny", 8, 0.001, 2e-3)
    assert cfg.label_words == [" no", " yes"]
    assert cfg.targets == ["down", "head"]


@pytest.mark.parametrize("overrides, message", [
    (["qq=1"], "unknown config key 'qq'"),
    (["batch_size=3"], "did you mean 'batch-size'"),
    (["round=5"], "unknown config key 'round' (did you mean 'rounds'?)"),
    (["clients-per-rnd=2"], "did you mean 'clients-per-round'"),
    (["q=two"], "q='two' is not a valid int"),
    (["eps=abc"], "eps='abc' is not a valid float"),
    (["q=0"], "q=0 must be >= 1"),
    (["eps=0"], "eps=0.0 must be > 0"),
    (["mode=diagonal"], "mode='diagonal'"),
    (["targets=q,zz"], "unknown adapter target 'zz'"),
    (["template=no placeholder"], "must contain {text}"),
    (["q"], "must look like key=value"),
    (["quantize=int2"], "quantize='int2' must be one of none, int8, int4"),
    (["engine=eager", "quantize=int8"], "quantize='int8' needs engine=executorch"),
    (["program-cache-gib=0"], "program-cache-gib=0.0 must be > 0"),
    (["suffix-layout=dense"], "suffix-layout='dense' must be packed or padded"),
])
def test_user_mistakes_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_an_unknown_key_far_from_every_key_gets_no_guess():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["learning-rate=1"])
    assert str(err.value) == "unknown config key 'learning-rate'"


def test_toml_type_errors_and_missing_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('q = "4"\n')
    with pytest.raises(ConfigError, match="q='4' is not a valid int"):
        load_config(path)
    path.write_text("q = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_every_shipped_config_is_valid():
    from pathlib import Path

    shipped = sorted(Path(__file__).resolve().parents[2].joinpath("configs").glob("*.toml"))
    assert shipped
    for path in shipped:
        assert isinstance(load_config(path), Config)


def test_the_flower_apps_run_config_declares_every_key_at_its_default_but_the_quick_tours():
    """`flwr run .` starts from pyproject.toml's [tool.flwr.app.config] and refuses a
    --run-config key it does not declare: every key is there, parses, and holds `fedprge run`'s
    default except the few FLOWER_APP changes (the block is generated; test_reference checks it
    is current)."""
    import tomllib
    from dataclasses import fields
    from pathlib import Path

    from clients.runconfig import Config, config_from_flower
    from simulation.flower_app_config import FLOWER_APP

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    declared = tomllib.loads(pyproject.read_text())["tool"]["flwr"]["app"]["config"]
    assert sorted(declared) == sorted(f.name.replace("_", "-") for f in fields(Config))
    cfg = config_from_flower(declared).cfg  # raises ConfigError on an unknown key or bad value
    defaults = Config()
    for f in fields(Config):
        key = f.name.replace("_", "-")
        want = FLOWER_APP.get(key, getattr(defaults, f.name))
        assert getattr(cfg, f.name) == want, key
    assert cfg.model == "tiny" and cfg.rounds == 3  # the tour is quick
