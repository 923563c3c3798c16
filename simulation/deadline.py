"""How long the server waits for replies, so that no single client can stall a run.

`round-deadline-s = auto` (the default) derives each round's deadline from the work the rounds so
far took on this machine: FACTOR times the slowest complete round (at least MIN_S). The first
round of a process has nothing to go by, and its clients load the model and their programs and may
fill their frozen-prefix caches, so it gets FIRST_S. An honest client is never near these limits;
a hung one is cut off and counted `late`. Personalization after the last round contacts every
client, so its deadline scales with how many rounds' worth of clients that is.

A number sets every round's deadline to that many seconds; 0 waits forever (one hung client then
stalls the run). Rounds cut short by a deadline do not count as "the work of a round".
"""

from __future__ import annotations

import math

FIRST_S = 900.0
MIN_S = 60.0
FACTOR = 10.0


class Deadlines:
    def __init__(self, setting: float | str):
        self.setting = setting
        self.slowest = 0.0  # seconds of the slowest complete round seen by this process

    def observe(self, round_s: float, complete: bool) -> None:
        if complete:
            self.slowest = max(self.slowest, round_s)

    def _auto(self, rounds_of_work: float = 1.0) -> float:
        if not self.slowest:
            return FIRST_S
        return max(MIN_S, FACTOR * self.slowest * rounds_of_work)

    def round(self) -> float | None:
        """Seconds to wait for this round's replies (None: no limit)."""
        if self.setting == "auto":
            return self._auto()
        return float(self.setting) or None

    def personalization(self, num_clients: int, clients_per_round: int, personal_steps: int,
                        local_steps: int) -> float | None:
        """Seconds to wait for every client's personalization reply (None: no limit)."""
        if self.setting == 0:
            return None
        work = math.ceil(num_clients / clients_per_round) * max(1.0, personal_steps / local_steps)
        return max(FIRST_S, self._auto(work))
