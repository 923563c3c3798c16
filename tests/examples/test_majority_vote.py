"""The example custom strategy: its rule, and a whole `fedprge run` that loads it by dotted path."""

import json

import numpy as np
import pytest

from examples.majority_vote import MajorityVote
from strategies import ScalarReply
from strategies.loader import StrategyError, load_strategy
from tests.simulation.test_cli import fedprge
from tests.simulation.test_federated import FED


def _reply(pid, grads):
    return ScalarReply(pid, np.asarray(grads, dtype=np.float64), 10, 0.5)


def test_majority_sign_times_median_magnitude():
    s = MajorityVote(scale=0.5)
    replies = [_reply(0, [1.0, -2.0, 3.0, 1.0]), _reply(1, [2.0, -1.0, -1e6, -1.0]),
               _reply(2, [4.0, 5.0, 2.0, 0.0])]
    # seed 2: one huge negative scalar is outvoted; seed 3: one up, one down, one zero -> tie
    np.testing.assert_allclose(s.aggregate(1, replies), [1.0, -1.0, 1.5, 0.0])
    assert s.summary() == {"scale": 0.5, "tied_seeds": 1}


def test_bad_argument_is_a_one_line_error():
    with pytest.raises(StrategyError, match="scale must be > 0"):
        load_strategy("examples.majority_vote:MajorityVote", scale=-1)


def test_federated_run_with_the_example_strategy(tmp_path):
    out = tmp_path / "run"
    proc = fedprge("run", *FED, "--set", "strategy=examples.majority_vote:MajorityVote",
                   "--set", "strategy-args.scale=0.5", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["strategy"] == "examples.majority_vote:MajorityVote"
    assert summary["strategy_summary"]["scale"] == 0.5
    config = json.loads((out / "config.json").read_text())
    assert config["strategy-args"] == {"scale": 0.5}
    assert "tied_seeds" in summary["strategy_summary"]  # the instance the server aggregated with
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(r.get("replies", 0) for r in rows) == 4 * 2  # rounds x clients per round
    assert summary["log_len"] == 4 * 2 * 4  # rounds x K x q seeds, each aggregated by the vote
