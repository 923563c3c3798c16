"""The round's deadline: which simulated stragglers are late, and how long the server waits.

The deadline does two jobs. It judges simulated delays: a straggler's reply arrives `straggle-s`
simulated seconds after the round's work and is `late` when that is past the deadline
(clients/faults.py); with a number this verdict is the same on every host and after every
resume. And it bounds the server's real wait, so that no client process can stall a run: a
reply that has not come when it runs out (a hung device) is cut off as `timeout`.

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
count as "the work of a round". Under `auto` a straggler's verdict follows this host's round
times: set a number for a straggler study that must reproduce on other hosts.

The first contact of each launch (a fresh run's first round, or a resumed run's first round or
personalization cohort) also starts the client processes, which load the model and programs:
its wait is at least `round-deadline-first-s` whatever number is set, so that a resumed run never
cuts off an honest reply that the uninterrupted run, its processes already started, received.
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

    def wait(self, deadline: float | None, first_of_launch: bool) -> float | None:
        """Seconds the server really waits for replies under `deadline` (None: no limit)."""
        if deadline is None or not first_of_launch:
            return deadline
        return max(deadline, self.first_s)

    def personalization(self, personal_steps: int, local_steps: int) -> float | None:
        """Seconds to wait for one cohort's personalization replies (None: no limit)."""
        if self.setting != "auto":
            return float(self.setting) or None
        return max(self.first_s, self._auto(max(1.0, personal_steps / local_steps)))
