"""`personalization = finetune` (a built-in: see BUILT_IN) or `package.module:ClassName` (your own),
built with the keyword arguments of `personalization-args`."""

from __future__ import annotations

import importlib

from clients.personalization.base import Personalization
from clients.personalization.ditto import Ditto
from clients.personalization.finetune import FineTune
from clients.personalization.local import LocalOnly
from clients.personalization.mixture import Mixture
from clients.personalization.none import GlobalOnly
from clients.personalization.split import Split
from strategies.loader import working_dir_importable

BUILT_IN: dict[str, type[Personalization]] = {
    cls.name: cls for cls in (FineTune, Ditto, Mixture, Split, LocalOnly, GlobalOnly)
}


class PersonalizationError(ValueError):
    """The personalization method cannot be found or built (one sentence)."""


def load_personalization(spec: str, **kwargs) -> Personalization:
    if spec in BUILT_IN:
        cls = BUILT_IN[spec]
    elif ":" in spec:
        module_name, _, class_name = spec.partition(":")
        try:
            with working_dir_importable():
                module = importlib.import_module(module_name)
        except ImportError as err:
            raise PersonalizationError(f"personalization {spec!r}: cannot import "
                                       f"{module_name!r} ({err})") from None
        cls = getattr(module, class_name, None)
        if not (isinstance(cls, type) and issubclass(cls, Personalization)):
            raise PersonalizationError(f"personalization {spec!r}: {class_name!r} is not a "
                                       "Personalization subclass")
    else:
        names = ", ".join(BUILT_IN)
        raise PersonalizationError(f"unknown personalization {spec!r}: use one of {names} or "
                                   "module:ClassName")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise PersonalizationError(f"personalization {spec!r}: {err}") from None
