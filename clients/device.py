"""A simulated device's copy of the global adapter: theta at a position of the server's log.

A real device would not keep the whole update log, only the adapter it rebuilt and how far into
the log it got (its cursor). So each simulated device stores exactly that, in one file of its
own storage:

    <partition>.theta    8-byte little-endian cursor, then theta as D little-endian float32

Every message brings what the device lacks: a log tail from the position the server believes it
holds, or a snapshot of theta (see clients/protocol.py, `CatchUp`). The device replays only the
new entries on its own theta (one randn(D) draw each: the device's own work, billed to the
client process that serves it, never hidden in a cache shared by clients) and stores the result,
so the work per message is O(new entries * D) and the file is O(D): neither grows with the log.

The file is replaced atomically (write aside, then rename), so a kill leaves the old state or the
new one, never a torn file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clients.protocol import CatchUp, ProtocolError, decode_tensor
from prge.update_log import replay

HEADER = 8  # bytes of the cursor


@dataclass(frozen=True)
class Caught:
    theta: torch.Tensor  # (D,) float32: theta at the server's current log position
    replayed: int  # log entries this device applied for the message (randn(D) draws)


class DeviceStore:
    def __init__(self, path: Path, dim: int):
        self.path, self.dim = Path(path), dim

    def load(self) -> tuple[int, torch.Tensor]:
        """(cursor, theta); a device that never stored anything holds theta_0 at position 0."""
        if not self.path.is_file():
            return 0, torch.zeros(self.dim)
        data = self.path.read_bytes()
        if len(data) != HEADER + 4 * self.dim:
            raise ProtocolError(f"device state {self.path.name} holds {len(data)} bytes, expected "
                                f"{HEADER + 4 * self.dim} (another adapter?)")
        cursor = int(np.frombuffer(data[:HEADER], dtype="<i8")[0])
        if cursor < 0:
            raise ProtocolError(f"device state {self.path.name} holds a negative log position")
        theta = torch.from_numpy(np.frombuffer(data[HEADER:], dtype="<f4").astype(np.float32))
        return cursor, theta

    def cursor(self) -> int:
        """The log position the device holds, as it would tell the server: 0 when it holds
        nothing usable (no state yet, or a damaged file: then it needs the whole log)."""
        try:
            return self.load()[0]
        except (OSError, ProtocolError):
            return 0

    def store(self, cursor: int, theta: torch.Tensor) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")  # one writer per name
        tmp.write_bytes(np.int64(cursor).astype("<i8").tobytes()
                        + theta.detach().numpy().astype("<f4").tobytes())
        os.replace(tmp, self.path)

    def catch_up(self, update: CatchUp) -> Caught:
        """Bring the stored theta to the server's position and store it; returns a copy."""
        if update.snapshot is not None:
            theta = decode_tensor(update.snapshot, self.dim)
            self.store(update.start, theta)
            return Caught(theta.clone(), 0)
        if update.start == 0:
            # the whole log: start over from theta_0 without reading the stored state, which
            # may be what is damaged (a full resend must always repair a device)
            cursor, theta = 0, torch.zeros(self.dim)
        else:
            cursor, theta = self.load()
        end = update.start + len(update.tail)
        if update.start > cursor:  # the server thinks we hold entries we never stored
            raise ProtocolError(f"log tail starts at {update.start} but this client holds "
                                f"{cursor} entries")
        if cursor > end:  # a theta from beyond the server's log: of no use for this round
            raise ProtocolError(f"this client holds {cursor} log entries, more than the server's "
                                f"{end}")
        # The server's log only grows and never rewrites history, so a device may be *ahead* of
        # what the server believes (it stored a tail, then the server was killed and resumed
        # from an earlier checkpoint): the entries it already applied are skipped. Were they
        # different, the reply's theta hash would not match and the server would resend the
        # whole log.
        new = update.tail[cursor - update.start:]
        replay(theta, new)
        self.store(end, theta)
        return Caught(theta.clone(), len(new))
