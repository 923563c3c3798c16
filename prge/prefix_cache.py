"""Frozen-prefix cache: hidden states of the frozen layers, computed once per example.

When the adapters sit in the last decoder layers, the layers before `LabelScorer.cache_layer` see
no adapter, so their output for an example never changes during training. A device computes it
the first time it meets the example (lazily) or for a whole set up front (`warm`), keeps it, and
every P-RGE step then runs only the suffix on the 2q copies:

    step cost without the cache:  prefix(N rows) + suffix(2q * N rows)
    step cost with the cache:     suffix(2q * N rows)

Entries are keyed by the example's real token ids (the prompt as the model sees it), so any batch,
in any order or padding, finds its rows; only real positions are stored, (tokens, hidden) each.
Right padding plus causal attention make a real token's hidden state independent of the padding
around it, so a row rebuilt from the cache equals the full forward's (tests/prge/test_prefix_cache).
"""

from __future__ import annotations

import os
import time
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from prge.tasks import Batch


class CacheBudgetError(ValueError):
    """The cache cannot hold even the batch at hand within its budget."""


class PrefixStoreError(ValueError):
    """A device's stored prefix file cannot be used: it must be computed and written again."""


@dataclass
class CacheStats:
    entries: int = 0
    bytes: int = 0  # bytes of hidden states held now
    hits: int = 0  # rows served from the cache
    misses: int = 0  # rows whose prefix had to be computed
    evictions: int = 0
    loaded: int = 0  # rows read back from a device's storage instead of computed
    compute_s: float = 0.0  # seconds spent computing prefixes

    def as_dict(self) -> dict:
        return {"entries": self.entries, "bytes": self.bytes, "hits": self.hits,
                "misses": self.misses, "evictions": self.evictions, "loaded": self.loaded,
                "compute_s": round(self.compute_s, 3)}


def _row_key(ids: torch.Tensor, last: int) -> bytes:
    return ids[: last + 1].to(torch.int32).numpy().tobytes()


TOKEN_BYTES = 4  # a key holds its example's token ids as int32


# What reading a damaged or foreign file raises: numpy's .npy reader, zipfile (which says
# NotImplementedError or RuntimeError for damaged flags and methods) and zlib; a damaged array
# header may also claim a size that cannot be allocated.
_READ_ERRORS = (OSError, EOFError, ValueError, RuntimeError, MemoryError, zipfile.BadZipFile,
                zlib.error)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of the .npz at `path`, read in full now (so that damage shows here)."""
    try:
        stored = np.load(path, allow_pickle=False)
        if isinstance(stored, np.lib.npyio.NpzFile):  # a bare .npy loads as one array instead
            with stored:
                return {name: stored[name] for name in stored.files}
    except _READ_ERRORS as err:
        raise PrefixStoreError(f"prefix store {path.name} cannot be read "
                               f"({type(err).__name__}: {err})") from err
    raise PrefixStoreError(f"prefix store {path.name} is not an .npz archive")


def _checked_key(path: Path, name: str) -> bytes:
    """The entry's key from its name, which `save` writes as the hex of int32 token ids."""
    try:
        key = bytes.fromhex(name)
    except ValueError:
        key = None
    if not key or key.hex() != name or len(key) % TOKEN_BYTES:
        raise PrefixStoreError(f"prefix store {path.name} has an entry named {name[:40]!r}, "
                               f"not the hex of int32 token ids")
    return key


