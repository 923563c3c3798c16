import pytest
import torch

from clients.device import DeviceStore
from clients.protocol import decode_log, round_seeds
from clients.runconfig import load_config
from prge.update_log import LogEntry, replay
from simulation.server_app import FederatedServer, record_size

SETS = ["model=tiny", "engine=eager", "num-clients=3", "clients-per-round=3", "partition=iid",
        "local-steps=1", "q=2", "targets=head"]  # D = 16: a snapshot is 64 bytes


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server whose log holds 10 rounds; client 0 holds all of it, 1 all but a round, 2 none."""
    cfg = load_config(None, [*SETS, "catch-up=auto"])
    srv = FederatedServer(cfg, tmp_path_factory.mktemp("run"), grid=None, progress=False)
    for r in range(1, 11):
        seeds = round_seeds(cfg.seed, r, srv.wire.block)
        new = [LogEntry(s, 0.125 * r, 0.1, cfg.q) for s in seeds]  # float32-exact, as logged
        replay(srv.theta, new)
        srv.log += new
        srv.log_rounds.append(r)
    srv.cursors.held = {0: len(srv.log), 1: len(srv.log) - srv.wire.block}
    return srv


def _sizes(srv, pid: int) -> dict[str, int]:
    sizes = {}
    for mode in ("log", "snapshot"):
        srv.cfg.catch_up = mode
        sizes[mode] = record_size(srv.catch_up(pid)[0])
    srv.cfg.catch_up = "auto"
    return sizes


def test_auto_sends_whichever_catch_up_is_smaller(server):
    for pid, want in [(1, "log"), (2, "snapshot")]:  # one round away, ten rounds away
        record, entries = server.catch_up(pid)
        sizes = _sizes(server, pid)
        assert min(sizes, key=sizes.get) == want
        assert record_size(record) == sizes[want]
        assert (entries is None) == (want == "snapshot")
    assert server.catch_up(0) == server.catch_up(0) and server.catch_up(0)[1] == 0  # up to date


@pytest.mark.parametrize("pid", [1, 2])
def test_either_catch_up_gives_the_device_the_servers_theta(server, tmp_path, pid):
    for mode in ("log", "snapshot"):
        server.cfg.catch_up = mode
        device = DeviceStore(tmp_path / f"{mode}.theta", server.setup.scorer.dim)
        held = server.cursors.start(pid)
        device.store(held, replay(torch.zeros(device.dim), server.log[:held]))
        caught = device.catch_up(decode_log(server.catch_up(pid)[0], server.wire))
        assert torch.equal(caught.theta, server.theta), mode
        assert device.load()[0] == len(server.log)
    server.cfg.catch_up = "auto"
