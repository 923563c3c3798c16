"""How long the server waits for replies, so that no single client can stall a run.

`round-deadline-s = auto` (the default) derives each round's deadline from the work the rounds so
far took on this machine: `round-deadline-factor` times the slowest complete round (at least
`round-deadline-min-s`). Before any round completed there is nothing to go by, and the first
round's clients load the model and their programs and may fill their frozen-prefix caches, so it
gets `round-deadline-first-s`. An honest client is never near these limits; a hung one is cut off
and counted `late`. The slowest round is part of every checkpoint: a resumed run gives each round
the deadline the uninterrupted run gave it (the first round's start-up is in that slowest round,
so a resumed run's restarted client processes fit in it too).

Personalization after the last round contacts every client, a cohort at a time; each cohort
gets the deadline of a round scaled by how many rounds' worth of local steps it takes
(`personal-steps` / `local-steps`, at least 1), and with `auto` never less than the first round's
allowance (clients never sampled before start up and fill their caches then).

A number sets every round's (and every personalization cohort's) deadline to that many seconds;
0 waits forever (one hung client then stalls the run). Rounds cut short by a deadline do not
count as "the work of a round".
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Deadlines:
    setting: float | str  # auto | seconds | 0
    factor: float = 10.0
    min_s: float = 60.0
    first_s: float = 900.0
    slowest: float = 0.0  # seconds of the slowest complete round (checkpointed)

    @classmethod
    def of(cls, cfg) -> Deadlines:
        return cls(cfg.round_deadline_s, cfg.round_deadline_factor, cfg.round_deadline_min_s,
                   cfg.round_deadline_first_s)

    def observe(self, round_s: float, complete: bool) -> None:
        if complete:
            self.slowest = max(self.slowest, round_s)

    def _auto(self, rounds_of_work: float = 1.0) -> float:
        if not self.slowest:
            return self.first_s
        return max(self.min_s, self.factor * self.slowest * rounds_of_work)

    def round(self) -> float | None:
        """Seconds to wait for this round's replies (None: no limit)."""
        if self.setting == "auto":
            return self._auto()
        return float(self.setting) or None

    def personalization(self, personal_steps: int, local_steps: int) -> float | None:
        """Seconds to wait for one cohort's personalization replies (None: no limit)."""
        if self.setting != "auto":
            return float(self.setting) or None
        return max(self.first_s, self._auto(max(1.0, personal_steps / local_steps)))
