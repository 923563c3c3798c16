"""Packed rows: a batch's real tokens back to back, without the padding between examples.

A right-padded batch of N examples at T tokens holds N*T positions, but only sum(lengths) are
real: on MR, 16 examples padded to 48 tokens hold 768 positions for about 510 real tokens. Every
linear layer (the projections and the MLP, nearly all of a layer's work) is row by row, so the
suffix runs them on the packed real tokens only, (P, hidden). Attention is the one step that
mixes positions; there the packed rows are scattered into the padded (N, T) layout, attention
runs exactly as it does on a padded batch, and its output is gathered back. The result for every
real token is the padded forward's (tests/prge/test_packing.py).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

MIN_ROWS = 2  # a dynamic dimension exported with size 0 or 1 is specialized: pack at least 2 rows


class Packing(NamedTuple):
    """Index tensors that map packed rows (P) to the padded slots (N, T) and back."""

    scatter: torch.Tensor  # (N, T) packed row of slot (n, t); padding slots point at row 0
    gather: torch.Tensor  # (P,) flat slot n*T + t of packed row p (extra rows: slot 0)
    last_rows: torch.Tensor  # (N,) packed row of each example's last real token
    last_index: torch.Tensor  # (N,) position of that token within its example


def pack_rows(rows: list[torch.Tensor], tokens: int, n_examples: int | None = None,
              min_rows: int = MIN_ROWS) -> tuple[torch.Tensor, Packing]:
    """rows: each example's hidden states at its real positions, (length_n, hidden).
    Returns the packed states (P, hidden) and their Packing for a padded layout of `tokens`
    positions. `n_examples` > len(rows) adds empty examples (a program's fixed row count): they
    read row 0 and their outputs are dropped. P is at least `min_rows` (zero rows appended)."""
    n_examples = len(rows) if n_examples is None else n_examples
    lengths = [int(r.shape[0]) for r in rows]
    if any(n < 1 or n > tokens for n in lengths):
        raise ValueError(f"example lengths must be within 1..{tokens}, got {lengths}")
    if n_examples < len(rows):
        raise ValueError(f"{len(rows)} examples do not fit {n_examples} rows")
    real = sum(lengths)
    P = max(real, min_rows)
    hidden = torch.cat(rows) if real == P else torch.cat(
        [*rows, rows[0].new_zeros(P - real, rows[0].shape[1])])
    scatter = torch.zeros(n_examples, tokens, dtype=torch.long)
    gather = torch.zeros(P, dtype=torch.long)
    last_rows = torch.zeros(n_examples, dtype=torch.long)
    last_index = torch.zeros(n_examples, dtype=torch.long)
    start = 0
    for n, length in enumerate(lengths):
        scatter[n, :length] = torch.arange(start, start + length)
        gather[start:start + length] = torch.arange(n * tokens, n * tokens + length)
        last_rows[n], last_index[n] = start + length - 1, length - 1
        start += length
    return hidden, Packing(scatter, gather, last_rows, last_index)


def to_slots(y: torch.Tensor, pack: Packing) -> torch.Tensor:
    """Packed rows to the padded layout: (R, P, F) -> (R*N, T, F), copy-major."""
    N, T = pack.scatter.shape
    return y.index_select(1, pack.scatter.reshape(-1)).reshape(y.shape[0] * N, T, y.shape[-1])


def to_rows(a: torch.Tensor, pack: Packing) -> torch.Tensor:
    """The padded layout back to packed rows: (R*N, T, F) -> (R, P, F)."""
    N, T = pack.scatter.shape
    return a.reshape(-1, N * T, a.shape[-1]).index_select(1, pack.gather)
