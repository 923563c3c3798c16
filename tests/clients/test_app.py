import tempfile

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from clients.app import build_client_app, default_device_dir
from clients.device import DeviceStore
from clients.protocol import Wire, encode_log, encode_train_ins, round_seeds
from clients.runconfig import load_config
from clients.worker import worker_for
from prge.update_log import LogEntry

SETS = ["model=tiny", "engine=eager", "num-clients=2", "clients-per-round=2", "partition=iid",
        "batch-size=4", "local-steps=1", "q=2"]


def test_flowers_context_holds_no_log_on_the_flwr_run_path(tmp_path, monkeypatch):
    """Without a runner's device directory (`flwr run .`), the device state still lives in
    storage of its own, so Flower's per-node context does not grow with the log."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for key, value in {"_run_id": 77, "_node_id": 1, "_task_id": 1}.items():
        monkeypatch.setattr(TaskIdentity, key, value)  # what Flower sets in a task's process
    cfg = load_config(None, SETS)
    wire = Wire.of(cfg)
    app = build_client_app(cfg)
    context = Context(run_id=77, node_id=2, node_config={"partition-id": 0}, state=RecordDict(),
                      run_config={})
    tail = [LogEntry(s, 0.5, 0.1, cfg.q) for s in round_seeds(cfg.seed, 1, wire.block)]
    for server_round, (start, entries, rounds) in enumerate([(0, [], []), (0, tail, [1])], 1):
        ins = encode_train_ins(server_round, encode_log(start, entries, rounds, wire), 1e-2, 0.1)
        reply = app(Message(RecordDict({"ins": ConfigRecord(ins)}), dst_node_id=2,
                            message_type="train"), context)
        assert not reply.has_error(), reply.error
    assert len(context.state) == 0
    cursor, _ = DeviceStore(default_device_dir(77) / "0.theta", worker_for(cfg).setup.scorer.dim).load()
    assert cursor == wire.block  # the device holds round 1's block
