"""The private SuperLink and the Flower App that `fedprge run` writes for each run."""

import json
import socket
import sys
from pathlib import Path

import psutil
import pytest
from flwr.cli.config_utils import load_and_validate

from clients.runconfig import config_from_flower, load_config
from simulation import flower_runtime
from simulation.flower_runtime import RuntimeStartError, local_superlink, write_app


def _superlinks(work) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline", "status"])
            if p.info["status"] != psutil.STATUS_ZOMBIE
            and str(work) in " ".join(p.info["cmdline"] or [])]


def test_the_app_carries_the_resolved_config_through_flowers_parser(tmp_path):
    cfg = load_config(None, ["model=tiny", 'template=Say "yes" or\n"no": {text} \\ é',
                             "targets=q,v", "strategy-args.trim=0.1"])
    app = write_app(tmp_path / "app", {"config-json": json.dumps(cfg.to_dict()),
                                       "run-dir": str(tmp_path / "run"), "resume": True,
                                       "owner-pid": 4321})
    config, warnings = load_and_validate(app / "pyproject.toml")  # what `flwr run` checks
    assert config is not None and warnings == []
    got = config_from_flower(config["tool"]["flwr"]["app"]["config"])
    assert got.cfg == cfg and got.run_dir == tmp_path / "run"
    assert got.resume is True and got.owner_pid == 4321


def test_a_superlink_that_cannot_bind_its_port_is_one_clear_error(tmp_path, monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setattr(flower_runtime, "_free_port", lambda: taken.getsockname()[1])
        with pytest.raises(RuntimeStartError, match="exited at start.*address already in use"):
            with local_superlink(tmp_path, tmp_path / "flower.log", {}):
                pass
    assert _superlinks(tmp_path) == []


def test_a_superlink_is_stopped_when_its_block_ends(tmp_path):
    with local_superlink(tmp_path, tmp_path / "flower.log", {}) as link:
        assert link.proc.poll() is None
        children = psutil.Process(link.proc.pid).children(recursive=True)
    assert link.proc.poll() is not None
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    assert _superlinks(tmp_path) == []


def test_flowers_tools_are_taken_from_this_environment():
    assert Path(flower_runtime._tool("flwr")).parent == Path(sys.executable).parent
    with pytest.raises(RuntimeStartError, match="not installed"):
        flower_runtime._tool("no-such-flower-tool")
