"""Bytes on the wire: every figure is what a simulated device sends or receives.

Messages are measured serialized (`wire_size`), as Flower's protobuf carries them. What a device
never sends is never counted: the error Flower's runtime makes up for a client process that died
under a message (`actor-lost`: an accident of the host, not a device's transmission), a reply
that came after its deadline (the server never read it), and the SuperLink's own bookkeeping
(`Metadata.delivered_at`, stamped when the server pulls a reply, is not part of the serialized
message; tests/simulation/test_traffic.py holds this to it).
"""

from __future__ import annotations

from dataclasses import dataclass

from flwr.app import ConfigRecord, Message
from flwr.common.serde import config_record_to_proto, message_to_proto

MAX_ID = 2**63 - 1
ERROR_TEXT = 200  # characters of an error's text kept in metrics.jsonl


def wire_size(msg: Message) -> int:
    """Bytes of the serialized message (metadata + content), as it crosses the wire.

    Flower draws node and run ids at random, and a varint's width depends on its value: each id is
    counted at 9 bytes (an id below 2**63; one drawn above it takes a byte more), so that byte
    counts are an exact function of the run's seed. A message also carries the id of the
    ServerApp's task (as `src_task_id` going out, `dst_task_id` coming back): 1 in Flower's
    in-process simulation, a random 64-bit id under a SuperLink; it is counted as 1 (one byte), so
    that both runtimes count the same bytes. In a deployment every id may take 10 bytes: up to 12
    bytes more per message than counted here.
    """
    proto = message_to_proto(msg)
    meta = proto.metadata
    meta.run_id, meta.src_node_id, meta.dst_node_id = MAX_ID, MAX_ID, MAX_ID
    for task in ("src_task_id", "dst_task_id"):
        if meta.HasField(task):
            setattr(meta, task, 1)
    meta.created_at = 0.5  # a double: fixed width whatever the clock says
    meta.message_id = "0" * 64  # assigned at push time (a 64-hex digest); count it either way
    return proto.ByteSize()


def record_size(fields: dict) -> int:
    """Serialized bytes of a ConfigRecord holding `fields`."""
    return config_record_to_proto(ConfigRecord(fields)).ByteSize()


def one_line(text: str) -> str:
    """An error's text as one short line (a traceback's last line says what went wrong)."""
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "")[:ERROR_TEXT]


@dataclass
class Traffic:
    """One round's bytes: down (server to devices), up (devices to server), and of the upload the
    part in valid replies (what aggregation used)."""

    down: int = 0
    up: int = 0
    up_valid: int = 0
    queries: int = 0  # cursor queries sent before the round's messages

    def reply(self, reply: Message, reason: str | None) -> None:
        """A reply the server read, rejected for `reason` (None: valid)."""
        if reason == "actor-lost":  # made up by the runtime for a dead process: nothing was sent
            return
        size = wire_size(reply)
        self.up += size
        if reason is None:
            self.up_valid += size
