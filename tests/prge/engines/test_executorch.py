"""The ExecuTorch engine against the eager reference, on a tiny float32 Llama."""

import pytest
import torch

from prge.engines import executorch as et
from prge.engines.eager import EagerEngine
from prge.engines.executorch import ExecuTorchEngine
from prge.estimator import projected_grads
from prge.models import tiny_model
from prge.perturb import derive_seed
from prge.scorer import LabelScorer
from prge.tasks import Example, PromptEncoder
from tests.conftest import SAMPLE_TEXTS

ROWS, LENGTH = 4, 32


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    model, tok = tiny_model(seed=2)
    encoder = PromptEncoder(tok, "{text} It was", (" terrible", " great"), max_length=LENGTH)
    scorer = LabelScorer(model, encoder.label_ids, targets=["q", "k", "v", "o", "gate", "up",
                                                            "down", "head"], rank=4)
    cache = tmp_path_factory.mktemp("programs")
    lowered = ExecuTorchEngine(scorer, cache, batch_rows=ROWS, max_length=LENGTH, log=lambda m: None)
    return encoder, EagerEngine(scorer), lowered, cache


def _examples(n):
    return [Example(SAMPLE_TEXTS[i % len(SAMPLE_TEXTS)] + " x" * i, i % 2) for i in range(n)]


def test_logits_match_eager_for_many_copies_and_chunked_batches(engines):
    encoder, eager, lowered, _ = engines
    batch = encoder.encode(_examples(6))  # 6 rows: two chunks of the program's 4
    thetas = 0.2 * torch.randn(4, eager.dim, generator=torch.Generator().manual_seed(0))
    want = eager.label_logits(batch, thetas)
    got = lowered.label_logits(batch, thetas)
    assert got.shape == want.shape == (4, 6, 2)
    assert (got - want).abs().max().item() <= 1e-4
    assert torch.equal(got.argmax(-1), want.argmax(-1))
    assert lowered.partitions >= 1


def test_projected_gradients_agree_with_eager(engines):
    encoder, eager, lowered, _ = engines
    batch = encoder.encode(_examples(4))
    theta = 0.1 * torch.randn(eager.dim, generator=torch.Generator().manual_seed(1))
    seeds = [derive_seed(3, "et", i) for i in range(2)]
    g_eager, _ = projected_grads(eager, batch, theta, seeds, eps=1e-2)
    g_et, _ = projected_grads(lowered, batch, theta, seeds, eps=1e-2)
    assert torch.allclose(g_et, g_eager, rtol=1e-3, atol=1e-4), (g_et, g_eager)


def test_programs_are_cached_on_disk_by_key(engines):
    encoder, eager, lowered, cache = engines
    lowered.label_logits(encoder.encode(_examples(2)), torch.zeros(4, eager.dim))
    files = sorted(cache.glob("*.pte"))
    assert files
    et._LOADED.clear()  # a new process: nothing loaded, the files are there
    again = ExecuTorchEngine(lowered.scorer, cache, batch_rows=ROWS, max_length=LENGTH,
                             log=lambda m: None)
    again.label_logits(encoder.encode(_examples(2)), torch.zeros(4, eager.dim))
    assert again.lowering_s == {4: 0.0}  # loaded, not lowered again
    assert sorted(cache.glob("*.pte")) == files
    assert again._key(4) != again._key(2)  # the number of copies changes the program


@pytest.mark.parametrize("scheme, max_rel_err, min_agree", [("int8", 0.1, 0.9), ("int4", 0.6, 0.6)])
def test_quantized_program_is_smaller_close_to_fp32_and_leaves_the_scorer_fp32(
        engines, tmp_path, scheme, max_rel_err, min_agree):
    encoder, eager, lowered, fp32_cache = engines
    batch = encoder.encode(_examples(8))
    thetas = 0.2 * torch.randn(4, eager.dim, generator=torch.Generator().manual_seed(5))
    want = eager.label_logits(batch, thetas)
    quantized = ExecuTorchEngine(lowered.scorer, tmp_path, batch_rows=ROWS, max_length=LENGTH,
                                 quantize=scheme, log=lambda m: None)
    got = quantized.label_logits(batch, thetas)
    assert got.shape == want.shape and torch.isfinite(got).all()
    rel_err = ((got - want).abs().max() / want.abs().max()).item()
    assert 0 < rel_err <= max_rel_err  # quantized: close, but not the fp32 numbers
    assert (got.argmax(-1) == want.argmax(-1)).float().mean().item() >= min_agree
    assert quantized._key(4) != lowered._key(4)
    (program,) = tmp_path.glob("*.pte")
    fp32_size = min(p.stat().st_size for p in fp32_cache.glob("*.pte"))
    assert program.stat().st_size < fp32_size
    # the scorer is still fp32: eager gives exactly what it gave before
    assert torch.equal(eager.label_logits(batch, thetas), want)
    assert quantized.partitions == lowered.partitions  # the quantized linears stay delegated


