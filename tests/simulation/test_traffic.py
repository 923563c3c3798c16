"""Byte counts are what a device sends or receives: the SuperLink's delivery stamp is not part of
a message, and an error the runtime makes up for a dead client process was never sent."""

from flwr.app import ConfigRecord, Error, Message, Metadata, RecordDict

from simulation.traffic import Traffic, one_line, wire_size


def _reply(delivered_at: str = "") -> Message:
    meta = Metadata(run_id=2**62 + 1, message_id="a" * 64, src_node_id=2**62 + 3, dst_node_id=0,
                    reply_to_message_id="b" * 64, group_id="3", created_at=1.8e9, ttl=43200.0,
                    message_type="train")
    msg = Message(metadata=meta, content=RecordDict({"res": ConfigRecord({"grads": b"x" * 32})}))
    msg.metadata.delivered_at = delivered_at  # as the SuperLink stamps a reply the server pulls
    return msg


def test_the_superlinks_delivery_stamp_is_not_counted():
    stamped = _reply("2026-12-04T19:36:26.123456+00:00")
    assert stamped.metadata.delivered_at  # the stamp is there...
    assert wire_size(stamped) == wire_size(_reply())  # ...and is not bytes a device sent


def test_what_a_round_counts_up():
    traffic = Traffic()
    valid, crash = _reply(), _reply()
    traffic.reply(valid, None)
    traffic.reply(crash, "crash")  # a simulated device's error reply: it sent it
    lost = Message(metadata=valid.metadata, error=Error(code=0, reason="ActorDiedError"))
    traffic.reply(lost, "actor-lost")  # made up by the runtime: nothing was sent
    assert traffic.up == 2 * wire_size(valid) and traffic.up_valid == wire_size(valid)


def test_an_errors_text_is_its_last_line_kept_short():
    assert one_line("Traceback (most recent call last):\n  File x\nRuntimeError: boom\n") == \
        "RuntimeError: boom"
    assert len(one_line("x" * 1000)) == 200 and one_line("") == ""
