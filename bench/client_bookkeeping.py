"""Per-message work of a P-RGE client vs the length of the log it holds.

What a device does with every message before it trains (`clients.device.DeviceStore.catch_up`):
read its stored state (a cursor and theta), replay the new entries, store the state again. Each
row times one message that brings one new block of K*q = 32 entries to a device whose cursor is
at L, on the demo adapter's D = 41,472 (one thread), split into storage (read + write) and replay
(one randn(D) draw per new entry). A client should pay for what is new, not for the history: the
rows should not grow with L.

    python bench/client_bookkeeping.py                       # L = 1k, 10k, 100k, 1M
    python bench/client_bookkeeping.py --lengths 1000,30000 --dim 8192
    python bench/client_bookkeeping.py --save                # also docs/results/client-bookkeeping.md

Ends with one JSON line: seconds per message at each L (median of --repeats).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clients.device import DeviceStore  # noqa: E402
from clients.protocol import CatchUp  # noqa: E402
from prge.perturb import derive_seed  # noqa: E402
from prge.update_log import LogEntry  # noqa: E402

BLOCK, Q = 32, 4  # K*q scalars per round


def _block(start: int) -> list[LogEntry]:
    rng = np.random.default_rng(start)
    return [LogEntry(derive_seed(0, "bench", i), float(g), 0.01, Q)
            for i, g in zip(range(start, start + BLOCK), rng.normal(size=BLOCK), strict=True)]


def one_message(device: DeviceStore, length: int) -> dict:
    tail = _block(length)
    t0 = time.perf_counter()
    cursor, theta = device.load()
    device.store(cursor, theta)
    t1 = time.perf_counter()
    caught = device.catch_up(CatchUp(length, tail))  # read, replay 32, store
    t2 = time.perf_counter()
    assert caught.replayed == BLOCK
    return {"storage_s": t1 - t0, "message_s": t2 - t1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="1000,10000,100000,1000000")
    ap.add_argument("--dim", type=int, default=41_472)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--save", nargs="?", const=True, metavar="PAGE",
                    help="also write docs/results/client-bookkeeping.json and its page "
                         "(or PAGE.json: a second setting's page)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out, sizes = {}, {}
    print(f"{'log entries held':>18} | {'storage read + write':>20} | {'whole message':>13} |"
          f" {'device file':>11}")
    for length in (int(x) for x in args.lengths.split(",")):
        with TemporaryDirectory() as tmp:
            runs = []
            for _ in range(args.repeats):
                device = DeviceStore(Path(tmp) / "0.theta", args.dim)
                device.store(length, torch.zeros(args.dim))  # a device at position L
                runs.append(one_message(device, length))
            size = device.path.stat().st_size
        t = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        out[length], sizes[length] = t, size
        print(f"{length:>18,} | {t['storage_s'] * 1e3:>17.2f} ms | {t['message_s'] * 1e3:>10.2f} ms |"
              f" {size / 1024:>7.0f} KiB")
    figures = {"dim": args.dim, "seconds_per_message": {str(k): v for k, v in out.items()}}
    if args.save:
        from simulation.benchpage import save, table

        title = (f"A device's work per message bringing one block of {BLOCK} entries (q = {Q}) vs "
                 f"the log length it holds, D = {args.dim:,}, one thread, median of {args.repeats}")
        save("client-bookkeeping", [table(
            title, ["log entries held", "storage read + write", "whole message", "device file"],
            [[f"{n:,}", f"{t['storage_s'] * 1e3:.2f} ms", f"{t['message_s'] * 1e3:.2f} ms",
              f"{sizes[n] / 1024:.0f} KiB"] for n, t in out.items()])], figures, notes=[
            "whole message: DeviceStore.catch_up (read the cursor and theta, replay the new "
            "entries, one randn(D) each, store them); storage: one read and one write of the "
            "state, timed apart; the device's state written at position L before each repetition",
            "not measured: Flower's handling of the message, the local training steps"],
            page=args.save)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