def test_unknown_quantization_is_a_clear_error(engines, tmp_path):
    from prge.quantize import QuantError

    with pytest.raises(QuantError, match="unknown quantization 'int2'"):
        ExecuTorchEngine(engines[2].scorer, tmp_path, batch_rows=ROWS, max_length=LENGTH,
                         quantize="int2")


def test_program_cache_drops_least_recently_used_programs_over_budget(tmp_path):
    import os

    paths = []
    for i, size in enumerate([300, 200, 400, 100]):
        p = tmp_path / f"prge-{i}.pte"
        p.write_bytes(b"x" * size)
        os.utime(p, (1000 + i, 1000 + i))  # prge-0 is the least recently used
        paths.append(p)
    os.utime(paths[0], (2000, 2000))  # ... until it is loaded again
    removed = et.prune_cache(tmp_path, budget=600, keep=paths[3])
    assert removed == [paths[1], paths[2]]  # oldest first, until 400 bytes remain
    assert sorted(tmp_path.glob("*.pte")) == [paths[0], paths[3]]
    # the program just written stays even when it alone exceeds the budget
    assert et.prune_cache(tmp_path, budget=50, keep=paths[3]) == [paths[0]]
    assert list(tmp_path.glob("*.pte")) == [paths[3]]


class _Runtime:
    """ExecuTorch's runtime as far as the program cache sees it: loading opens the file (the real
    one maps it and keeps it open). `before_open` runs first: what another process does in the
    window between a loader's existence check and its load."""

    def __init__(self, before_open):
        self.before_open = before_open

    def load_program(self, path):
        from pathlib import Path
        from types import SimpleNamespace

        self.before_open(Path(path))
        if not Path(path).is_file():  # what the real runtime raises for a missing program
            raise RuntimeError(f"Failed to create MmapDataLoader from file {path}")
        data = Path(path).read_bytes()
        return SimpleNamespace(load_method=lambda name: ("loaded", data))


def _with_runtime(monkeypatch, before_open):
    from executorch.runtime import Runtime

    monkeypatch.setattr(Runtime, "get", staticmethod(lambda: _Runtime(before_open)))
    monkeypatch.setattr(et, "_LOADED", {})  # a fresh process: nothing loaded yet


def test_pruning_spares_a_program_another_process_is_loading(engines, tmp_path, monkeypatch):
    """A process lowers a program and prunes the cache while another has found an older one and
    is about to load it: the pruner skips the program being loaded (before its lock, it removed
    it and the loader failed)."""
    import os

    engine = ExecuTorchEngine(engines[2].scorer, tmp_path, batch_rows=ROWS, max_length=LENGTH,
                              log=lambda m: None)
    program = tmp_path / f"prge-{engine._key(2)}.pte"
    program.write_bytes(b"p" * 100)
    os.utime(program, (1000, 1000))  # the least recently used: the first to go
    written = tmp_path / "prge-just-written.pte"
    written.write_bytes(b"w" * 100)
    pruned = []
    _with_runtime(monkeypatch, lambda path: pruned.extend(
        et.prune_cache(tmp_path, budget=150, keep=written)))  # in the window: room for one
    assert engine._method(2) == ("loaded", b"p" * 100)
    assert pruned == [] and program.is_file()
    assert engine.lowering_s == {2: 0.0}  # found and loaded, not lowered
    # once loaded it is in use here for good: this process's own pruning leaves it too
    assert et.prune_cache(tmp_path, budget=150, keep=written) == []


def test_pruning_spares_programs_this_process_loaded_and_takes_unlocked_ones(tmp_path, monkeypatch):
    """A run whose programs alone exceed the budget keeps them (it would lower them again and
    again otherwise); another run's program, loaded by no one, goes."""
    import os

    monkeypatch.setattr(et, "_LOADED", {"run-a": object(), "run-b": object()})
    paths = {}
    for i, name in enumerate(["other", "run-a", "run-b"]):
        paths[name] = tmp_path / f"prge-{name}.pte"
        paths[name].write_bytes(b"x" * 100)
        os.utime(paths[name], (1000 + i, 1000 + i))
    assert et.prune_cache(tmp_path, budget=50, keep=paths["run-b"]) == [paths["other"]]
    assert sorted(tmp_path.glob("*.pte")) == [paths["run-a"], paths["run-b"]]


