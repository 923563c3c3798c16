"""Device work in FLOPs, counted from the model's shapes, never from this host's clock.

A virtual device clock needs the work of a client's round as a number that is the same on every
machine. We count it with PyTorch's own FLOP counter (`torch.utils.flop_counter`) over the very
graph the engines run (`LabelScorer.prefix` / `.suffix`, which ExecuTorch programs are exported
from), executed on a *meta-device twin* of the scorer: its weights have shapes but no storage, so
a count takes milliseconds and no memory, and it is exact by construction rather than a formula
kept in step with the decoder loop by hand (and it holds for every model family the scorer runs).

What is counted: matrix products (mm, addmm, bmm: the projections, LoRA-FA's A and B, attention's
scores and mixing, the label head), 2 FLOPs per multiply-add. What is not: elementwise work
(norms, rotary, softmax, activations, residuals), a few percent of a forward on these shapes, and
memory traffic. Counts are memoised per call shape: (examples, tokens, copies, packed rows).
"""

from __future__ import annotations

import copy
from functools import lru_cache

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from prge.packing import pack_rows


def meta_twin(module: nn.Module) -> nn.Module:
    """A copy of `module` whose parameters and buffers live on the meta device (shapes only):
    the real tensors are never copied."""
    memo: dict[int, torch.Tensor] = {}
    for p in module.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=False)
    for b in module.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(module, memo)


def _counted(fn, *args) -> int:
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return int(counter.get_total_flops())


class FlopCounter:
    """FLOPs of one scorer's calls. `prefix(n, t)`: filling n examples' frozen-prefix rows at t
    tokens; `suffix(n, t, copies, packed_rows)`: one batched forward of `copies` adapter copies
    over n examples padded to t tokens (packed_rows: the real tokens when the suffix layout is
    packed, else None); `forward(...)`: both, as an engine without a prefix cache runs them."""

    def __init__(self, scorer: nn.Module):
        self._twin = meta_twin(scorer)
        self._hidden = int(scorer.embed.weight.shape[1])
        self._dim = int(scorer.dim)
        self.prefix = lru_cache(maxsize=4096)(self._prefix)
        self.suffix = lru_cache(maxsize=4096)(self._suffix)

    def _prefix(self, n: int, t: int) -> int:
        ids = torch.zeros(n, t, dtype=torch.long, device="meta")
        return _counted(self._twin.prefix, ids)

    def _suffix(self, n: int, t: int, copies: int, packed_rows: int | None = None) -> int:
        thetas = torch.zeros(copies, self._dim, device="meta")
        if packed_rows is None:
            hidden = torch.zeros(n, t, self._hidden, device="meta")
            last = torch.zeros(n, dtype=torch.long, device="meta")
            return _counted(self._twin.suffix, hidden, last, thetas)
        # a packing with `packed_rows` real tokens over n examples: the counts depend only on
        # its shapes, so any split of the tokens over the examples gives the same number
        lengths = _split(packed_rows, n, t)
        rows = [torch.zeros(k, self._hidden) for k in lengths]
        packed, pack = pack_rows(rows, t, n)
        pack = type(pack)(*(x.to("meta") for x in pack))
        return _counted(self._twin.suffix, packed.to("meta"), pack.last_index, thetas, pack)

    def forward(self, n: int, t: int, copies: int, packed_rows: int | None = None) -> int:
        return self.prefix(n, t) + self.suffix(n, t, copies, packed_rows)


def _split(total: int, n: int, t: int) -> list[int]:
    """`total` real tokens over n examples of at most t tokens each, at least one each."""
    if not n <= total <= n * t:
        raise ValueError(f"{total} real tokens cannot fill {n} examples of 1..{t} tokens")
    base, extra = divmod(total, n)
    return [base + (i < extra) for i in range(n)]
