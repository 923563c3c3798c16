"""The orphan watcher: whatever happens while it checks the owner, the run's group is killed."""

import threading

import psutil
import pytest

from simulation import owner as owner_module
from simulation.owner import stop_with_owner

TIMEOUT_S = 10


class _Vanishing:
    """An owner that exits between `is_running()` and `status()`, as a real one can."""

    def __init__(self, pid: int):
        self.pid = pid

    def is_running(self) -> bool:
        return True

    def status(self) -> str:
        raise psutil.NoSuchProcess(self.pid)


class _Unreadable(_Vanishing):
    def status(self) -> str:
        raise psutil.AccessDenied(self.pid)


class _Broken(_Vanishing):
    def status(self) -> str:
        raise RuntimeError("not a psutil error")


@pytest.mark.parametrize("owner", [
    pytest.param(_Vanishing, id="owner exits mid-check"),
    pytest.param(_Unreadable, id="owner unreadable"),
    # a bug in the check still kills, then shows its traceback as the thread ends
    pytest.param(_Broken, id="unexpected error", marks=pytest.mark.filterwarnings(
        "ignore::pytest.PytestUnhandledThreadExceptionWarning")),
])
def test_an_error_while_checking_the_owner_kills_the_run(monkeypatch, owner):
    """The check raised out of the watch thread, which ended without killing: the run went on
    writing into a directory whose lock was free. Now it is killed."""
    monkeypatch.setattr(owner_module.psutil, "Process", owner)
    killed = threading.Event()
    watcher = stop_with_owner(12345, kill=killed.set)  # never the test process's own group
    assert killed.wait(TIMEOUT_S), "the owner is gone but the run was not killed"
    watcher.join(TIMEOUT_S)
    assert not watcher.is_alive()


class _ExitsAfterThreeChecks(_Vanishing):
    checks = 0

    def is_running(self) -> bool:
        type(self).checks += 1
        return type(self).checks <= 3

    def status(self) -> str:
        return psutil.STATUS_SLEEPING


def test_the_run_lives_until_its_owner_exits(monkeypatch):
    monkeypatch.setattr(owner_module, "POLL_S", 0.01)
    monkeypatch.setattr(owner_module.psutil, "Process", _ExitsAfterThreeChecks)
    killed = threading.Event()
    stop_with_owner(12345, kill=killed.set)
    assert killed.wait(TIMEOUT_S)
    assert _ExitsAfterThreeChecks.checks == 4  # not killed while the owner ran
