import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prge.estimator import apply_update
from prge.perturb import SEED_BITS, derive_seed
from prge.update_log import LogEntry, entries_from_rows, replay, theta_hash

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=4), inner, max_size=4), max_leaves=8)
FIELDS = ("round", "seed", "grad", "lr", "q")


def _log(n: int, q: int = 2) -> list[LogEntry]:
    return [LogEntry(derive_seed(0, "log", i), 0.1 * (i - 3), 0.05, q) for i in range(n)]


def test_replay_equals_step_updates_bit_for_bit():
    dim, q = 300, 2
    theta = torch.zeros(dim)
    log = _log(6, q)
    for k in range(3):  # three P-RGE updates of q entries each
        chunk = log[k * q:(k + 1) * q]
        apply_update(theta, [e.seed for e in chunk], [e.grad for e in chunk], lr=0.05)
    assert torch.equal(replay(torch.zeros(dim), log), theta)
    assert theta_hash(replay(torch.zeros(dim), log)) == theta_hash(theta)


def test_hash_is_exact():
    t = torch.zeros(10)
    h = theta_hash(t)
    t[3] = 1e-30
    assert theta_hash(t) != h
    assert LogEntry.from_row(_log(1)[0].to_row()) == _log(1)[0]


def _rows(n: int = 4) -> list[dict]:
    """update_log.jsonl rows as the server writes them: q=2 entries per round."""
    return [{"round": 1 + i // 2, "seed": e.seed, "grad": e.grad, "lr": e.lr, "q": e.q}
            for i, e in enumerate(_log(n))]


def test_rows_as_the_server_writes_them_give_the_log_back():
    assert entries_from_rows(_rows(6)) == _log(6)


@pytest.mark.parametrize(("field", "value"), [
    ("q", 0), ("q", 2.0), ("q", True), ("round", 0), ("round", "1"), ("seed", -1),
    ("seed", 2**SEED_BITS), ("seed", 1.5), ("grad", float("nan")), ("grad", "0.1"),
    ("lr", float("inf")), ("lr", None),
])
def test_a_row_that_breaks_its_schema_is_one_sentence_naming_line_and_field(field, value):
    rows = _rows()
    rows[2][field] = value
    with pytest.raises(ValueError, match=f"line 3: '{field}'") as err:
        entries_from_rows(rows)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("row", [[1, 2, 0.1, 0.05, 2], None, {"round": 1, "seed": 4}])
def test_a_row_that_is_not_an_object_with_every_field_is_refused(row):
    with pytest.raises(ValueError, match="line 2"):
        entries_from_rows([_rows(1)[0], row])


def _fits_schema(e: LogEntry) -> bool:
    return (type(e.seed) is int and 0 <= e.seed < 2**SEED_BITS and type(e.q) is int and e.q >= 1
            and type(e.grad) is float and math.isfinite(e.grad)
            and type(e.lr) is float and math.isfinite(e.lr))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(JSON, st.fixed_dictionaries({k: JSON for k in FIELDS}),
                          st.fixed_dictionaries({}, optional={k: JSON for k in FIELDS})),
                max_size=4),
       st.integers(0, 4))
def test_any_json_rows_give_entries_of_the_schema_or_a_value_error(junk, at):
    rows = _rows()
    rows[at:at] = junk  # arbitrary rows among good ones
    try:
        entries = entries_from_rows(rows)
    except ValueError as err:
        assert "\n" not in str(err)
        return
    assert len(entries) == len(rows) and all(_fits_schema(e) for e in entries)