def _checked_row(path: Path, name: str, array: np.ndarray, dtype: np.dtype,
                 hidden: int) -> torch.Tensor:
    """The entry as a row: (tokens of its key, hidden) in the dtype the prefix computes."""
    want = (len(name) // (2 * TOKEN_BYTES), hidden)
    if not isinstance(array, np.ndarray):  # a member that is not .npy reads as raw bytes
        raise PrefixStoreError(f"prefix store {path.name} holds a {type(array).__name__} "
                               f"entry, not an array")
    if array.dtype != dtype or array.shape != want:
        raise PrefixStoreError(f"prefix store {path.name} holds a {array.dtype} array of shape "
                               f"{array.shape} where a {dtype} one of shape {want} belongs")
    return torch.from_numpy(array)


class PrefixCache:
    """Per-example prefix hidden states within a byte budget; least recently used go first.

    compute: input_ids (N, T) -> hidden states (N, T, hidden) entering the cached layer.
    """

    def __init__(self, compute: Callable[[torch.Tensor], torch.Tensor], *, budget_bytes: int,
                 pad_id: int = 0):
        if budget_bytes <= 0:
            raise CacheBudgetError(f"prefix cache budget must be > 0 bytes, got {budget_bytes}")
        self.compute = compute
        self.budget = int(budget_bytes)
        self.pad_id = pad_id
        self.stats = CacheStats()
        self._rows: OrderedDict[bytes, torch.Tensor] = OrderedDict()  # key -> (tokens, hidden)
        self._spec: tuple[np.dtype, int] | None = None  # dtype, hidden size of computed rows

    def __len__(self) -> int:
        return len(self._rows)

    def _fill(self, missing: dict[bytes, torch.Tensor]) -> None:
        """Compute the prefix of the missing rows (real token ids each) in one right-padded
        batch and store their real positions."""
        seqs = list(missing.values())
        T = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), T), self.pad_id, dtype=torch.long)
        for n, s in enumerate(seqs):
            ids[n, : len(s)] = s
        t0 = time.perf_counter()
        with torch.inference_mode():
            h = self.compute(ids)  # (M, T, hidden)
        self.stats.compute_s += time.perf_counter() - t0
        self._learn_spec(h)
        for n, (key, s) in enumerate(zip(missing, seqs, strict=True)):
            row = h[n, : len(s)].clone()  # only real positions; a fresh tensor, not a view
            self._rows[key] = row
            self.stats.bytes += row.numel() * row.element_size()
        self.stats.misses += len(seqs)
        self.stats.entries = len(self._rows)

    def _evict(self, keep: set[bytes]) -> None:
        while self.stats.bytes > self.budget:
            victim = next((k for k in self._rows if k not in keep), None)
            if victim is None:
                raise CacheBudgetError(
                    f"prefix cache budget of {self.budget / 2**20:.1f} MiB cannot hold one batch "
                    f"({self.stats.bytes / 2**20:.1f} MiB): raise prefix-cache-mib")
            row = self._rows.pop(victim)
            self.stats.bytes -= row.numel() * row.element_size()
            self.stats.evictions += 1
        self.stats.entries = len(self._rows)

    def rows(self, batch: Batch) -> list[torch.Tensor]:
        """Each example's prefix hidden states at its real positions, (length_n, hidden),
        computing those not held yet."""
        keys = self.keys(batch)
        missing = {}
        for key, ids, last in zip(keys, batch.input_ids, batch.last_index, strict=True):
            if key in self._rows:
                self._rows.move_to_end(key)
            elif key not in missing:
                missing[key] = ids[: int(last) + 1]
        self.stats.hits += len(keys) - sum(1 for k in keys if k in missing)
        if missing:
            self._fill(missing)
            self._evict(keep=set(keys))
        return [self._rows[key] for key in keys]

    def hidden(self, batch: Batch) -> torch.Tensor:
        """The batch's prefix hidden states (N, T, hidden), zeros at padded positions (which no
        real token attends to)."""
        rows = self.rows(batch)
        N, T = batch.input_ids.shape
        h = torch.zeros(N, T, rows[0].shape[-1], dtype=rows[0].dtype)
        for n, row in enumerate(rows):
            h[n, : row.shape[0]] = row
        return h

    def keys(self, batch: Batch) -> list[bytes]:
        return [_row_key(ids, int(last)) for ids, last in zip(batch.input_ids, batch.last_index,
                                                              strict=True)]

    def save(self, path: Path, keys: Iterable[bytes]) -> None:
        """Write these entries to `path` (.npz: one array per entry, no pickle), atomically.
        A simulated device keeps its own examples' hidden states there, as a phone would in
        its storage, whichever simulator process serves it next."""
        arrays = {key.hex(): self._rows[key].numpy() for key in keys if key in self._rows}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)

    def load(self, path: Path) -> int:
        """Add the entries stored at `path`; returns how many (no prefix is computed). A file
        that is not exactly what `save` writes for this cache raises PrefixStoreError and adds
        nothing: the file is written in one piece, so one bad entry means that it is damaged
        or comes from another model, and none of its entries can be trusted."""
        arrays = _read_npz(path)
        dtype, hidden = self._row_spec()
        rows = {_checked_key(path, name): _checked_row(path, name, array, dtype, hidden)
                for name, array in arrays.items()}
        for key, row in rows.items():
            if key not in self._rows:
                self._rows[key] = row
                self.stats.bytes += row.numel() * row.element_size()
                self.stats.loaded += 1
        self._evict(keep=set())
        return len(rows)

    def _row_spec(self) -> tuple[np.dtype, int]:
        """The numpy dtype and hidden size of the rows `compute` produces: those of a row it
        computed, else of one token's prefix computed to find out (a stored file must not be
        trusted to say them)."""
        if self._spec is None:
            t0 = time.perf_counter()
            with torch.inference_mode():
                h = self.compute(torch.full((1, 1), self.pad_id, dtype=torch.long))
            self.stats.compute_s += time.perf_counter() - t0
            self._learn_spec(h)
        return self._spec

    def _learn_spec(self, h: torch.Tensor) -> None:
        self._spec = (torch.empty(0, dtype=h.dtype).numpy().dtype, int(h.shape[-1]))

    def warm(self, batches: Iterable[Batch]) -> None:
        """Compute the prefixes of every row of these batches now (up front, not lazily)."""
        for batch in batches:
            self.hidden(batch)


