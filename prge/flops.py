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
memory traffic. A first-order step (`first_order`) counts its backward too, and the bytes of
the activations autograd keeps for it.
"""

from __future__ import annotations

import copy
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from prge.packing import MIN_ROWS, pack_rows


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
    packed, else None); `forward(...)`: both, as an engine without a prefix cache runs them;
    `first_order(n, t, cached)`: a first-order step's forward and backward (one copy).

    A virtual clock asks for thousands of shapes, so each count is taken once per token count
    and copy count and scaled: every product in these calls is per example (prefix, attention,
    the last token's layer, the head) or per packed row (the suffix's projections), so a count
    is `n * per_example + rows * per_row` exactly (tests/prge/test_flops.py checks it against
    direct counts)."""

    def __init__(self, scorer: nn.Module):
        self._twin = meta_twin(scorer)
        self._hidden = int(scorer.embed.weight.shape[1])
        self._dim = int(scorer.dim)
        self._prefix_one = lru_cache(maxsize=None)(self._prefix)
        self._suffix_padded_one = lru_cache(maxsize=None)(lambda t, c: self._suffix(1, t, c))
        self._suffix_packed = lru_cache(maxsize=None)(self._packed_terms)
        self._fo_one = lru_cache(maxsize=None)(self._first_order)
        self._suffix_one_token = lru_cache(maxsize=None)(lambda n, c: self._suffix(n, 1, c, n))

    # -- the public counts (scaled from memoised per-example and per-row terms) ---------------
    def prefix(self, n: int, t: int) -> int:
        return n * self._prefix_one(1, t)

    def suffix(self, n: int, t: int, copies: int, packed_rows: int | None = None) -> int:
        if packed_rows is None:
            return n * self._suffix_padded_one(t, copies)
        _split(packed_rows, n, t)  # refuses a token total that n examples of t cannot hold
        if t == 1:  # one token each (rows = n): the two terms cannot be told apart
            return self._suffix_one_token(n, copies)
        per_example, per_row = self._suffix_packed(t, copies)
        return n * per_example + max(packed_rows, MIN_ROWS) * per_row

    def forward(self, n: int, t: int, copies: int, packed_rows: int | None = None) -> int:
        return self.prefix(n, t) + self.suffix(n, t, copies, packed_rows)

    def first_order(self, n: int, t: int, cached: bool) -> int:
        """A first-order step (prge/first_order.py): the forward of one copy and its backward
        into theta, from the cached prefix (`cached`) or from the token ids."""
        return n * self._fo_one(t, cached)[0]

    def first_order_saved_bytes(self, n: int, t: int, cached: bool) -> int:
        """Bytes of the activations autograd keeps for that backward: the memory a first-order
        step needs beyond inference (P-RGE keeps none)."""
        return n * self._fo_one(t, cached)[1]

    # -- direct counts on the twin ------------------------------------------------------------
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

    def _packed_terms(self, t: int, copies: int) -> tuple[int, int]:
        """(per example, per packed row) of a packed suffix at t tokens: from two examples
        holding 2 and then 3 rows."""
        two, three = self._suffix(2, t, copies, 2), self._suffix(2, t, copies, 3)
        per_row = three - two
        return (two - 2 * per_row) // 2, per_row

    def _first_order(self, t: int, cached: bool) -> tuple[int, int]:
        """(FLOPs, activation bytes) of a first-order step on one example at t tokens. Autograd
        also saves the frozen weights it multiplies by (resident anyway): they are the part of
        the saved bytes that does not grow with the examples, and are left out."""
        one_flops, one_bytes = self._first_order_at(1, t, cached)
        _, two_bytes = self._first_order_at(2, t, cached)
        return one_flops, two_bytes - one_bytes

    def _first_order_at(self, n: int, t: int, cached: bool) -> tuple[int, int]:
        theta = torch.zeros(self._dim, device="meta", requires_grad=True)
        last = torch.zeros(n, dtype=torch.long, device="meta")
        saved: dict[int, torch.Tensor] = {}  # held, so that no id is reused while counting

        def keep(tensor: torch.Tensor) -> torch.Tensor:
            saved[id(tensor)] = tensor
            return tensor

        with FlopCounterMode(display=False) as counter:
            with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
                if cached:
                    h = torch.zeros(n, t, self._hidden, device="meta")
                    logits = self._twin.suffix(h, last, theta[None])[0]
                else:
                    ids = torch.zeros(n, t, dtype=torch.long, device="meta")
                    logits = self._twin(ids, last, theta[None])[0]
                loss = F.cross_entropy(logits, torch.zeros(n, dtype=torch.long, device="meta"))
            torch.autograd.grad(loss, theta)
        return int(counter.get_total_flops()), sum(x.numel() * x.element_size()
                                                   for x in saved.values())


def _split(total: int, n: int, t: int) -> list[int]:
    """`total` real tokens over n examples of at most t tokens each, at least one each."""
    if not n <= total <= n * t:
        raise ValueError(f"{total} real tokens cannot fill {n} examples of 1..{t} tokens")
    base, extra = divmod(total, n)
    return [base + (i < extra) for i in range(n)]
