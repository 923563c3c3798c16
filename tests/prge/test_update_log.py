import torch

from prge.estimator import apply_update
from prge.perturb import derive_seed
from prge.update_log import LogEntry, ThetaCache, log_digest, replay, theta_hash


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


def test_cache_replays_only_the_missing_tail():
    log = _log(10)
    cache = ThetaCache(200)
    a = cache.rebuild(log[:4])
    assert cache.replayed == 4
    b = cache.rebuild(log)
    assert cache.replayed == 10  # 6 more, not 10 more
    assert torch.equal(b, replay(torch.zeros(200), log))
    assert torch.equal(a, replay(torch.zeros(200), log[:4]))
    b.add_(1.0)  # callers get a copy: the cache is never corrupted by local training
    assert torch.equal(cache.rebuild(log), replay(torch.zeros(200), log))


def test_cache_starts_over_on_another_history():
    cache = ThetaCache(50)
    cache.rebuild(_log(5))
    other = [LogEntry(1, 1.0, 0.1, 2)] + _log(5)[1:]
    assert torch.equal(cache.rebuild(other), replay(torch.zeros(50), other))
    assert torch.equal(cache.rebuild(_log(3)), replay(torch.zeros(50), _log(3)))


def test_digest_and_hash_are_exact():
    assert log_digest(_log(3)) == log_digest(_log(3)) != log_digest(_log(4))
    t = torch.zeros(10)
    h = theta_hash(t)
    t[3] = 1e-30
    assert theta_hash(t) != h
    assert LogEntry.from_row(_log(1)[0].to_row()) == _log(1)[0]
