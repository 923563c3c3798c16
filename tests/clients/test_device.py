import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.device import HEADER, DeviceStore
from clients.protocol import CatchUp, ProtocolError, encode_tensor
from prge.perturb import derive_seed
from prge.update_log import LogEntry, replay

DIM = 64


def _entries(a: int, b: int) -> list[LogEntry]:
    return [LogEntry(derive_seed(0, "log", i), 0.1 * (i - 5), 0.05, 2) for i in range(a, b)]


def _theta(n: int) -> torch.Tensor:
    """theta after the first n entries, replayed from theta_0 in one go."""
    return replay(torch.zeros(DIM), _entries(0, n))


def test_a_client_that_missed_rounds_replays_only_what_is_new(tmp_path):
    device = DeviceStore(tmp_path / "0.theta", DIM)
    assert device.catch_up(CatchUp(0, _entries(0, 4))).replayed == 4
    caught = device.catch_up(CatchUp(4, _entries(4, 12)))  # it missed two rounds
    assert caught.replayed == 8
    assert torch.equal(caught.theta, _theta(12))  # bit for bit: same additions, same order
    assert device.load()[0] == 12
    caught.theta.add_(1.0)  # training changes the copy, never the stored state
    assert torch.equal(device.load()[1], _theta(12))


def test_stored_state_does_not_grow_with_the_log(tmp_path):
    device = DeviceStore(tmp_path / "0.theta", DIM)
    device.catch_up(CatchUp(0, _entries(0, 4)))
    size = device.path.stat().st_size
    device.catch_up(CatchUp(4, _entries(4, 400)))
    assert device.path.stat().st_size == size == HEADER + 4 * DIM


def test_a_resend_from_zero_starts_over(tmp_path):
    """After a rejected reply the server sends the whole log: the device must not trust what it
    stored (here: a theta from another history)."""
    device = DeviceStore(tmp_path / "0.theta", DIM)
    device.store(4, torch.ones(DIM))
    caught = device.catch_up(CatchUp(0, _entries(0, 6)))
    assert caught.replayed == 6 and torch.equal(caught.theta, _theta(6))


def test_a_device_ahead_of_a_resumed_server_skips_what_it_applied(tmp_path):
    """The device stored the log up to 8, then the server was killed and resumed from a
    checkpoint that believes the device holds 4: the server's tail from 4 ends where an
    uninterrupted run would be, with only the 2 new entries replayed."""
    device = DeviceStore(tmp_path / "0.theta", DIM)
    device.catch_up(CatchUp(0, _entries(0, 8)))
    caught = DeviceStore(device.path, DIM).catch_up(CatchUp(4, _entries(4, 10)))
    assert caught.replayed == 2
    assert torch.equal(caught.theta, replay(_theta(8), _entries(8, 10)))


@pytest.mark.parametrize("held, start, end, match", [
    (4, 6, 8, "holds 4"),  # a gap: the server thinks the device holds entries it never stored
    (8, 4, 6, "more than the server's 6"),  # a theta from beyond the server's log
])
def test_a_tail_that_does_not_fit_the_device_is_refused(tmp_path, held, start, end, match):
    device = DeviceStore(tmp_path / "0.theta", DIM)
    device.catch_up(CatchUp(0, _entries(0, held)))
    with pytest.raises(ProtocolError, match=match):
        device.catch_up(CatchUp(start, _entries(start, end)))


def test_a_snapshot_replaces_the_state_exactly(tmp_path):
    device = DeviceStore(tmp_path / "0.theta", DIM)
    device.catch_up(CatchUp(0, _entries(0, 4)))
    caught = device.catch_up(CatchUp(40, [], encode_tensor(_theta(40))))
    assert caught.replayed == 0 and torch.equal(caught.theta, _theta(40))
    # and the log goes on from the snapshot's position
    assert torch.equal(device.catch_up(CatchUp(40, _entries(40, 44))).theta, _theta(44))


