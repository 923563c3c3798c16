"""What the server believes each device holds of the update log: where its next tail starts.

The rule, stated once (every message outcome goes through `DeviceCursors.settle`):
- a valid reply: the device rebuilt theta_t (its hash says so), so it holds the whole log that
  was sent (`sent`);
- an error reply that reports the device's cursor (clients/protocol.py, `with_cursor`: a
  simulated crash, any exception the client raised): exactly that;
- a reply rejected for its content (too large, wrong length, ...): the device answered after it
  caught up, so it holds the log sent if the reply was built on the server's theta (its
  `theta-hash`), else nothing the server can build on: it is sent the whole log, which repairs
  it (FederatedServer.what_it_holds);
- anything else (no reply before the deadline, a client process lost on every attempt, an error
  that carries no cursor): the server cannot tell whether the message reached the device. It
  keeps what it knew before (a lower bound: a device's log only grows, and a device that holds
  more skips what it has) and marks the device `unsure`; the next time the device is sampled, the
  server asks it for its cursor first (a small "query" message, billed like any other), so the
  tail it then sends starts where the device really is.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DeviceCursors:
    held: dict[int, int] = field(default_factory=dict)  # partition id -> log entries it holds
    unsure: set[int] = field(default_factory=set)  # devices whose cursor must be asked first

    def start(self, pid: int) -> int:
        """The log position the next tail for this device starts at."""
        return self.held.get(pid, 0)

    def settle(self, pid: int, *, sent: int, valid: bool = False,
               reported: int | None = None) -> None:
        """After one message to `pid` that carried the log up to `sent` entries."""
        if valid:
            self.held[pid] = sent
        elif reported is not None:
            self.held[pid] = min(max(0, reported), sent)  # never beyond what the server has
        else:
            self.unsure.add(pid)
            return
        self.unsure.discard(pid)

    def told(self, pid: int, cursor: int, log_len: int) -> None:
        """The device answered a cursor query (a negative cursor: it cannot say)."""
        if 0 <= cursor <= log_len:
            self.held[pid] = cursor
            self.unsure.discard(pid)
