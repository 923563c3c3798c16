"""The Flower ClientApp: a thin adapter between Flower messages and `ClientWorker`.

The client's own state between rounds is the update log it has seen (seeds and scalars, so it can
replay theta_t), kept in the simulated device's storage (a file per device) when the runner gives
one, else in its Flower Context; after personalization, also its personal log.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from clients.busy import busy
from clients.faults import SimulatedCrash
from clients.protocol import (
    DenseRes,
    ProtocolError,
    TrainRes,
    Wire,
    decode_log,
    decode_tensor,
    decode_train_ins,
    encode_dense_res,
    encode_train_res,
)
from clients.runconfig import Config, config_from_mapping
from clients.worker import worker_for
from prge.update_log import LogEntry

LOG_KEY = "update-log"
PERSONAL_KEY = "personal-log"


def _stored_log(context: Context, q: int, device: Path | None = None) -> list[LogEntry]:
    """The log this client holds: read from the simulated device's storage when it has one (the
    only copy, so that every message for this device, whichever process runs it, sees what the
    device really stored), else from Flower's per-node context."""
    if device is not None:
        rec = json.loads(device.read_text()) if device.is_file() else None
    else:
        rec = context.state[LOG_KEY] if LOG_KEY in context.state else None
    if rec is None:
        return []
    return [LogEntry(int(s), float(g), float(lr), q)
            for s, g, lr in zip(rec["seeds"], rec["grads"], rec["lrs"], strict=True)]


def _extend_log(context: Context, start: int, tail: list[LogEntry], q: int,
                device: Path | None = None) -> list[LogEntry]:
    """The client's full log after receiving `tail` from index `start`; stored back in `device`
    (the simulated device's storage) when given, else in Flower's context."""
    held = _stored_log(context, q, device)
    if start > len(held):  # the server thinks we hold entries we never stored
        raise ProtocolError(f"log tail starts at {start} but this client holds {len(held)} entries")
    # The server's log is the authority and only ever grows, so a device may hold *more* than the
    # server believes: it stored a tail and then the server was stopped and resumed from an earlier
    # checkpoint. Keep the first `start` entries and take the rest from the server.
    log = held[:start] + tail
    record = {"seeds": [e.seed for e in log], "grads": [e.grad for e in log],
              "lrs": [e.lr for e in log]}
    if device is None:
        context.state[LOG_KEY] = ConfigRecord(record)
        return log
    device.parent.mkdir(parents=True, exist_ok=True)
    tmp = device.with_name(f"{device.name}.{os.getpid()}.tmp")  # one writer per name
    tmp.write_text(json.dumps(record))
    os.replace(tmp, device)
    return log


def build_client_app(cfg: Config | None = None, device_dir: Path | None = None) -> ClientApp:
    """A ClientApp for `cfg`, or (when None) for the run config in Flower's Context. With
    `device_dir`, each simulated device also keeps its log in DEVICE_DIR/<partition>.json, so that
    a resumed run finds the devices as the stopped run left them."""
    app = ClientApp()

    def device(context: Context) -> Path | None:
        if device_dir is None:
            return None
        return Path(device_dir) / f"{int(context.node_config['partition-id'])}.json"

    def prefix_store(context: Context) -> Path | None:
        """Where the device keeps its examples' frozen-prefix hidden states (see worker.data)."""
        if device_dir is None:
            return None
        return Path(device_dir) / f"{int(context.node_config['partition-id'])}.prefix.npz"

    def run_cfg(context: Context) -> Config:
        return cfg or config_from_mapping(dict(context.run_config))

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        node = ConfigRecord({"partition-id": int(context.node_config["partition-id"])})
        return Message(RecordDict({"node": node}), reply_to=msg)

    def train_dense(msg: Message, c: Config, context: Context) -> Message:
        ins = msg.content["ins"]
        worker = worker_for(c)
        theta = decode_tensor(ins["theta"], worker.setup.scorer.dim)
        pid = int(context.node_config["partition-id"])
        delta, n, loss = worker.train_dense(pid, theta, int(ins["server-round"]), float(ins["eps"]),
                                            float(ins["lr"]), prefix_store(context))
        # the hash of the theta it trained from, under its own model: a device with another base
        # model or A fails the server's check even though it received the right theta
        res = DenseRes(int(ins["server-round"]), delta, n, loss, worker.state_hash(theta))
        return Message(RecordDict({"res": ConfigRecord(encode_dense_res(res))}), reply_to=msg)

    def train_prge(msg: Message, c: Config, context: Context) -> Message:
        ins = decode_train_ins(msg.content["ins"], Wire.of(c))
        log = _extend_log(context, ins.log_start, ins.log_tail, c.q, device(context))
        pid = int(context.node_config["partition-id"])
        result = worker_for(c).train(pid, log, ins.server_round, ins.seeds, ins.eps, ins.lr,
                                     prefix_store(context))
        res = TrainRes(ins.server_round, result.grads, result.num_examples, result.train_loss,
                       result.theta_hash)
        return Message(RecordDict({"res": ConfigRecord(encode_train_res(res, c.scalar_bits))}),
                       reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        c = run_cfg(context)
        try:
            with busy(device_dir, int(context.node_config["partition-id"])):
                if c.method != "prge":
                    return train_dense(msg, c, context)
                return train_prge(msg, c, context)
        except SimulatedCrash as crash:  # an expected fault: an error reply, no traceback logged
            return Message(error=Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                                       reason=str(crash)), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        with busy(device_dir, int(context.node_config["partition-id"])):
            return personalize(msg, context)

    def personalize(msg: Message, context: Context) -> Message:
        c = run_cfg(context)
        worker = worker_for(c)
        if c.method == "prge":
            start, tail = decode_log(msg.content["ins"], Wire.of(c))
            theta = worker.cache.rebuild(_extend_log(context, start, tail, c.q, device(context)))
        else:
            theta = decode_tensor(msg.content["ins"]["theta"], worker.setup.scorer.dim)
        pid = int(context.node_config["partition-id"])
        out = worker.personalize(pid, theta, int(msg.content["ins"]["personal-steps"]),
                                 prefix_store(context))
        personal = out.pop("personal-log")
        # The personal adapter stays on the device, stored as its (seed, scalar) log.
        context.state[PERSONAL_KEY] = ConfigRecord({"seeds": [int(r[0]) for r in personal],
                                                    "grads": [float(r[1]) for r in personal]})
        return Message(RecordDict({"res": ConfigRecord(out)}), reply_to=msg)

    return app


app = build_client_app()
