"""A Grid that hands the server's messages to the real ClientApp in this process, one after
another, so that a test can decide what becomes of each message: answered, lost before it
reached the device (never delivered), or handled by the device with the reply lost (late).

It stands in for Flower's runtime only where a test needs a message's fate to be exact; the
server and the client code are the product's own.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable

from flwr.app import Context, Error, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.supercore.task_identity import TaskIdentity

ANSWER, NEVER_DELIVERED, LATE = "answer", "never-delivered", "late"
NODE_BASE = 1_000  # node id of partition p: NODE_BASE + p
RUN_ID, SERVER_NODE = 7, 1


class LocalGrid:
    def __init__(self, client_app, num_clients: int,
                 fate: Callable[[Message, int], str] | None = None):
        """`fate(message, partition_id)` says what becomes of each message (default: answered)."""
        self.app, self.fate = client_app, fate or (lambda msg, pid: ANSWER)
        # what Flower's runtime sets in a ServerApp's process before the app creates messages
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = RUN_ID, SERVER_NODE, 1
        self.contexts = {NODE_BASE + p: Context(run_id=RUN_ID, node_id=NODE_BASE + p,
                                                node_config={"partition-id": p},
                                                state=RecordDict(), run_config={})
                         for p in range(num_clients)}
        self.sent: list[tuple[str, int]] = []  # (message type, partition id) of every message
        self.waits: list[float | None] = []  # the timeout of every send_and_receive

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def send_and_receive(self, messages, timeout=None) -> list[Message]:
        self.waits.append(timeout)
        replies = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            pid = self.contexts[node].node_config["partition-id"]
            self.sent.append((msg.metadata.message_type, pid))
            fate = self.fate(msg, pid)
            if fate == NEVER_DELIVERED:
                continue
            msg.metadata.__dict__["_message_id"] = f"{len(self.sent):064x}"
            try:
                reply = self.app(msg, self.contexts[node])
            except Exception:  # what Flower's runtime does with an exception the app lets out
                reply = Message(error=Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                                            reason=traceback.format_exc()), reply_to=msg)
            if fate == ANSWER:
                replies.append(reply)
        return replies