def test_a_state_of_another_size_is_a_clear_error(tmp_path):
    DeviceStore(tmp_path / "0.theta", DIM).store(3, torch.zeros(DIM))
    with pytest.raises(ProtocolError, match="another adapter"):
        DeviceStore(tmp_path / "0.theta", DIM + 1).load()


@pytest.mark.parametrize("damage", [b"abc", b"\xff" * (HEADER + 4 * DIM)],
                         ids=["3-byte file", "negative cursor"])
def test_a_damaged_state_file_is_repaired_by_a_full_resend_or_a_snapshot(tmp_path, damage):
    """The damaged file made even the server's whole log fail, every round: it was read before
    the start-from-zero reset. The device now reports holding nothing, refuses a tail it cannot
    build on, and a full resend or a snapshot repairs it."""
    device = DeviceStore(tmp_path / "0.theta", DIM)
    device.path.write_bytes(damage)
    assert torch.equal(device.catch_up(CatchUp(0, _entries(0, 8))).theta, _theta(8))
    device.path.write_bytes(damage)
    assert device.cursor() == 0  # what it tells the server: send me everything
    with pytest.raises(ProtocolError):
        device.catch_up(CatchUp(4, _entries(4, 8)))
    device.catch_up(CatchUp(0, _entries(0, 8)))
    assert device.cursor() == 8
    device.path.write_bytes(damage)
    snap = device.catch_up(CatchUp(8, [], encode_tensor(_theta(8))))
    assert torch.equal(snap.theta, _theta(8)) and device.load()[0] == 8


STATE_BYTES = HEADER + 4 * DIM


@st.composite
def _state_files(draw) -> bytes:
    """Any bytes at all, or a file of the right size whose cursor is drawn near the tails below
    (else the fuzzing would almost never reach a stored state a tail can build on)."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=2 * STATE_BYTES))
    cursor = draw(st.one_of(st.integers(-3, 12), st.integers(-2**63, 2**63 - 1)))
    return np.int64(cursor).astype("<i8").tobytes() + draw(st.binary(min_size=4 * DIM,
                                                                      max_size=4 * DIM))


def _stored(data: bytes) -> tuple[int, torch.Tensor] | None:
    """What a file holds, read independently of DeviceStore: None when it is damaged."""
    if len(data) != STATE_BYTES or int(np.frombuffer(data[:HEADER], "<i8")[0]) < 0:
        return None
    return (int(np.frombuffer(data[:HEADER], "<i8")[0]),
            torch.from_numpy(np.frombuffer(data[HEADER:], "<f4").copy()))


def _same(got: torch.Tensor, want: torch.Tensor) -> None:
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)  # random bytes: NaNs


@settings(max_examples=300, deadline=None)
@given(_state_files(), st.integers(0, 10), st.integers(1, 8), st.integers(0, 6))
def test_any_state_file_is_repaired_by_a_resend_and_never_breaks_the_device(data, n, start, extra):
    """Whatever bytes the device's storage holds: the whole log or a snapshot repairs it, the
    cursor it reports is a number (0 for a damaged file), and a tail from start > 0 either
    builds on the stored theta exactly or is refused with a ProtocolError."""
    with tempfile.TemporaryDirectory() as tmp:
        device = DeviceStore(Path(tmp) / "0.theta", DIM)
        device.path.write_bytes(data)
        held = _stored(data)
        assert device.cursor() == (0 if held is None else held[0])

        end = start + extra
        if held is not None and start <= held[0] <= end:
            caught = device.catch_up(CatchUp(start, _entries(start, end)))
            _same(caught.theta, replay(held[1].clone(), _entries(held[0], end)))
            assert device.cursor() == end
        else:
            with pytest.raises(ProtocolError):
                device.catch_up(CatchUp(start, _entries(start, end)))

        device.path.write_bytes(data)
        _same(device.catch_up(CatchUp(0, _entries(0, n))).theta, _theta(n))
        assert device.cursor() == n
        device.path.write_bytes(data)
        _same(device.catch_up(CatchUp(n, [], encode_tensor(_theta(n)))).theta, _theta(n))
        assert device.load()[0] == n