def test_a_program_removed_between_check_and_load_is_lowered_again(engines, tmp_path, monkeypatch):
    """Removed regardless of the lock (by hand, say) while a process loads it: it is lowered
    again, not a runtime error from a missing file."""
    engine = ExecuTorchEngine(engines[2].scorer, tmp_path, batch_rows=ROWS, max_length=LENGTH,
                              log=lambda m: None)
    program = tmp_path / f"prge-{engine._key(2)}.pte"
    program.write_bytes(b"old")
    removals = [program]

    def remove_once(path):
        while removals:
            removals.pop().unlink()

    def lower(kind, copies, tokens, path, label):
        path.write_bytes(b"new")
        engine.lowering_s[copies] = 1.0

    _with_runtime(monkeypatch, remove_once)
    monkeypatch.setattr(engine, "_lower", lower)
    assert engine._method(2) == ("loaded", b"new")
    assert engine.lowering_s == {2: 1.0}


def test_threadpool_is_sized_like_torch_and_a_missing_sizing_call_is_reported(monkeypatch):
    from executorch.extension.pybindings import portable_lib

    et._match_threadpool(1)
    assert portable_lib._threadpool_get_thread_count() == 1
    monkeypatch.delattr(portable_lib, "_unsafe_reset_threadpool")
    with pytest.warns(RuntimeWarning, match="threadpool"):
        et._match_threadpool(2)


def _suffix_engines(tmp_path, layers: str, packed: bool):
    """A tiny suffix adapter: (encoder, scorer, eager engine, ExecuTorch engine, cached one)."""
    from prge.prefix_cache import with_prefix_cache

    model, tok = tiny_model(seed=2)
    encoder = PromptEncoder(tok, "{text} It was", (" terrible", " great"), max_length=LENGTH)
    scorer = LabelScorer(model, encoder.label_ids, targets=["q", "k", "v", "o", "gate", "up",
                                                            "down"], rank=4, layers=layers)
    lowered = ExecuTorchEngine(scorer, tmp_path, batch_rows=ROWS, max_length=LENGTH,
                               log=lambda m: None)
    cached = with_prefix_cache(lowered, budget_bytes=2**30, packed=packed)
    return encoder, scorer, EagerEngine(scorer), lowered, cached


def test_prefix_and_suffix_programs_match_eager_from_the_cache(tmp_path):
    encoder, scorer, eager, lowered, cached = _suffix_engines(tmp_path, "last-1", packed=False)
    thetas = 0.2 * torch.randn(4, eager.dim, generator=torch.Generator().manual_seed(7))
    short = encoder.encode([Example(t, i % 2) for i, t in enumerate(["dull", "fine", "ok"])])
    long = encoder.encode(_examples(5))
    assert short.input_ids.shape[1] != long.input_ids.shape[1]  # two token buckets
    for batch in (short, long, short):
        want = eager.label_logits(batch, thetas)
        got = cached.label_logits(batch, thetas)
        assert (got - want).abs().max().item() <= 1e-4
        assert torch.equal(got.argmax(-1), want.argmax(-1))
    assert cached.cache.stats.misses == len(short) + len(long)  # the prefix ran once per example
    kinds = sorted(label.split()[0] for label in lowered.program_s)
    assert kinds == ["prefix", "suffix", "suffix"]  # one suffix program per token bucket
    # the one prefix program serves any length (dynamic tokens), a single token included
    for ids in (short.input_ids[:, :1], short.input_ids[:, :3], long.input_ids):
        want = scorer.prefix(ids)
        assert (lowered.prefix_hidden(ids) - want).abs().max().item() <= 1e-4 * want.abs().max()
    # ... and P-RGE's scalars through the cached programs agree with eager's
    theta = 0.1 * torch.randn(eager.dim, generator=torch.Generator().manual_seed(8))
    seeds = [derive_seed(4, "et", i) for i in range(2)]
    g_eager, _ = projected_grads(eager, long, theta, seeds, eps=1e-2)
    g_cached, _ = projected_grads(cached, long, theta, seeds, eps=1e-2)
    assert torch.allclose(g_cached, g_eager, rtol=1e-3, atol=1e-4)


