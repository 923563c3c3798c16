"""`strategy=mean` (a built-in: see BUILT_IN) or `strategy=package.module:ClassName` (your own)."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator

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


def is_plugin(spec: str) -> bool:
    """Whether loading `spec` imports a module (and so runs its code)."""
    return spec not in BUILT_IN and ":" in spec


@contextlib.contextmanager
def working_dir_importable() -> Iterator[None]:
    """Like `python -m`, the user's own modules resolve from the working directory, but only while
    the plug-in is imported: left on sys.path, the directory would supply any module the process
    imports later and finds nowhere else, from whatever directory the command runs in."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.append(cwd)  # after the environment's own packages: it never shadows them
    try:
        yield
    finally:
        if added:
            sys.path.remove(cwd)


def load_strategy(spec: str, **kwargs) -> ScalarStrategy:
    if spec in BUILT_IN:
        cls = BUILT_IN[spec]
    elif is_plugin(spec):
        module_name, _, class_name = spec.partition(":")
        try:
            with working_dir_importable():
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
