"""Aggregation strategies over clients' scalar replies, and loading them by name or dotted path."""

from strategies.base import ScalarReply, ScalarStrategy
from strategies.loader import load_strategy

__all__ = ["ScalarReply", "ScalarStrategy", "load_strategy"]
