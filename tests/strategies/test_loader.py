"""What counts as a plug-in strategy, and where one is imported from: the user's own module in
the working directory loads, and the directory does not stay on the import path afterwards."""

import importlib.util
import sys

import pytest

import strategies.loader as loader
from strategies.mean import WeightedMean

PLUGIN = "from strategies.mean import WeightedMean\n\n\nclass Mine(WeightedMean):\n    pass\n"


@pytest.fixture
def working_dir(tmp_path, monkeypatch):
    """tmp_path as the working directory, holding a plug-in and a module nothing should import;
    sys.path and sys.modules are restored afterwards."""
    (tmp_path / "user_plugin_strategy.py").write_text(PLUGIN)
    (tmp_path / "only_in_working_dir.py").write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "user_plugin_strategy", raising=False)
    return tmp_path


def test_a_plugin_in_the_working_directory_loads_and_the_directory_is_not_left_on_the_path(
        working_dir):
    """Left on sys.path, the working directory would supply any module the process imports later
    and finds nowhere else (an optional package, say) from whatever directory the command runs in."""
    strategy = loader.load_strategy("user_plugin_strategy:Mine", server_lr=0.5)
    assert isinstance(strategy, WeightedMean) and strategy.server_lr == 0.5
    assert str(working_dir) not in sys.path
    assert importlib.util.find_spec("only_in_working_dir") is None
    with pytest.raises(loader.StrategyError, match="cannot import 'absent_module'"):
        loader.load_strategy("absent_module:Cls")
    assert str(working_dir) not in sys.path


def test_only_module_colon_class_names_a_plugin():
    """A plug-in is what the loader would import; a built-in or an unknown name imports nothing."""
    assert not any(loader.is_plugin(name) for name in loader.BUILT_IN)
    assert loader.is_plugin("package.module:ClassName")
    assert not loader.is_plugin("median-of-means")
