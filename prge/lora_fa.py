"""LoRA-FA adapters: `y = W x + B (A x)` with `A` random and frozen, `B` the only trained tensor.

`B` is not stored in the modules. The trained state is one flat vector `theta` (all `B`s
concatenated, see `AdapterLayout`), and a forward pass evaluates a *stack* of C adapter copies
`thetas` of shape (C, D) at once: the input batch is laid out copy-major, (C * N, ...), and copy `c`
uses its own `B_c`. This is how P-RGE evaluates its 2q perturbed copies in one batched forward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Short target names (what users write) -> attribute path inside a decoder layer (every family).
LAYER_TARGETS = {
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "o": "self_attn.o_proj",
    "gate": "mlp.gate_proj",
    "up": "mlp.up_proj",
    "down": "mlp.down_proj",
}
HEAD_TARGET = "head"  # LoRA-FA on the label-word rows of the LM head
DEFAULT_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")
ALL_TARGETS = (*LAYER_TARGETS, HEAD_TARGET)


class AdapterError(ValueError):
    """A bad adapter specification (unknown target, impossible layer range, ...)."""


def normalize_targets(targets: Sequence[str]) -> tuple[str, ...]:
    """Accept `q` or `q_proj`; reject unknown names; keep a canonical order."""
    names = []
    for t in targets:
        short = t.strip().removesuffix("_proj")
        if short not in ALL_TARGETS:
            raise AdapterError(f"unknown adapter target {t!r}; choose from {', '.join(ALL_TARGETS)}")
        names.append(short)
    if not names:
        raise AdapterError("at least one adapter target is needed")
    return tuple(t for t in ALL_TARGETS if t in names)


def select_layers(spec: str, num_layers: int) -> list[int]:
    """`all`, `last-N`, or `I-J` (inclusive) -> sorted decoder-layer indices."""
    spec = spec.strip()
    if spec == "all":
        return list(range(num_layers))
    try:
        if spec.startswith("last-"):
            n = int(spec.removeprefix("last-"))
            if not 0 <= n <= num_layers:
                raise ValueError
            return list(range(num_layers - n, num_layers))
        lo, hi = (int(x) for x in spec.split("-"))
        if not 0 <= lo <= hi < num_layers:
            raise ValueError
        return list(range(lo, hi + 1))
    except ValueError:
        raise AdapterError(
            f"layers={spec!r} is not 'all', 'last-N' or 'I-J' within 0..{num_layers - 1}"
        ) from None


class _CopiesMixin:
    """Holds the (C, out, r) view of B for the current forward; None means no adapter (B = 0)."""

    copies: torch.Tensor | None = None

    def _delta(self, x: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        # x: (C*N, ..., in) copy-major. Returns B_c (A x) for each copy, shaped like the output.
        B = self.copies
        C, out, r = B.shape
        xa = F.linear(x, A).reshape(C, -1, r)  # (C, N*T, r)
        return torch.bmm(xa, B.transpose(1, 2)).reshape(*x.shape[:-1], out)

    def _fanned_delta(self, x: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        # x: (N, ..., in), the SAME input for every copy. A x is computed once; returns
        # B_c (A x) for each copy, (C, N*..., out): only the rank-r product runs per copy.
        B = self.copies
        r = B.shape[2]
        xa = F.linear(x, A).reshape(1, -1, r)  # (1, N*T, r)
        return torch.matmul(xa, B.transpose(1, 2))  # (C, N*T, out)


class LoRAFALinear(nn.Module, _CopiesMixin):
    """Wraps a frozen `nn.Linear` W: `y = W x + B (A x)`, A ~ N(0, 1/in) of shape (r, in)."""

    def __init__(self, base: nn.Linear, rank: int, generator: torch.Generator):
        super().__init__()
        self.base = base
        self.rank = rank
        a = torch.randn(rank, base.in_features, generator=generator) / math.sqrt(base.in_features)
        # A frozen Parameter (not a buffer) keeps F.linear delegable when exported.
        self.A = nn.Parameter(a.to(base.weight.dtype), requires_grad=False)
        self.copies = None

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.copies is None:
            return y
        return y + self._delta(x, self.A)

    def fan_out(self, x: torch.Tensor, copies: int) -> torch.Tensor:
        """The output of every copy for an input shared by all of them: x (N, ..., in) ->
        (C*N, ..., out), copy-major. W x runs once, not C times: where the copies' inputs are
        still identical (the first adapted layer) only B's rank-r product differs per copy."""
        y = self.base(x)  # (N, ..., out)
        if self.copies is None:
            return y.repeat(copies, *([1] * (y.dim() - 1)))
        out = y.shape[-1]
        y = y.reshape(1, -1, out) + self._fanned_delta(x, self.A)  # (C, N*..., out)
        return y.reshape(copies * x.shape[0], *x.shape[1:-1], out)