def test_packed_suffix_program_matches_eager(tmp_path):
    """The packed program (real tokens only, dynamic row count) on two adapted layers, for a
    batch of more examples than the program's rows (two chunks, the second padded with empty
    examples) and a short one."""
    encoder, _, eager, lowered, packed = _suffix_engines(tmp_path, "last-2", packed=True)
    thetas = 0.2 * torch.randn(4, eager.dim, generator=torch.Generator().manual_seed(7))
    short = encoder.encode([Example(t, i % 2) for i, t in enumerate(["dull", "fine", "ok"])])
    for batch in (encoder.encode(_examples(5)), short):  # two token buckets
        want = eager.label_logits(batch, thetas)
        assert (packed.label_logits(batch, thetas) - want).abs().max().item() <= 1e-4
    assert sorted(label.split()[0] for label in lowered.program_s) == ["packed", "packed", "prefix"]
    theta = 0.1 * torch.randn(eager.dim, generator=torch.Generator().manual_seed(8))
    seeds = [derive_seed(4, "et", i) for i in range(2)]
    long = encoder.encode(_examples(5))
    g_eager, _ = projected_grads(eager, long, theta, seeds, eps=1e-2)
    g_packed, _ = projected_grads(packed, long, theta, seeds, eps=1e-2)
    assert torch.allclose(g_packed, g_eager, rtol=1e-3, atol=1e-4)


def test_prefix_program_key_ignores_the_adapters(tmp_path):
    """Another seed's A (or other targets on the same layers) reuses the prefix program; the
    suffix programs, which bake A in, and another cache layer do not."""
    model, tok = tiny_model(seed=2, layers=3)
    encoder = PromptEncoder(tok, "{text} It was", (" terrible", " great"), max_length=LENGTH)

    def engine(targets, layers, adapter_seed):
        scorer = LabelScorer(tiny_model(seed=2, layers=3)[0], encoder.label_ids, targets=targets,
                             rank=4, layers=layers, adapter_seed=adapter_seed)
        return ExecuTorchEngine(scorer, tmp_path, batch_rows=ROWS, max_length=LENGTH,
                                log=lambda m: None)

    a = engine(["q", "v"], "last-1", 0)
    b = engine(["q", "v", "down"], "last-1", 1)
    deeper = engine(["q", "v"], "last-2", 0)
    assert a._key(1, "prefix") == b._key(1, "prefix") != deeper._key(1, "prefix")
    assert a._key(8, "suffix", 16) != b._key(8, "suffix", 16)


LOWER_WHEN_TOLD = """
import sys, time
from pathlib import Path
from prge.engines.executorch import ExecuTorchEngine
from prge.models import tiny_model
from prge.scorer import LabelScorer
from prge.tasks import PromptEncoder
model, tok = tiny_model(seed=2)
encoder = PromptEncoder(tok, "{text} It was", (" terrible", " great"), max_length=32)
engine = ExecuTorchEngine(LabelScorer(model, encoder.label_ids, targets=["head"], rank=4),
                          sys.argv[1], batch_rows=4, max_length=32, log=lambda m: None)
go = Path(sys.argv[2])
while not go.exists():  # both processes ask for the program at the same moment
    time.sleep(0.01)
engine.prepare([2])
print(engine.lowering_s[2])
"""


def test_processes_asking_at_once_lower_a_program_once(tmp_path):
    """Many client processes start together on a cold cache: one lowers, the others wait for
    its program and load it (before the lock, each lowered its own copy)."""
    import subprocess
    import sys
    import time

    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", LOWER_WHEN_TOLD, str(tmp_path / "cache"),
                               str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    time.sleep(8)  # both have built their model and wait
    go.touch()
    seconds = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        seconds.append(float(out.split()[-1]))
    assert sorted(s > 0 for s in seconds) == [False, True], seconds
    assert len(list((tmp_path / "cache").glob("*.pte"))) == 1


def test_the_cpu_probe_lines_are_dropped_and_other_output_kept(capfd):
    import os

    with et._without_cpuinfo_probe():
        os.write(2, b"[cpuinfo_utils.cpp:71] Reading file /sys/devices/soc0/image_version\n")
        os.write(2, b"E executorch: an error the user must see\n")
    err = capfd.readouterr().err
    assert "cpuinfo_utils" not in err
    assert "an error the user must see" in err
