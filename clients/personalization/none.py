"""none: every device predicts with the global adapter (the reference a personalization method
must beat on each client's own data)."""

from __future__ import annotations

from clients.personalization.base import Personalization


class GlobalOnly(Personalization):
    name = "none"
