"""ExecuTorch engine: the batched P-RGE forward runs as an exported ExecuTorch program.

The program's inputs are the token ids (N, T), the last-token positions (N,) and one flat tensor
of the C adapter copies (C, D), built on the host from seeds, so ExecuTorch's runtime stays
untouched and the federated protocol stays exact. Programs are lowered with the XNNPACK
partitioner, cached on disk by everything that changes them (weights, adapter spec, shapes,
library versions) and loaded once per process.

Programs have static row counts (batches are padded to `batch_rows` rows). The full program is
padded to `max_length` tokens, so a run needs one per number of copies (2q for training, 1 for
evaluation). The suffix programs are static too, one per token bucket: they run every step, and a
static shape is ~5-10 % faster there than a dynamic one. The prefix program runs once per example
and is dynamic in the token count: it costs what the example's own length costs (a 16-token batch
a quarter of a 64-token one), where a static one would pay for `max_length` every time.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import os
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from prge.packing import MIN_ROWS, Packing, pack_rows
from prge.quantize import check_scheme, ensure_runtime_kernels, quantized_copy
from prge.scorer import LabelScorer, model_fingerprint
from prge.tasks import Batch

_LOADED: dict[str, object] = {}  # cache key -> loaded ExecuTorch method, per process
DEFAULT_CACHE_BUDGET = 8 * 2**30  # bytes of programs kept on disk (one fp32 SmolLM2 program: ~0.5 GiB)


def _versions() -> str:
    return ",".join(f"{p}={importlib.metadata.version(p)}" for p in ("torch", "executorch"))


CPUINFO_PROBE = "[cpuinfo_utils.cpp"


@contextmanager
def _without_cpuinfo_probe():
    """XNNPACK probes the CPU the first time a process loads a delegate and prints each step
    from C++ straight to file descriptor 2 (`[cpuinfo_utils.cpp:71] Reading file ...`): noise
    for a user, who can do nothing about it. Capture fd 2 around the call and pass every other
    line on (an error ExecuTorch prints while loading still shows)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if CPUINFO_PROBE not in line)
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


def _match_threadpool(threads: int) -> None:
    """Size ExecuTorch's CPU threadpool like torch's, so that clients sharing cores (one thread
    each under Ray) do not oversubscribe them. The call is experimental: if a release drops it,
    say so (timings would then suffer from oversubscription) and go on."""
    try:
        from executorch.extension.pybindings import portable_lib
    except ImportError:
        return  # no runtime at all: loading the program reports that
    if not hasattr(portable_lib, "_unsafe_reset_threadpool"):
        warnings.warn("this ExecuTorch has no threadpool sizing call; its default threadpool "
                      "may oversubscribe cores shared by several clients", RuntimeWarning,
                      stacklevel=2)
        return
    with _without_cpuinfo_probe():  # the threadpool's first use probes the CPU
        if portable_lib._threadpool_get_thread_count() != threads:
            portable_lib._unsafe_reset_threadpool(threads)


def prune_cache(folder: Path, budget: int, keep: Path) -> list[Path]:
    """Delete the least recently used programs until the folder holds at most `budget` bytes.
    A program in use stays: `keep` (the one just written), every program this process has
    loaded, and any whose lock another process holds (it is between its existence check and its
    load, or lowering it). Loading refreshes a program's mtime, and unlinking a loaded program is
    safe on POSIX: the runtime maps the file and keeps it open.

    What remains possible: a program another process loaded earlier (its lock since released)
    can go. That process runs on from its open copy; one that has not loaded it yet lowers it
    again, once, since it is then in use there. So when a run's programs alone exceed the
    budget, the folder stays over it rather than its programs being lowered in a loop."""
    programs = _programs_by_age(folder)
    total = sum(size for _, size in programs)
    removed = []
    for p, size in programs:
        if total <= budget:
            break
        if p == keep or _loaded_here(p):
            continue
        if _remove_unless_locked(p):
            total -= size
            removed.append(p)
    return removed


