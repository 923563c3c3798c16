"""A run whose clients all fail stops, rather than ending with a normal summary at zero-shot
accuracy.

A broken client (a program that will not load, a corrupt device file, a bug) answers every
message with an error; each round then aggregates nothing. The server keeps the first error text
of each kind per round in metrics.jsonl, and after `max-failed-rounds` rounds in a row that
reached at least one client and got no valid reply it stops with `ClientsFailedError` (one line:
the rounds and the errors). Every round before the stop is checkpointed, so the run directory
resumes once the cause is fixed. Rounds in which every sampled device was offline reached no one:
they neither count nor break a streak. A device refused for memory (simulation/virtual_clock.py)
counts as reached: a fleet none of whose devices can hold the work stops the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The line a ServerApp that stops early prints (Flower's log stream does not carry its traceback);
# `fedprge run` finds it in the run's log and names the cause in its one-line error.
STOPPED = "fedprge: the run stopped: "


class ClientsFailedError(RuntimeError):
    """No client answered validly for too many rounds in a row (one line)."""


@dataclass
class FailureWatch:
    limit: int  # rounds in a row without a valid reply before the run stops (0: never)
    streak: int = 0  # such rounds up to now (checkpointed)
    errors: dict[str, str] = field(default_factory=dict)  # the latest failed round's first errors

    def observe(self, server_round: int, *, contacted: bool, valid: bool,
                errors: dict[str, str]) -> None:
        if valid:
            self.streak, self.errors = 0, {}
        elif contacted:
            self.streak += 1
            self.errors = dict(errors) or self.errors

    def check(self, server_round: int) -> None:
        """Raise once the streak has reached the limit (after the round was recorded)."""
        if not self.limit or self.streak < self.limit:
            return
        first = server_round - self.streak + 1
        said = "; ".join(f"{kind}: {text}" if text and text != kind else kind
                         for kind, text in sorted(self.errors.items())) or "no reply"
        raise ClientsFailedError(f"no client sent a valid reply in {self.streak} rounds in a row "
                                 f"(rounds {first}-{server_round}): {said}")
