import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Message, Metadata, RecordDict
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.protocol import (
    SCALAR_BITS,
    CatchUp,
    ProtocolError,
    TrainIns,
    TrainRes,
    Wire,
    WrongLengthError,
    decode_scalars,
    decode_tensor,
    decode_train_ins,
    decode_train_res,
    encode_log,
    encode_scalars,
    encode_snapshot,
    encode_tensor,
    encode_train_ins,
    encode_train_res,
    packed_size,
    quantize,
    round_seeds,
)
from prge.update_log import LogEntry
from simulation.server_app import wire_size

WIRE = Wire(run_seed=7, block=2, q=4)


def test_train_ins_round_trip_through_a_config_record():
    """Two blocks of the log (rounds 3 and 5): seeds are derived, never sent."""
    tail = [LogEntry(s, g, lr, 4) for s, g, lr in zip(round_seeds(7, 3, 2) + round_seeds(7, 5, 2),
                                                       [-0.25, 1.5, 3.0, -2.0], [0.05] * 2 + [0.04] * 2,
                                                       strict=True)]
    rec = ConfigRecord(encode_train_ins(6, encode_log(8, tail, [3, 5], WIRE), 0.01, 0.05))
    assert "seeds" not in rec and "log-seeds" not in rec
    assert decode_train_ins(rec, WIRE) == TrainIns(6, CatchUp(8, tail), round_seeds(7, 6, 2),
                                                   0.01, 0.05)
    with pytest.raises(ProtocolError, match="bytes for 2 blocks"):
        decode_train_ins({**rec, "log-grads": rec["log-grads"][:-1]}, WIRE)


def test_a_snapshot_carries_theta_as_float32_bytes():
    theta = torch.linspace(-1, 1, 10)
    rec = ConfigRecord(encode_train_ins(6, encode_snapshot(24, theta), 0.01, 0.05))
    ins = decode_train_ins(rec, WIRE)
    assert ins.catch_up == CatchUp(24, [], encode_tensor(theta))
    assert torch.equal(decode_tensor(ins.catch_up.snapshot, 10), theta)  # exact: theta's dtype
    with pytest.raises(ProtocolError, match="snapshot has type"):
        decode_train_ins({**rec, "snapshot": [1.0]}, WIRE)


def test_train_res_round_trip_and_rejections():
    res = TrainRes(2, [0.5, -1.0, 3.0], 40, 0.7, "abcd")
    assert decode_train_res(ConfigRecord(encode_train_res(res, 32)), 3, 32) == res
    good = encode_train_res(res, 32)
    for key in good:
        broken = {k: v for k, v in good.items() if k != key}
        with pytest.raises(ProtocolError, match="lacks"):
            decode_train_res(broken, 3, 32)
    with pytest.raises(ProtocolError, match="type"):
        decode_train_res({**good, "num-examples": "40"}, 3, 32)
    with pytest.raises(ProtocolError, match="'grads' has type list"):
        decode_train_res({**good, "grads": [1.0, 2.0, 3.0]}, 3, 32)
    with pytest.raises(WrongLengthError, match="12 bytes, expected 16"):
        decode_train_res(good, 4, 32)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=40), st.sampled_from(SCALAR_BITS))
def test_packing_is_idempotent_and_within_its_rounding(values, bits):
    """Encoding what was decoded gives the same bytes (the server can resend what it logged),
    and each value moves by at most half a step of its format."""
    x = np.asarray(values)
    if bits == 16:  # beyond float16's range a value becomes inf (and the reply non-finite)
        x = np.clip(x, -65504, 65504)
    data = encode_scalars(x, bits)
    assert len(data) == packed_size(x.size, bits)
    back = decode_scalars(data, bits, x.size)
    assert encode_scalars(back, bits) == data
    if bits == 8:
        step = 2.0 ** int(np.frombuffer(data[:1], dtype=np.int8)[0])
        assert np.abs(back).max() <= 127 * step and np.all(np.abs(back - x) <= step / 2)
    else:
        rel = {32: 2.0**-24, 16: 2.0**-11}[bits]
        tiny = {32: 1e-45, 16: 6e-8}[bits]  # subnormals: absolute, not relative, steps
        assert np.all(np.abs(back - x) <= rel * np.abs(x) + tiny)


def test_int8_scale_is_the_smallest_power_of_two_that_fits():
    data = encode_scalars([1.0, -0.5, 0.25], 8)
    assert int(np.frombuffer(data[:1], dtype=np.int8)[0]) == -6  # 127 * 2**-6 = 1.98 >= 1.0
    assert decode_scalars(data, 8, 3).tolist() == [1.0, -0.5, 0.25]  # exact here
    assert quantize([0.0, 0.0], 8).tolist() == [0.0, 0.0]
    with pytest.raises(ProtocolError, match="not finite"):
        encode_scalars([1.0, float("nan")], 8)


def _reply_size(n_scalars: int, bits: int = 32) -> int:
    """Wire size of a reply with realistic metadata (64-hex ids, 63-bit node ids)."""
    meta = Metadata(run_id=2**62 + 1, message_id="a" * 64, src_node_id=2**62 + 3, dst_node_id=0,
                    reply_to_message_id="b" * 64, group_id="12", created_at=1.8e9, ttl=43200.0,
                    message_type="train")
    res = TrainRes(12, [0.123456789] * n_scalars, 500, 0.69, "0123456789abcdef")
    return wire_size(Message(metadata=meta, content=RecordDict(
        {"res": ConfigRecord(encode_train_res(res, bits))})))


def test_reply_bytes_are_the_packed_scalars_plus_a_fixed_envelope():
    base = _reply_size(0)
    for bits, per in ((32, 4), (16, 2), (8, 1)):
        # bytes grow by exactly the packed size; nested length prefixes by a few bytes
        assert per * 63 <= _reply_size(64, bits) - _reply_size(1, bits) <= per * 63 + 8
    assert base < 600  # metadata and keys: the fixed cost of a reply
    assert _reply_size(32) < 4 * 32 + 300 + 100  # the default K=2, q=16 upload


def test_dense_reply_round_trip_and_rejections():
    import torch

    from clients.protocol import DenseRes, WrongLengthError, decode_dense_res, encode_dense_res

    res = DenseRes(4, torch.tensor([0.5, -1.25, 3.0]), 12, 0.3, "beef")
    rec = encode_dense_res(res)
    assert len(rec["delta"]) == 3 * 4  # float32 on the wire
    back = decode_dense_res(ConfigRecord(rec), dim=3)
    assert torch.equal(back.delta, res.delta) and back.theta_hash == "beef"
    with pytest.raises(WrongLengthError, match="12 bytes, expected 16"):
        decode_dense_res(rec, dim=4)
    with pytest.raises(ProtocolError, match="lacks 'delta'"):
        decode_dense_res({k: v for k, v in rec.items() if k != "delta"}, dim=3)
    with pytest.raises(ProtocolError, match="'delta' has type list"):
        decode_dense_res({**rec, "delta": [0.5, -1.25, 3.0]}, dim=3)
