"""Aggregation strategies over clients' scalar replies, and loading them by name or dotted path."""

from strategies.base import ScalarReply, ScalarStrategy
from strategies.clipped import ClippedMean
from strategies.dp import DPGaussianMean
from strategies.loader import BUILT_IN, StrategyError, load_strategy
from strategies.mean import WeightedMean
from strategies.median import CoordinateMedian
from strategies.trimmed import TrimmedMean

__all__ = [
    "BUILT_IN", "ClippedMean", "CoordinateMedian", "DPGaussianMean", "ScalarReply", "ScalarStrategy",
    "StrategyError", "TrimmedMean", "WeightedMean", "load_strategy",
]
