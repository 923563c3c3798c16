"""This machine's fp32 matmul ceiling, measured, for "fraction of peak" figures.

The ceiling is the best GFLOP/s of two GEMM libraries (PyTorch's `mm` and XNNPACK's, the latter as a
one-linear ExecuTorch program) over a square 2048^3 product and the decoder's own linear shapes.
Taking the best of both, at the forward's shapes too, keeps a fast forward from exceeding its
"peak" only because the reference kernel was slower than the one the forward used.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch import nn


def _best_seconds(fn, reps: int) -> float:
    fn()  # warm-up: thread pools, packed weights, caches
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _xnnpack_linear(m: int, k: int, n: int, folder: Path):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    x = torch.randn(m, k)
    exported = torch.export.export(nn.Linear(k, n, bias=False).eval(), (x,))
    program = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch()
    path = folder / f"linear-{m}x{k}x{n}.pte"
    path.write_bytes(program.buffer)
    method = Runtime.get().load_program(str(path)).load_method("forward")
    return lambda: method.execute([x])


def matmul_peak(shapes: list[tuple[int, int, int]], reps: int = 10) -> dict:
    """Best GFLOP/s per library over `shapes` (M, K, N) plus 2048^3; returns the figures and the
    overall best as `peak_gflops`."""
    shapes = [(2048, 2048, 2048), *shapes]
    best = {"torch": 0.0, "xnnpack": 0.0}
    with torch.no_grad(), tempfile.TemporaryDirectory() as folder:
        for m, k, n in shapes:
            flop = 2.0 * m * k * n
            a, b = torch.randn(m, k), torch.randn(k, n)
            best["torch"] = max(best["torch"], flop / _best_seconds(lambda a=a, b=b: a @ b, reps) / 1e9)
            run = _xnnpack_linear(m, k, n, Path(folder))
            best["xnnpack"] = max(best["xnnpack"], flop / _best_seconds(run, reps) / 1e9)
    return {"torch_gflops": round(best["torch"], 1), "xnnpack_gflops": round(best["xnnpack"], 1),
            "peak_gflops": round(max(best.values()), 1), "shapes": shapes}


def decoder_shapes(config, rows: int) -> list[tuple[int, int, int]]:
    """(M, K, N) of a Llama decoder layer's two largest linears for `rows` token rows."""
    h, i = config.hidden_size, config.intermediate_size
    return [(rows, h, i), (rows, i, h)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--save", nargs="?", const=True, metavar="PAGE",
                    help="also write docs/results/peak.json and its page "
                         "(or PAGE.json: a second setting's page)")
    args = ap.parse_args()
    reps = 10
    figures = matmul_peak([(512, 576, 1536), (1024, 576, 1536)], reps)
    if args.save:
        from simulation.benchpage import save, table

        shapes = ", ".join(f"{m}x{k}x{n}" for m, k, n in figures["shapes"])
        save("peak", [table(f"fp32 matmul ceiling of this machine: the best GFLOP/s over the shapes "
                            f"(M x K x N) {shapes}, best of {reps} runs each",
                            ["GEMM", "GFLOP/s"],
                            [["PyTorch mm", figures["torch_gflops"]],
                             ["XNNPACK (a one-linear ExecuTorch program)", figures["xnnpack_gflops"]],
                             ["ceiling: the better of the two", figures["peak_gflops"]]])],
             figures, notes=["each library timed alone at each shape after one warm-up run; the "
                             "ceiling is what bench/engine.py's fractions of peak divide by",
                             "not measured: other dtypes, one thread, other GEMM libraries"],
                             page=args.save)
    print(figures)


if __name__ == "__main__":
    main()
