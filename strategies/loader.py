"""`strategy=mean` (a built-in: see BUILT_IN) or `strategy=package.module:ClassName` (your own)."""

from __future__ import annotations

import importlib
import os
import sys

from strategies.base import ScalarStrategy
from strategies.clipped import ClippedMean
from strategies.dp import DPGaussianMean
from strategies.mean import WeightedMean
from strategies.median import CoordinateMedian
from strategies.trimmed import TrimmedMean

BUILT_IN: dict[str, type[ScalarStrategy]] = {
    cls.name: cls for cls in (WeightedMean, CoordinateMedian, TrimmedMean, ClippedMean, DPGaussianMean)
}


class StrategyError(ValueError):
    """The strategy cannot be found or built (one sentence)."""


def load_strategy(spec: str, **kwargs) -> ScalarStrategy:
    if spec in BUILT_IN:
        cls = BUILT_IN[spec]
    elif ":" in spec:
        module_name, _, class_name = spec.partition(":")
        if os.getcwd() not in sys.path:  # like `python -m`: the user's own modules resolve from here
            sys.path.append(os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise StrategyError(f"strategy {spec!r}: cannot import {module_name!r} ({err})") from None
        cls = getattr(module, class_name, None)
        if not (isinstance(cls, type) and issubclass(cls, ScalarStrategy)):
            raise StrategyError(f"strategy {spec!r}: {class_name!r} is not a ScalarStrategy subclass")
    else:
        names = ", ".join(BUILT_IN)
        raise StrategyError(f"unknown strategy {spec!r}: use one of {names} or module:ClassName")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:  # an unknown keyword or a value __init__ rejected
        raise StrategyError(f"strategy {spec!r}: {err}") from None
