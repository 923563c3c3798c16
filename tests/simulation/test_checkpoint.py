"""Reading checkpoints back: a checkpoint.json from disk is untrusted data, so anything that does
not fit its schema stops a resume with a one-sentence CheckpointError, never a traceback or a
value that breaks a later round."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulation.checkpoint import (
    CHECKPOINT,
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)

# no deadline: timings on a shared machine vary; each example writes and reads two small files
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=4), inner, max_size=4), max_leaves=8)


def _checkpoint(**changes) -> Checkpoint:
    fields = dict(round=3, theta=np.array([0.5, -1.0, 2.0], dtype=np.float32), log_len=12,
                  metrics_lines=4, held={0: 12, 5: 8}, totals={"bytes_up": 100, "late": 0.5},
                  strategy_state={"clipped": 2}, zero_eval={"test_acc": 0.5},
                  last_eval={"test_acc": 0.75, "test_loss": 0.6}, elapsed_s=12.5)
    return Checkpoint(**{**fields, **changes})


def _saved(run_dir: Path, **changes) -> dict:
    """Save a valid checkpoint and return its JSON record, with `changes` written over it."""
    save_checkpoint(run_dir, _checkpoint())
    record = {**json.loads((run_dir / CHECKPOINT).read_text()), **changes}
    (run_dir / CHECKPOINT).write_text(json.dumps(record))
    return record


def _finite_numbers(d) -> bool:
    return isinstance(d, dict) and all(
        isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
        and math.isfinite(v) for k, v in d.items())


def _count(n) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 0


def _fits_schema(c: Checkpoint) -> bool:
    return (_count(c.round) and _count(c.log_len) and _count(c.metrics_lines)
            and all(_count(p) and _count(n) for p, n in c.held.items())
            and _finite_numbers(c.totals) and _finite_numbers(c.zero_eval)
            and _finite_numbers(c.last_eval)
            and isinstance(c.theta, np.ndarray) and c.theta.dtype == np.float32
            and c.theta.ndim == 1 and np.isfinite(c.theta).all()
            and isinstance(c.elapsed_s, float) and math.isfinite(c.elapsed_s) and c.elapsed_s >= 0
            and (c.strategy_state is None or isinstance(c.strategy_state, dict))
            and isinstance(c.deadline_slowest_s, float) and math.isfinite(c.deadline_slowest_s)
            and c.deadline_slowest_s >= 0
            and (c.log_hash is None or isinstance(c.log_hash, str))
            and all(_count(p) for p in c.unsure) and _count(c.consecutive_failed))


def test_a_checkpoint_round_trips_with_the_fields_added_later(tmp_path):
    saved = _checkpoint(deadline_slowest_s=4.25, log_hash="0a1b2c", unsure=[5, 2],
                        consecutive_failed=2)
    save_checkpoint(tmp_path, saved)
    back = load_checkpoint(tmp_path)
    assert (back.round, back.log_len, back.metrics_lines, back.held) == (3, 12, 4, {0: 12, 5: 8})
    assert back.totals == {"bytes_up": 100, "late": 0.5} and back.strategy_state == {"clipped": 2}
    assert (back.zero_eval, back.last_eval, back.elapsed_s) == (saved.zero_eval, saved.last_eval,
                                                                12.5)
    assert (back.deadline_slowest_s, back.log_hash, back.unsure, back.consecutive_failed) == (
        4.25, "0a1b2c", [5, 2], 2)
    np.testing.assert_array_equal(back.theta, saved.theta)
    assert _fits_schema(back)


def test_a_checkpoint_from_before_the_added_fields_gets_their_defaults(tmp_path):
    record = _saved(tmp_path)
    for key in ("deadline_slowest_s", "log_hash", "unsure", "consecutive_failed"):
        del record[key]
    (tmp_path / CHECKPOINT).write_text(json.dumps(record))
    back = load_checkpoint(tmp_path)
    assert (back.deadline_slowest_s, back.log_hash, back.unsure, back.consecutive_failed) == (
        0.0, None, [], 0)


@pytest.mark.parametrize(("field", "value"), [
    ("round", "3"), ("round", -1), ("round", True), ("round", 2.5),
    ("log_len", None), ("metrics_lines", -2),
    ("held", {"0": "x"}), ("held", {"zero": 3}), ("held", {"0": -1}), ("held", [1, 2]),
    ("totals", {"bytes_up": "many"}), ("totals", {"bytes_up": float("nan")}),
    ("zero_eval", {"test_acc": None}), ("last_eval", "good"),
    ("elapsed_s", -1.0), ("elapsed_s", float("inf")), ("elapsed_s", "1"),
    ("strategy_state", [1]), ("theta", "../checkpoint-3.npy"), ("theta", 7),
    ("deadline_slowest_s", -0.5), ("log_hash", "not hex"), ("log_hash", 12),
    ("unsure", [1, "2"]), ("unsure", {"1": 1}), ("consecutive_failed", -1),
])
def test_a_field_that_breaks_its_schema_is_one_sentence_naming_file_and_field(
        tmp_path, field, value):
    _saved(tmp_path, **{field: value})
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path)
    message = str(err.value)
    assert str(tmp_path / CHECKPOINT) in message and repr(field) in message
    assert "\n" not in message


@pytest.mark.parametrize("field", ["round", "theta", "log_len", "metrics_lines", "held",
                                   "totals", "strategy_state", "zero_eval", "last_eval",
                                   "elapsed_s"])
def test_a_missing_field_names_the_field(tmp_path, field):
    record = _saved(tmp_path)
    del record[field]
    (tmp_path / CHECKPOINT).write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match=f"'{field}'"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(("name", "theta"), [
    ("nan", np.array([0.0, np.nan], dtype=np.float32)),
    ("float64", np.zeros(3, dtype=np.float64)),
    ("2-D", np.zeros((2, 2), dtype=np.float32)),
])
def test_a_theta_file_that_is_not_finite_1d_float32_is_refused(tmp_path, name, theta):
    save_checkpoint(tmp_path, _checkpoint(theta=theta))
    with pytest.raises(CheckpointError, match="'theta'"):
        load_checkpoint(tmp_path)


def test_a_theta_file_that_is_missing_or_not_an_array_is_refused(tmp_path):
    _saved(tmp_path)
    (tmp_path / "checkpoint-3.npy").write_bytes(b"not an array")
    with pytest.raises(CheckpointError, match="'theta'"):
        load_checkpoint(tmp_path)
    (tmp_path / "checkpoint-3.npy").unlink()
    with pytest.raises(CheckpointError, match="'theta'"):
        load_checkpoint(tmp_path)


def _npy(header: str) -> bytes:
    """A .npy file (version 1.0) with this header and 8 bytes of data."""
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + bytes(8)


def test_a_theta_header_claiming_a_huge_array_is_refused_without_allocating_it(tmp_path):
    _saved(tmp_path)
    (tmp_path / "checkpoint-3.npy").write_bytes(
        _npy("{'descr': '<f4', 'fortran_order': False, 'shape': (999999999999,), }"))
    with pytest.raises(CheckpointError, match="'theta'"):
        load_checkpoint(tmp_path)


def _load_fits_or_refuses(run_dir: Path) -> None:
    """What every fuzzed checkpoint must give: a Checkpoint that fits the schema, or a
    CheckpointError of one line; any other exception fails the test."""
    try:
        ckpt = load_checkpoint(run_dir)
    except CheckpointError as err:
        assert "\n" not in str(err)
        return
    assert ckpt is not None and _fits_schema(ckpt)


@FUZZ
@given(st.sampled_from(["round", "theta", "log_len", "metrics_lines", "held", "totals",
                        "strategy_state", "zero_eval", "last_eval", "elapsed_s",
                        "deadline_slowest_s", "log_hash", "unsure", "consecutive_failed"]),
       JSON, st.booleans())
def test_any_value_in_any_field_loads_to_the_schema_or_is_refused(tmp_path, field, value, drop):
    record = _saved(tmp_path)
    if drop:
        del record[field]
    else:
        record[field] = value
    (tmp_path / CHECKPOINT).write_text(json.dumps(record))
    _load_fits_or_refuses(tmp_path)


@FUZZ
@given(st.dictionaries(st.text(max_size=20), JSON, max_size=6), JSON)
def test_any_json_document_loads_to_the_schema_or_is_refused(tmp_path, extra, document):
    _saved(tmp_path, **extra)
    _load_fits_or_refuses(tmp_path)
    (tmp_path / CHECKPOINT).write_text(json.dumps(document))
    _load_fits_or_refuses(tmp_path)


@FUZZ
@given(st.binary(max_size=200),
       st.binary(max_size=200) | st.text(max_size=80).map(_npy)  # past the magic, to the header
       | st.fixed_dictionaries({"descr": st.sampled_from(["<f4", ">f4", "<f8", "|O", "x"]),
                                "fortran_order": st.booleans(),
                                "shape": st.tuples(st.integers(-3, 10**15))}).map(str).map(_npy))
def test_any_bytes_as_the_files_load_to_the_schema_or_are_refused(tmp_path, text, theta):
    _saved(tmp_path)
    (tmp_path / "checkpoint-3.npy").write_bytes(theta)
    _load_fits_or_refuses(tmp_path)
    (tmp_path / CHECKPOINT).write_bytes(text)
    _load_fits_or_refuses(tmp_path)
