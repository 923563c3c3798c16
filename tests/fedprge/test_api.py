"""The Python API (`import fedprge`): one tiny federated run through it, read back every way the
API offers, and the headline-figure example drawn from it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

import fedprge
from simulation.rundir import read_jsonl

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 3
# tests/simulation/test_federated.py's FED, as keywords, evaluated every round
TINY = dict(model="tiny", engine="eager", rounds=ROUNDS, num_clients=6, clients_per_round=2,
            local_steps=2, q=4, lr=0.05, eval_every=1, eval_size=32, personal_steps=1,
            client_eval_size=8, batch_size=8, partition="iid")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> fedprge.RunResult:
    out = tmp_path_factory.mktemp("api") / "run"
    return fedprge.run(fedprge.load_config(**TINY), out=out)


def _copy(run: Path, dest: Path, **config) -> Path:
    """The run under another name, its config.json edited: a run that differs in `config`."""
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("devices", ".lock"))
    cfg = json.loads((dest / "config.json").read_text())
    (dest / "config.json").write_text(json.dumps({**cfg, **config}))
    return dest


def test_run_result_is_the_run_directory(tiny_run):
    d = tiny_run.dir
    assert d.name == "run" and d.is_absolute()
    assert tiny_run.summary == json.loads((d / "summary.json").read_text())
    assert tiny_run.metrics == read_jsonl(d / "metrics.jsonl")
    assert tiny_run.config == json.loads((d / "config.json").read_text())
    assert tiny_run.config["rounds"] == ROUNDS and tiny_run.config["clients-per-round"] == 2
    assert [m["round"] for m in tiny_run.metrics] == list(range(ROUNDS + 1))
    assert [m["round"] for m in tiny_run.evals] == list(range(ROUNDS + 1))
    assert tiny_run.metrics_path == d / "metrics.jsonl"
    assert len(read_jsonl(tiny_run.update_log_path)) == tiny_run.summary["log_len"]
    assert len(json.loads(tiny_run.clients_path.read_text())) == 6
    assert tiny_run.checkpoint_path.is_file() and tiny_run.final_theta_path.is_file()
    assert fedprge.RunResult.from_dir(d) == tiny_run


def test_a_finished_run_is_not_resumed_and_run_takes_a_config(tiny_run):
    with pytest.raises(fedprge.ConfigError, match="already finished"):
        fedprge.resume(tiny_run.dir)
    with pytest.raises(TypeError, match="load_config"):
        fedprge.run("configs/run-tiny.toml")


def test_load_config_keywords_are_the_keys_with_underscores():
    cfg = fedprge.load_config(ROOT / "configs" / "run-tiny.toml", rounds=7, clients_per_round=2,
                              strategy="trimmed-mean", strategy_args={"trim": 0.1},
                              targets=["q", "v"], round_deadline_s="auto")
    assert isinstance(cfg, fedprge.Config)
    assert (cfg.model, cfg.rounds, cfg.clients_per_round, cfg.num_clients) == ("tiny", 7, 2, 8)
    assert cfg.strategy_args == {"trim": 0.1} and cfg.targets == ["q", "v"]
    one = fedprge.load_config(**{"strategy_args.trim": 0.2, "strategy_args.tag": "1"})
    assert one.strategy_args == {"trim": 0.2, "tag": "1"}  # a string stays a string
    # the same config the command line builds from the same settings
    assert fedprge.load_config(**TINY) == fedprge.load_config(
        **{k.replace("_", "-"): str(v) for k, v in TINY.items()})


@pytest.mark.parametrize("overrides, message", [
    ({"batch_sise": 8}, "unknown config key 'batch-sise' (did you mean 'batch-size'?)"),
    ({"clients_per_round": 30}, "clients-per-round=30 must be between 1 and num-clients (20)"),
    ({"q": 1.5}, "q='1.5' is not a valid int"),
    ({"rounds": None}, "rounds=None is not a value"),
])
def test_load_config_mistakes_are_one_sentence(overrides, message):
    with pytest.raises(fedprge.ConfigError) as err:
        fedprge.load_config(**overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_sweep_grid_is_the_command_lines_grid(tmp_path):
    from fedprge.api import _grid_items
    from simulation.sweep import expand_points, parse_grid

    api = parse_grid(_grid_items({"local_steps": [2, 8], "lr": [0.05], "targets": [["q", "v"], "head"]}))
    cli = parse_grid(["local-steps=2,8", "lr=0.05", 'targets=["q,v","head"]'])
    assert api == cli
    assert [p.name for p in expand_points(api)][:2] == ["local-steps=2_lr=0.05_targets=q,v",
                                                        "local-steps=2_lr=0.05_targets=head"]
    # every point is checked before any runs: nothing is written
    with pytest.raises(fedprge.SweepError, match="point q=x: q='x' is not a valid int"):
        fedprge.sweep(grid={"q": [4, "x"]}, out=tmp_path / "sweep", overrides={"model": "tiny"})
    with pytest.raises(fedprge.SweepError, match="q=None is not a value"):
        fedprge.sweep(grid={"q": [None]}, out=tmp_path / "sweep")
    assert not (tmp_path / "sweep").exists()


def test_dataframe_has_one_row_per_evaluated_round(tiny_run):
    from simulation.plot import _x_bytes

    runs = fedprge.load_runs(tiny_run.dir)  # one path, or a list of them
    assert len(runs) == 1 and [r.path for r in runs] == [tiny_run.dir]
    df = runs.to_dataframe()
    assert tuple(df.columns) == fedprge.Runs.COLUMNS  # nothing varies: no config column
    assert list(df["round"]) == [m["round"] for m in tiny_run.evals]
    assert set(df["run"]) == {"run"} and set(df["seed"]) == {0}
    assert list(df["acc_cal"]) == [m["test_acc_cal"] for m in tiny_run.evals]
    for col in ("bytes_up", "bytes_down"):
        assert df[col].iloc[0] == 0 and df[col].is_monotonic_increasing
        assert df[col].iloc[-1] == tiny_run.summary[col]
    # the running total `fedprge plot` draws (up + down), record by record
    total = (df["bytes_up"] + df["bytes_down"]).astype(float)
    assert dict(zip(df["round"], total, strict=True)) == {
        0: 0.0, **{tiny_run.metrics[i]["round"]: x for i, x in _x_bytes(runs[0]).items()}}


def test_a_config_key_is_a_column_only_where_it_varies(tiny_run, tmp_path):
    seed1 = _copy(tiny_run.dir, tmp_path / "seed1", seed=1)
    other = _copy(tiny_run.dir, tmp_path / "lr", **{"lr": 0.1, "strategy-args": {"trim": 0.2}})
    df = fedprge.load_runs([tiny_run.dir, seed1]).to_dataframe()
    assert tuple(df.columns) == fedprge.Runs.COLUMNS  # seed is always a column, never twice
    assert df.groupby("run")["seed"].first().to_dict() == {"run": 0, "seed1": 1}
    runs = fedprge.load_runs([tiny_run.dir, seed1, other])
    df = runs.to_dataframe()
    assert list(df.columns) == [*fedprge.Runs.COLUMNS, "lr", "strategy-args.trim"]
    assert df.groupby("run")["lr"].first().to_dict() == {"run": 0.05, "seed1": 0.05, "lr": 0.1}
    assert len(df) == 3 * (ROUNDS + 1) and len(runs[1:]) == 2
    assert [r.label for r in runs] == ["lr=0.05 seed=0", "lr=0.05 seed=1",
                                       "lr=0.1 seed=0 strategy-args.trim=0.2"]


def test_import_fedprge_starts_neither_flower_nor_ray():
    code = ("import sys, fedprge\n"
            "light = not any(m.split('.')[0] in ('torch', 'flwr', 'ray') for m in sys.modules)\n"
            "fedprge.Config, fedprge.Strategy, fedprge.ConfigError, fedprge.RunError\n"
            "cfg = fedprge.load_config(model='tiny')\n"
            "print(light, sorted({m.split('.')[0] for m in sys.modules} & {'flwr', 'ray'}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True", "[]"]
    assert fedprge.__version__ == version("fedprge")
    assert fedprge.Strategy.__name__ == "ScalarStrategy" and set(fedprge.__all__) <= set(dir(fedprge))


def test_headline_figure_example(tiny_run, tmp_path):
    seed1 = _copy(tiny_run.dir, tmp_path / "seed1", seed=1)
    png = tmp_path / "fig" / "headline.png"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "headline_figure.py"),
                           str(tiny_run.dir), str(seed1), "--out", str(png)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == str(png)
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 20_000
