"""What every task loader shares: a labeled text and the error for bad task data.

Its own module so that loaders of other sources (prge/vader.py) and the task registry
(prge/tasks.py, which dispatches to them) do not import each other.
"""

from __future__ import annotations

from dataclasses import dataclass


class TaskError(ValueError):
    """A task or data problem the user can fix (one sentence)."""


@dataclass(frozen=True)
class Example:
    text: str
    label: int
    domain: str = ""
