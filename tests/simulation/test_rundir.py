"""Run directories: a new run claims an absent or empty one, and refuses anything else as is."""

import os

import pytest

from clients.runconfig import ConfigError
from simulation.rundir import claim_run_dir


def test_a_refused_directory_is_left_as_it_was(tmp_path):
    (tmp_path / "notes.txt").write_text("the user's")
    with pytest.raises(ConfigError, match="already exists and is not empty"):
        claim_run_dir(tmp_path / "runs", "run", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no .lock left behind


def test_a_directory_holding_only_a_free_lock_counts_as_empty(tmp_path):
    first, lock = claim_run_dir(tmp_path, "run", tmp_path / "out")
    os.close(lock)  # that command ended before writing anything
    again, lock = claim_run_dir(tmp_path, "run", tmp_path / "out")
    os.close(lock)
    assert again == first and [p.name for p in again.iterdir()] == [".lock"]