class LabelHead(nn.Module, _CopiesMixin):
    """The LM head restricted to the label words' rows, optionally with a LoRA-FA adapter.

    Only the label words' logits at the last position matter to the task, so we never compute the
    full vocabulary head. As an adapter target (`head`), B has shape (num_labels, r).
    """

    def __init__(self, lm_head: nn.Linear, label_ids: Sequence[int], rank: int,
                 generator: torch.Generator | None):
        super().__init__()
        idx = torch.tensor(list(label_ids))
        self.weight = nn.Parameter(lm_head.weight.detach()[idx].clone(), requires_grad=False)
        bias = lm_head.bias.detach()[idx].clone() if lm_head.bias is not None else None
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None
        self.rank = rank
        self.A = None
        if generator is not None:
            hidden = self.weight.shape[1]
            a = torch.randn(rank, hidden, generator=generator) / math.sqrt(hidden)
            self.A = nn.Parameter(a.to(self.weight.dtype), requires_grad=False)
        self.copies = None

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # h: (C*N, hidden) -> (C*N, num_labels)
        y = F.linear(h, self.weight, self.bias)
        if self.copies is None:
            return y
        return y + self._delta(h, self.A)


@dataclass(frozen=True)
class AdapterSlot:
    name: str  # e.g. "layers.29.mlp.down_proj" or "head"
    out_features: int
    rank: int
    offset: int

    @property
    def size(self) -> int:
        return self.out_features * self.rank


class AdapterLayout:
    """Where each module's B lives inside the flat vector theta of length `dim`."""

    def __init__(self, modules: Sequence[tuple[str, nn.Module]]):
        self.modules = [m for _, m in modules]
        self.slots: list[AdapterSlot] = []
        offset = 0
        for name, m in modules:
            slot = AdapterSlot(name, m.out_features, m.rank, offset)
            self.slots.append(slot)
            offset += slot.size
        self.dim = offset

    def zeros(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """theta_0: B = 0 everywhere, so the adapted model equals the base model."""
        return torch.zeros(self.dim, dtype=dtype)

    def mask(self, targets: Sequence[str]) -> torch.Tensor:
        """(dim,) bool: the coordinates of theta that hold the B of these targets (q, ..., down,
        head) in every adapted layer. A target that is not adapted is an AdapterError."""
        wanted = normalize_targets(targets)
        out = torch.zeros(self.dim, dtype=torch.bool)
        found = set()
        for slot in self.slots:
            for t in wanted:
                if slot.name == HEAD_TARGET if t == HEAD_TARGET else slot.name.endswith(
                        "." + LAYER_TARGETS[t]):
                    out[slot.offset:slot.offset + slot.size] = True
                    found.add(t)
        missing = [t for t in wanted if t not in found]
        if missing:
            raise AdapterError(f"target(s) {', '.join(missing)} not adapted in this run")
        return out

    def set_copies(self, thetas: torch.Tensor | None) -> None:
        """Point every module at its slice of `thetas` (C, dim); None removes the adapters."""
        if thetas is None:
            for m in self.modules:
                m.copies = None
            return
        if thetas.dim() != 2 or thetas.shape[1] != self.dim:
            raise ValueError(f"thetas must have shape (copies, {self.dim}), got {tuple(thetas.shape)}")
        C = thetas.shape[0]
        for slot, m in zip(self.slots, self.modules, strict=True):
            m.copies = thetas[:, slot.offset:slot.offset + slot.size].view(
                C, slot.out_features, slot.rank)
