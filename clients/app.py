"""The Flower ClientApp: a thin adapter between Flower messages and `ClientWorker`.

The client's own state between rounds is its copy of the global adapter and how far into the
update log it got (clients/device.py), kept in the simulated device's storage: a file per device
under the run directory's devices/ when the runner gives one, else under a folder per Flower run;
beside it, the personalization method's personal state (clients/personal_store.py).
"""

from __future__ import annotations

import sys
import tempfile
import traceback
from pathlib import Path

from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from clients.busy import busy
from clients.device import DeviceStore
from clients.faults import SimulatedCrash
from clients.protocol import (
    DenseRes,
    TrainRes,
    Wire,
    decode_log,
    decode_tensor,
    decode_train_ins,
    encode_dense_res,
    encode_train_res,
    with_cursor,
)
from clients.runconfig import Config, config_from_flower
from clients.worker import built_worker, worker_for


def default_device_dir(run_id: int) -> Path:
    """Where devices keep their state when the runner names no directory (`flwr run .`): one
    folder per Flower run, so Flower's context never holds any device state."""
    return Path(tempfile.gettempdir()) / "fedprge-devices" / f"run-{run_id}"


def build_client_app(cfg: Config | None = None, device_dir: Path | None = None) -> ClientApp:
    """A ClientApp for `cfg`, or (when None) for the run config in Flower's Context. Each
    simulated device keeps its state in DEVICE_DIR/<partition>.theta (under the run directory, so
    that a resumed run finds the devices as the stopped run left them), else in
    `default_device_dir`."""
    app = ClientApp()

    def devices(context: Context) -> Path | None:
        """The run's device folder: the one given here, else the runner's (run-dir/devices)."""
        if device_dir is not None:
            return Path(device_dir)
        run_dir = config_from_flower(dict(context.run_config)).run_dir
        return run_dir / "devices" if run_dir is not None else None

    def storage(context: Context) -> Path:
        """Where this run's devices keep their state and their busy markers, on both launch
        paths (so that a hung client can be stopped either way)."""
        return devices(context) or default_device_dir(context.run_id)

    def device(context: Context, dim: int) -> DeviceStore:
        return DeviceStore(storage(context) / f"{int(context.node_config['partition-id'])}.theta",
                           dim)

    def cursor(context: Context, build: bool = True) -> int | None:
        """The log position this device's storage holds (0 when it holds nothing usable), or
        None when it cannot be told (the dense baselines keep no log; the model failed to load)."""
        try:
            c = run_cfg(context)
            # an error reply never builds the model: when building it is what failed, a second
            # try per reply would repeat the costly failure (the device then cannot say)
            pick = worker_for if build else built_worker
            worker = pick(c) if c.method == "prge" else None
            return None if worker is None else device(context, worker.setup.scorer.dim).cursor()
        except Exception:  # noqa: BLE001 - reporting must not raise over the error it reports
            return None

    def failed(msg: Message, context: Context, err: Exception) -> Message:
        """Any failure becomes an error reply that names it in one line (the server keeps the
        first of each kind per round) and says what the device holds now."""
        text = str(err) if isinstance(err, SimulatedCrash) else f"{type(err).__name__}: {err}"
        if not isinstance(err, SimulatedCrash):  # a bug or a broken device: keep the traceback
            traceback.print_exc(file=sys.stderr)
        return Message(error=Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                                   reason=with_cursor(text, cursor(context, build=False))),
                       reply_to=msg)

    def prefix_store(context: Context) -> Path | None:
        """Where the device keeps its examples' frozen-prefix hidden states (see worker.data)."""
        return storage(context) / f"{int(context.node_config['partition-id'])}.prefix.npz"

    def personal_store(context: Context) -> Path:
        """Where the device keeps its personalization method's state (never sent)."""
        return storage(context) / f"{int(context.node_config['partition-id'])}.personal"

    def run_cfg(context: Context) -> Config:
        return cfg or config_from_flower(dict(context.run_config)).cfg

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        """Which partition this node simulates; when asked, what its device holds."""
        fields = {"partition-id": int(context.node_config["partition-id"])}
        if "ask" in msg.content and msg.content["ask"].get("cursor"):
            held = cursor(context)
            fields["cursor"] = -1 if held is None else held
        return Message(RecordDict({"node": ConfigRecord(fields)}), reply_to=msg)

    def train_dense(msg: Message, c: Config, context: Context) -> Message:
        ins = msg.content["ins"]
        worker = worker_for(c)
        theta = decode_tensor(ins["theta"], worker.setup.scorer.dim)
        pid = int(context.node_config["partition-id"])
        delta, n, loss = worker.train_dense(pid, theta, int(ins["server-round"]), float(ins["eps"]),
                                            float(ins["lr"]), prefix_store(context),
                                            personal_store(context))
        # the hash of the theta it trained from, under its own model: a device with another base
        # model or A fails the server's check even though it received the right theta
        res = DenseRes(int(ins["server-round"]), delta, n, loss, worker.state_hash(theta))
        return Message(RecordDict({"res": ConfigRecord(encode_dense_res(res))}), reply_to=msg)

    def train_prge(msg: Message, c: Config, context: Context) -> Message:
        ins = decode_train_ins(msg.content["ins"], Wire.of(c))
        worker = worker_for(c)
        theta = device(context, worker.setup.scorer.dim).catch_up(ins.catch_up).theta
        pid = int(context.node_config["partition-id"])
        result = worker.train(pid, theta, ins.server_round, ins.seeds, ins.eps, ins.lr,
                              prefix_store(context), personal_store(context))
        res = TrainRes(ins.server_round, result.grads, result.num_examples, result.train_loss,
                       result.theta_hash)
        return Message(RecordDict({"res": ConfigRecord(encode_train_res(res, c.scalar_bits))}),
                       reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        try:
            with busy(storage(context), int(context.node_config["partition-id"])):
                c = run_cfg(context)
                if c.method != "prge":
                    return train_dense(msg, c, context)
                return train_prge(msg, c, context)
        except Exception as err:  # noqa: BLE001 - every failure is answered, none kills the node
            return failed(msg, context, err)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        try:
            with busy(storage(context), int(context.node_config["partition-id"])):
                return personalize(msg, context)
        except Exception as err:  # noqa: BLE001
            return failed(msg, context, err)

    def personalize(msg: Message, context: Context) -> Message:
        c = run_cfg(context)
        worker = worker_for(c)
        if c.method == "prge":
            update = decode_log(msg.content["ins"], Wire.of(c))
            theta = device(context, worker.setup.scorer.dim).catch_up(update).theta
        else:
            theta = decode_tensor(msg.content["ins"]["theta"], worker.setup.scorer.dim)
        pid, ins = int(context.node_config["partition-id"]), msg.content["ins"]
        at = int(ins["server-round"]) if "server-round" in ins else None
        out = worker.personalize(pid, theta, int(ins["personal-steps"]), prefix_store(context),
                                 at, personal_store(context), bool(ins.get("newcomer", False)))
        return Message(RecordDict({"res": ConfigRecord(out)}), reply_to=msg)

    return app


app = build_client_app()
