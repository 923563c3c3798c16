"""`strategy=mean` (a built-in) or `strategy=package.module:ClassName` (your own)."""

from __future__ import annotations

import importlib

from strategies.base import ScalarStrategy
from strategies.mean import WeightedMean

BUILT_IN: dict[str, type[ScalarStrategy]] = {"mean": WeightedMean}


class StrategyError(ValueError):
    """The strategy cannot be found or built (one sentence)."""


def load_strategy(spec: str, **kwargs) -> ScalarStrategy:
    if spec in BUILT_IN:
        cls = BUILT_IN[spec]
    elif ":" in spec:
        module_name, _, class_name = spec.partition(":")
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
    except TypeError as err:
        raise StrategyError(f"strategy {spec!r}: {err}") from None
