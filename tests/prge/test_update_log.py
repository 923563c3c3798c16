import torch

from prge.estimator import apply_update
from prge.perturb import derive_seed
from prge.update_log import LogEntry, replay, theta_hash


def _log(n: int, q: int = 2) -> list[LogEntry]:
    return [LogEntry(derive_seed(0, "log", i), 0.1 * (i - 3), 0.05, q) for i in range(n)]


def test_replay_equals_step_updates_bit_for_bit():
    dim, q = 300, 2
    theta = torch.zeros(dim)
    log = _log(6, q)
    for k in range(3):  # three P-RGE updates of q entries each
        chunk = log[k * q:(k + 1) * q]
        apply_update(theta, [e.seed for e in chunk], [e.grad for e in chunk], lr=0.05)
    assert torch.equal(replay(torch.zeros(dim), log), theta)
    assert theta_hash(replay(torch.zeros(dim), log)) == theta_hash(theta)


def test_hash_is_exact():
    t = torch.zeros(10)
    h = theta_hash(t)
    t[3] = 1e-30
    assert theta_hash(t) != h
    assert LogEntry.from_row(_log(1)[0].to_row()) == _log(1)[0]
