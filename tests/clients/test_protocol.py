import pytest
from flwr.app import ConfigRecord, Message, Metadata, RecordDict

from clients.protocol import (
    ProtocolError,
    TrainIns,
    TrainRes,
    decode_train_ins,
    decode_train_res,
    encode_train_ins,
    encode_train_res,
)
from prge.update_log import LogEntry
from simulation.server_app import wire_size


def test_train_ins_round_trip_through_a_config_record():
    ins = TrainIns(3, 8, [LogEntry(2**62 + 5, -0.25, 0.05, 4)], [11, 2**63 - 1], 0.01, 0.05)
    rec = ConfigRecord(encode_train_ins(ins))
    assert decode_train_ins(rec, q=4) == ins


def test_train_res_round_trip_and_rejections():
    res = TrainRes(2, [0.5, -1.0, 3.0], 40, 0.7, "abcd")
    assert decode_train_res(ConfigRecord(encode_train_res(res))) == res
    good = encode_train_res(res)
    for key in good:
        broken = {k: v for k, v in good.items() if k != key}
        with pytest.raises(ProtocolError, match="lacks"):
            decode_train_res(broken)
    with pytest.raises(ProtocolError, match="type"):
        decode_train_res({**good, "num-examples": "40"})
    with pytest.raises(ProtocolError, match="non-numbers"):
        decode_train_res({**good, "grads": [1.0, "x"]})


def _reply_size(n_scalars: int) -> int:
    """Wire size of a reply with realistic metadata (64-hex ids, 63-bit node ids)."""
    meta = Metadata(run_id=2**62 + 1, message_id="a" * 64, src_node_id=2**62 + 3, dst_node_id=0,
                    reply_to_message_id="b" * 64, group_id="12", created_at=1.8e9, ttl=43200.0,
                    message_type="train")
    res = TrainRes(12, [0.123456789] * n_scalars, 500, 0.69, "0123456789abcdef")
    return wire_size(Message(metadata=meta, content=RecordDict(
        {"res": ConfigRecord(encode_train_res(res))})))


def test_reply_bytes_are_eight_per_scalar_plus_a_fixed_envelope():
    base, one, many = _reply_size(0), _reply_size(1), _reply_size(64)
    # A packed list of doubles costs 8 bytes per scalar; nested length prefixes grow by a few bytes
    assert 8 * 63 <= many - one <= 8 * 63 + 8
    assert base < 600  # metadata and keys: the fixed cost of a reply
    assert _reply_size(32) < 1024  # the default K=2, q=16 upload stays under 1 KB


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