def _programs_by_age(folder: Path) -> list[tuple[Path, int]]:
    """(path, size) of the cached programs, least recently used first; one another process
    removes meanwhile is left out."""
    found = []
    for p in folder.glob("prge-*.pte"):
        try:
            stat = p.stat()
        except FileNotFoundError:
            continue
        found.append((stat.st_mtime, p, stat.st_size))
    return [(p, size) for _, p, size in sorted(found, key=lambda f: f[0])]


def _loaded_here(path: Path) -> bool:
    return path.stem.removeprefix("prge-") in _LOADED


def _remove_unless_locked(path: Path) -> bool:
    """Remove a program unless a process holds its lock; never wait for one. Its lock file
    stays: removing it would let two processes lock two different files for the same program."""
    try:
        with _program_lock(path, fcntl.LOCK_EX | fcntl.LOCK_NB):
            path.unlink(missing_ok=True)
    except BlockingIOError:
        return False
    return True


@contextmanager
def _program_lock(path: Path, mode: int = fcntl.LOCK_EX):
    """A lock on one program of the cache, across processes (released when its holder exits,
    even killed, since the kernel drops a dead process's flock). Loaders share it
    (`fcntl.LOCK_SH`); lowering and pruning take it alone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _load(path: Path):
    from executorch.runtime import Runtime

    with _without_cpuinfo_probe():
        return Runtime.get().load_program(str(path)).load_method("forward")


def _load_if_present(path: Path):
    """The program at `path` loaded, or None when there is none; the caller holds its lock."""
    try:
        os.utime(path)  # the existence check; and recently used: the last to be pruned
    except FileNotFoundError:
        return None
    try:
        return _load(path)
    except RuntimeError:
        if path.exists():
            raise
        # Removed between the check and the load despite the lock (by hand, or by a process
        # that does not take it): the caller lowers it again.
        return None


def prefix_fingerprint(scorer: LabelScorer) -> str:
    """A digest of what the prefix program bakes in: the token embedding, the layers before
    `cache_layer` (never adapted) and the rotary and mask tables. Runs that differ only in their
    adapters (another seed's A, other targets on the same layers) share one prefix program, and
    so its minutes of lowering."""
    h = hashlib.blake2b(digest_size=16)
    keep = ("embed.",) + tuple(f"layers.{i}." for i in range(scorer.cache_layer))
    for name, tensor in sorted(scorer.state_dict().items()):
        if name.startswith(keep):
            h.update(name.encode())
            h.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    for table in scorer.constant_tables():
        h.update(table.detach().contiguous().cpu().numpy().tobytes())
    h.update(f"cache_layer={scorer.cache_layer}".encode())
    return h.hexdigest()


# Bump when the exported forward changes (the key hashes weights, shapes and library versions,
# not our code): 2 = last layer pruned to the last token; prefix and suffix programs;
# 3 = the prefix program is dynamic in tokens; 4 = attention projects q, k, v before reshaping
# them (same math; packed suffix programs).
FORWARD_VERSION = 4
MIN_DYNAMIC_TOKENS = 2  # export specializes a dimension of size 0 or 1: pad shorter inputs to 2


class _PrefixProgram(nn.Module):
    """input_ids (N, T) -> hidden states entering the scorer's cache layer (N, T, hidden)."""

    def __init__(self, scorer: LabelScorer):
        super().__init__()
        self.scorer = scorer

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.scorer.prefix(input_ids)


class _SuffixProgram(nn.Module):
    """hidden (N, T, hidden), last_index (N,), thetas (C, D) -> label logits (C, N, L)."""

    def __init__(self, scorer: LabelScorer):
        super().__init__()
        self.scorer = scorer

    def forward(self, hidden: torch.Tensor, last_index: torch.Tensor,
                thetas: torch.Tensor) -> torch.Tensor:
        return self.scorer.suffix(hidden, last_index, thetas)


class _PackedSuffixProgram(nn.Module):
    """Packed rows (P, hidden) and their Packing (prge/packing.py), thetas (C, D) -> label logits
    (C, N, L). Dynamic in P: a batch pays for its real tokens, not its padding."""

    def __init__(self, scorer: LabelScorer):
        super().__init__()
        self.scorer = scorer

    def forward(self, hidden: torch.Tensor, scatter: torch.Tensor, gather: torch.Tensor,
                last_rows: torch.Tensor, last_index: torch.Tensor,
                thetas: torch.Tensor) -> torch.Tensor:
        pack = Packing(scatter, gather, last_rows, last_index)
        return self.scorer.suffix(hidden, last_index, thetas, pack)


class ExecuTorchEngine:
    """Three kinds of program, all lowered on demand and cached:
      * `full`: (ids, last, thetas) -> logits, tokens padded to `max_length`;
      * `prefix`: ids -> hidden states at the cache layer (once per example, for the cache),
        dynamic in the token count;
      * `suffix`: (hidden, last, thetas) -> logits, one program per token bucket, so a step pays
        for the batch's own padded length and not for `max_length`;
      * `packed`: the suffix on the batch's real tokens back to back (prge/packing.py), one
        program per token bucket, dynamic in the packed row count."""

    def __init__(self, scorer: LabelScorer, cache_dir: str | os.PathLike, *, batch_rows: int,
                 max_length: int, threads: int = 0, quantize: str = "none",
                 cache_budget: int = DEFAULT_CACHE_BUDGET, log=print):
        self.quantize = check_scheme(quantize)  # base weights in the program: see prge.quantize
        if threads > 0:
            torch.set_num_threads(threads)
        _match_threadpool(torch.get_num_threads())
        self.scorer = scorer.eval()
        self.dim = scorer.dim
        self.hidden_size = scorer.embed.weight.shape[1]
        self.batch_rows, self.max_length = batch_rows, max_length
        self.cache_dir = Path(cache_dir)
        self.cache_budget = cache_budget
        self.log = log
        self.fingerprint = model_fingerprint(scorer)
        self._prefix_fingerprint: str | None = None  # hashed on first need: a full-program run never does
        self.lowering_s: dict[int, float] = {}  # copies -> seconds lowering the full program
        self.program_s: dict[str, float] = {}  # "kind CxRxT" -> seconds lowering (0 if cached)

    def _key(self, copies: int, kind: str = "full", tokens: int | None = None) -> str:
        tokens = self.max_length if tokens is None else tokens
        if kind == "prefix" and self._prefix_fingerprint is None:
            self._prefix_fingerprint = prefix_fingerprint(self.scorer)
        baked = self._prefix_fingerprint if kind == "prefix" else self.fingerprint
        spec = (f"{kind}|{baked}|{self.quantize}|{copies}x{self.batch_rows}x{tokens}|"
                f"{_versions()}|v{FORWARD_VERSION}")
        return hashlib.sha256(spec.encode()).hexdigest()[:24]

    def _pad(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        N, T = batch.input_ids.shape
        if T > self.max_length:
            raise ValueError(f"batch of {T} tokens exceeds the program's {self.max_length}")
        ids = torch.zeros(self.batch_rows, self.max_length, dtype=torch.long)
        ids[:N, :T] = batch.input_ids
        last = torch.zeros(self.batch_rows, dtype=torch.long)
        last[:N] = batch.last_index
        return ids, last

    def prepare(self, copies: list[int]) -> None:
        """Lower (or find in the cache) the programs for these copy counts ahead of time, e.g.
        once in the driver before many worker processes would each lower them at once."""
        for c in copies:
            self._method(c)

    def prepare_cached(self, copies: list[int], token_buckets: list[int],
                       packed: bool = False) -> None:
        """The same for the frozen-prefix path: the prefix program and one suffix program (packed
        or padded) per copy count and token bucket."""
        self._method(1, "prefix")
        for c in copies:
            for t in token_buckets:
                self._method(c, "packed" if packed else "suffix", t)

    def _example(self, kind: str, copies: int, tokens: int) -> tuple[torch.Tensor, ...]:
        rows = self.batch_rows
        ids = torch.zeros(rows, tokens, dtype=torch.long)
        last = torch.zeros(rows, dtype=torch.long)
        thetas = torch.zeros(copies, self.dim, dtype=torch.float32)
        if kind == "prefix":
            return (ids,)
        if kind == "suffix":
            return (torch.zeros(rows, tokens, self.hidden_size), last, thetas)
        if kind == "packed":
            hidden, pack = pack_rows([torch.zeros(tokens, self.hidden_size)] * (rows // 2 or 1),
                                     tokens, rows)
            return (hidden, *pack, thetas)
        return (ids, last, thetas)

    def _method(self, copies: int, kind: str = "full", tokens: int | None = None):
        tokens = self.max_length if tokens is None else tokens
        key = self._key(copies, kind, tokens)
        if key in _LOADED:
            return _LOADED[key]
        path = self.cache_dir / f"prge-{key}.pte"
        label = f"{kind} {copies}x{self.batch_rows}x{tokens}"
        ensure_runtime_kernels(self.quantize)
        # Held from the existence check until the program is loaded, so that no pruning removes
        # it in between; once loaded, the file may go.
        with _program_lock(path, fcntl.LOCK_SH):
            method = _load_if_present(path)
        lowered = False
        if method is None:
            method, lowered = self._lower_and_load(kind, copies, tokens, path, label)
        if not lowered:
            self.program_s.setdefault(label, 0.0)
            if kind == "full":
                self.lowering_s.setdefault(copies, 0.0)
        _LOADED[key] = method
        if lowered:
            for old in prune_cache(self.cache_dir, self.cache_budget, keep=path):
                self.log(f"program cache over {self.cache_budget / 2**30:.1f} GiB: removed {old.name}")
        return method

    def _lower_and_load(self, kind: str, copies: int, tokens: int, path: Path,
                        label: str) -> tuple[object, bool]:
        """(the program loaded, whether this process lowered it). One process per machine lowers
        a program; the others wait on its lock and load it (lowering takes minutes on a real
        model, and every client process may ask at once)."""
        with _program_lock(path):
            method = _load_if_present(path)  # lowered by another process while this one waited
            if method is not None:
                return method, False
            self._lower(kind, copies, tokens, path, label)
            return _load(path), True

    def _lower(self, kind: str, copies: int, tokens: int, path: Path, label: str) -> None:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

        t0 = time.perf_counter()
        self.log(f"lowering the {label} program with ExecuTorch (once per machine: it is cached "
                 f"in {self.cache_dir}; minutes on a real model)...")
        example = self._example(kind, copies, tokens)
        with torch.no_grad(), warnings.catch_warnings():
            # ExecuTorch's serializer trips torch's pytree deprecations, once per node: noise
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec.*")
            module = quantized_copy(self.scorer, self.quantize)
            if kind == "prefix":
                module = _PrefixProgram(module)
            elif kind == "suffix":
                module = _SuffixProgram(module)
            elif kind == "packed":
                module = _PackedSuffixProgram(module)
            dynamic = None
            if kind == "prefix":  # the token axis, up to the positions the scorer prepared
                dynamic = ({1: torch.export.Dim.DYNAMIC},)
            elif kind == "packed":  # the packed rows, up to every slot of the padded layout
                rows = torch.export.Dim("rows", min=MIN_ROWS, max=self.batch_rows * tokens)
                dynamic = ({0: rows}, None, {0: rows}, None, None, None)
            exported = torch.export.export(module, example, dynamic_shapes=dynamic, strict=False)
            del module  # a quantized copy lives only as long as its export
            t_export = time.perf_counter() - t0
            # The IR validity check re-walks the whole graph; equivalence is tested instead.
            edge = to_edge_transform_and_lower(
                exported, partitioner=[XnnpackPartitioner()],
                compile_config=EdgeCompileConfig(_check_ir_validity=False))
            t_lower = time.perf_counter() - t0 - t_export
            program = edge.to_executorch()
        graph = edge.exported_program().graph_module.graph
        partitions = sum(1 for n in graph.nodes
                         if n.op == "call_function" and "executorch_call_delegate" in str(n.target))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(program.buffer)
        os.replace(tmp, path)  # atomic: concurrent processes never read half a program
        seconds = time.perf_counter() - t0
        self.program_s[label] = seconds
        if kind == "full":
            self.lowering_s[copies] = seconds
        self.partitions = partitions
        self.log(f"exported {label} tokens: {self.quantize} weights, {partitions} XNNPACK "
                 f"partitions, {seconds:.1f} s (export {t_export:.1f} s, lower {t_lower:.1f} s), "
                 f"{path.stat().st_size / 2**20:.1f} MiB")

    def _row_chunks(self, n: int):
        return range(0, n, self.batch_rows)  # the programs' fixed row count

    def label_logits(self, batch: Batch, thetas: torch.Tensor) -> torch.Tensor:
        method = self._method(thetas.shape[0])
        thetas = thetas.to(torch.float32).contiguous()
        outs = []
        for start in self._row_chunks(len(batch)):
            part = Batch(batch.input_ids[start:start + self.batch_rows],
                         batch.last_index[start:start + self.batch_rows],
                         batch.labels[start:start + self.batch_rows])
            ids, last = self._pad(part)
            out = method.execute([ids, last, thetas])[0]
            outs.append(out[:, :len(part)])  # padded rows dropped
        return torch.cat(outs, dim=1)  # (C, N, num_labels)

    # The two halves, for the frozen-prefix cache (prge/prefix_cache.py).
    def prefix_hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(N, T) -> hidden states entering `scorer.cache_layer`, (N, T, hidden), through the
        prefix program (dynamic in T: a batch pays for its own length, once per example)."""
        method = self._method(1, "prefix")
        N, T = input_ids.shape
        if T > self.max_length:
            raise ValueError(f"batch of {T} tokens exceeds the program's {self.max_length}")
        outs = []
        for start in self._row_chunks(N):
            part = input_ids[start:start + self.batch_rows]
            ids = torch.zeros(self.batch_rows, max(T, MIN_DYNAMIC_TOKENS), dtype=torch.long)
            ids[:len(part), :T] = part
            outs.append(method.execute([ids])[0][:len(part), :T])
        return torch.cat(outs)

    def suffix_logits(self, hidden: torch.Tensor, last_index: torch.Tensor,
                      thetas: torch.Tensor) -> torch.Tensor:
        """hidden (N, T, hidden), last_index (N,), thetas (C, D) -> logits (C, N, L), through the
        suffix program of this token count (T is one of the encoder's buckets)."""
        N, T, H = hidden.shape
        method = self._method(thetas.shape[0], "suffix", T)
        thetas = thetas.to(torch.float32).contiguous()
        outs = []
        for start in self._row_chunks(N):
            n = min(self.batch_rows, N - start)
            h = torch.zeros(self.batch_rows, T, H)
            h[:n] = hidden[start:start + n]
            last = torch.zeros(self.batch_rows, dtype=torch.long)
            last[:n] = last_index[start:start + n]
            outs.append(method.execute([h, last, thetas])[0][:, :n])
        return torch.cat(outs, dim=1)

    def packed_suffix_logits(self, rows: list[torch.Tensor], tokens: int,
                             thetas: torch.Tensor) -> torch.Tensor:
        """rows: each example's cached hidden states (length_n, hidden), for a batch padded to
        `tokens` (one of the encoder's buckets) -> logits (C, N, L), through the packed suffix
        program: its linear layers run on the real tokens only."""
        method = self._method(thetas.shape[0], "packed", tokens)
        thetas = thetas.to(torch.float32).contiguous()
        outs = []
        for start in self._row_chunks(len(rows)):
            part = rows[start:start + self.batch_rows]
            hidden, pack = pack_rows(part, tokens, self.batch_rows)
            outs.append(method.execute([hidden, *pack, thetas])[0][:, :len(part)])
        return torch.cat(outs, dim=1)
