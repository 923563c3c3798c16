"""Seeds -> random directions, and seeds derived from a run seed.

Every direction `z_s` is regenerated from its seed with a *local* `torch.Generator`, never the
global RNG, so any process (server, client, a later replay) rebuilds the same `z_s` from `s`.
This is what lets the federated protocol send seeds instead of vectors.
"""

from __future__ import annotations

import hashlib

import torch

SEED_BITS = 63  # seeds fit a signed int64 and a JSON number exactly


def derive_seed(run_seed: int, *path: int | str) -> int:
    """A 63-bit seed that depends only on `run_seed` and `path` (e.g. "train", step, query).

    Hashing (rather than `run_seed + i`) keeps seeds for different purposes independent.
    """
    text = "/".join(str(p) for p in (run_seed, *path))
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - SEED_BITS)


def direction(seed: int, dim: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The Gaussian direction z_s ~ N(0, I_dim) for `seed`. Shape (dim,)."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(dim, generator=generator, dtype=dtype)


def directions(seeds: list[int], dim: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Stacked directions for several seeds. Shape (len(seeds), dim)."""
    return torch.stack([direction(s, dim, dtype) for s in seeds])
