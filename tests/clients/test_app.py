import pytest
from flwr.app import Context, RecordDict

from clients.app import _extend_log, _stored_log
from clients.protocol import ProtocolError
from prge.update_log import LogEntry


def _context() -> Context:
    return Context(run_id=1, node_id=2, node_config={"partition-id": 0}, state=RecordDict(),
                   run_config={})


def _entries(a: int, b: int) -> list[LogEntry]:
    return [LogEntry(100 + i, float(i), 0.1, 2) for i in range(a, b)]


def test_client_that_missed_rounds_catches_up_from_the_tail():
    ctx = _context()
    assert _extend_log(ctx, 0, _entries(0, 4), q=2) == _entries(0, 4)
    # the client missed two rounds: the server sends everything from index 4 on
    assert _extend_log(ctx, 4, _entries(4, 12), q=2) == _entries(0, 12)
    assert _stored_log(ctx, q=2) == _entries(0, 12)


def test_server_resend_from_zero_replaces_the_stored_log():
    ctx = _context()
    _extend_log(ctx, 0, _entries(0, 4), q=2)
    assert _extend_log(ctx, 0, _entries(0, 6), q=2) == _entries(0, 6)


def test_a_gap_in_the_log_is_refused():
    ctx = _context()
    _extend_log(ctx, 0, _entries(0, 4), q=2)
    with pytest.raises(ProtocolError, match="holds 4"):
        _extend_log(ctx, 6, _entries(6, 8), q=2)


def test_a_device_ahead_of_a_resumed_server_takes_the_servers_tail(tmp_path):
    """The device stored the log up to 8, then the server was killed and resumed from a
    checkpoint that believes the device holds 4: the server's tail from 4 is taken as is."""
    device = tmp_path / "devices" / "0.json"
    _extend_log(_context(), 0, _entries(0, 8), q=2, device=device)
    fresh = _context()  # a new process after the kill: the device file is all that is left
    assert _extend_log(fresh, 4, _entries(4, 10), q=2, device=device) == _entries(0, 10)
    assert _stored_log(_context(), q=2, device=device) == _entries(0, 10)
