"""A device's personal state (clients/personalization/): one float32 vector, kept per round.

Stored in the device's storage beside its copy of the global adapter, in one file:

    <partition>.personal   up to two records, each: int64 round, int64 length n, n float32
                           (little-endian)

Two records because a round can run twice: when the server is killed after a device finished
round t but before its checkpoint of round t, the resumed server runs round t again, and the
device must start it from the state it had *before* round t, not from its own result. So a save
at round t keeps the latest record before t and the new one; a load for round t reads the
latest record before t. The file is replaced atomically (write aside, then rename).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from clients.protocol import ProtocolError

Records = dict[int, np.ndarray]  # round -> state (float32)


def latest_before(records: Records, server_round: int) -> torch.Tensor | None:
    rounds = [r for r in records if r < server_round]
    return torch.from_numpy(records[max(rounds)].copy()) if rounds else None


def kept_with(records: Records, server_round: int, state: torch.Tensor) -> Records:
    """The records after saving `state` at `server_round`: the one it started from, and it."""
    before = [r for r in records if r < server_round]
    kept = {max(before): records[max(before)]} if before else {}
    kept[server_round] = state.detach().to(torch.float32).numpy().copy()
    return kept


class PersonalStore:
    def __init__(self, path: Path):
        self.path = Path(path)

    def records(self) -> Records:
        if not self.path.is_file():
            return {}
        data, out, at = self.path.read_bytes(), {}, 0
        try:
            while at < len(data):
                server_round, n = (int(v) for v in np.frombuffer(data, "<i8", 2, at))
                at += 16
                if n < 0 or at + 4 * n > len(data):
                    raise ValueError
                out[server_round] = np.frombuffer(data, "<f4", n, at).astype(np.float32)
                at += 4 * n
        except ValueError:
            raise ProtocolError(f"personal state {self.path.name} is damaged") from None
        return out

    def load(self, server_round: int) -> torch.Tensor | None:
        return latest_before(self.records(), server_round)

    def save(self, server_round: int, state: torch.Tensor) -> None:
        kept = kept_with(self.records(), server_round, state)
        blob = b"".join(np.array([r, len(v)], "<i8").tobytes() + v.astype("<f4").tobytes()
                        for r, v in sorted(kept.items()))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, self.path)


class MemoryStore:
    """The same, in memory: for a device without storage (tests, the server's work counter)."""

    def __init__(self):
        self.kept: Records = {}

    def load(self, server_round: int) -> torch.Tensor | None:
        return latest_before(self.kept, server_round)

    def save(self, server_round: int, state: torch.Tensor) -> None:
        self.kept = kept_with(self.kept, server_round, state)
