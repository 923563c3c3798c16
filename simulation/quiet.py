"""Library warnings that a fedprge user can do nothing about, kept off the terminal."""

from __future__ import annotations

import warnings


def quiet_library_warnings() -> None:
    """Deprecations inside ExecuTorch and torch.jit, and ExecuTorch's note that its runtime API is
    experimental, are addressed to those libraries' developers. Call it again after importing
    flwr.simulation: that import turns every DeprecationWarning back on ("once"). Our own
    warnings still show."""
    warnings.filterwarnings("ignore", category=DeprecationWarning,
                            module=r"(executorch|torch\.jit|importlib\.resources)")
    warnings.filterwarnings("ignore", message="This API is experimental")
