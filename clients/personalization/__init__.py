"""Personalization methods: what each device does for its own adapter (see base.py)."""

from clients.personalization.base import Device, Personalization
from clients.personalization.loader import BUILT_IN, PersonalizationError, load_personalization

__all__ = ["BUILT_IN", "Device", "Personalization", "PersonalizationError",
           "load_personalization"]