WARM_BATCH = 32  # examples per up-front fill batch


def warm_order(examples: list, batch_size: int = WARM_BATCH) -> list[list]:
    """The up-front fill's batches: examples sorted by length (little padding)."""
    ordered = sorted(examples, key=lambda ex: len(ex.text))
    return [ordered[i:i + batch_size] for i in range(0, len(ordered), batch_size)]


def warm_examples(engine, encoder, examples, batch_size: int = WARM_BATCH,
                  store: Path | None = None) -> float:
    """Fill an engine's prefix cache with these examples up front, in batches of similar length
    (little padding); seconds spent. With `store` (a device's storage), read them from there if
    it exists, else compute them and write them there. A no-op (0.0) without a cache."""
    if not isinstance(engine, PrefixCachedEngine) or not examples:
        return 0.0
    t0 = time.perf_counter()
    if store is not None and store.is_file():
        try:
            engine.cache.load(store)
            return time.perf_counter() - t0
        except PrefixStoreError:
            pass  # a damaged or foreign file: computed below and written over, atomically
    batches = [encoder.encode(chunk) for chunk in warm_order(list(examples), batch_size)]
    engine.cache.warm(batches)
    if store is not None:
        engine.cache.save(store, [k for b in batches for k in engine.cache.keys(b)])
    return time.perf_counter() - t0


def cache_summary(engine) -> dict:
    """What a run's summary says about the frozen-prefix cache of this process ({} if none)."""
    if not isinstance(engine, PrefixCachedEngine):
        return {}
    st = engine.cache.stats
    return {"prefix_cache": {**st.as_dict(),
                             "bytes_per_example": round(st.bytes / max(1, st.entries), 1)}}


class PrefixCachedEngine:
    """An engine whose forward is `inner.suffix_logits(cache.hidden(batch), ...)`: the frozen
    prefix runs once per example, ever; only the suffix runs per step and per copy. `inner` is
    an engine with both halves (`prefix_hidden`, `suffix_logits`): eager or ExecuTorch.
    `packed`: the suffix gets the batch's real tokens back to back (prge/packing.py), so its
    linear layers skip the padding; same logits."""

    def __init__(self, inner, cache: PrefixCache, packed: bool = False):
        self.inner = inner
        self.cache = cache
        self.dim = inner.dim
        self.packed = packed

    def label_logits(self, batch: Batch, thetas: torch.Tensor) -> torch.Tensor:
        if self.packed:
            return self.inner.packed_suffix_logits(self.cache.rows(batch),
                                                   batch.input_ids.shape[1], thetas)
        return self.inner.suffix_logits(self.cache.hidden(batch), batch.last_index, thetas)

    def prepare(self, copies: list[int], token_buckets: list[int]) -> None:
        """Lower the programs a run will need ahead of time (engines with programs only)."""
        if hasattr(self.inner, "prepare_cached"):
            self.inner.prepare_cached(copies, token_buckets, self.packed)


def with_prefix_cache(engine, budget_bytes: int, pad_id: int = 0,
                      packed: bool = False) -> PrefixCachedEngine:
    """Wrap an engine that exposes `prefix_hidden` and `suffix_logits` (eager, ExecuTorch)."""
    cache = PrefixCache(engine.prefix_hidden, budget_bytes=budget_bytes, pad_id=pad_id)
    return PrefixCachedEngine(engine, cache, packed)
