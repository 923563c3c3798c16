"""Per-message bookkeeping of a P-RGE client vs the length of the log it holds.

What a client does with every message before it trains, apart from replaying the new entries
themselves: read its stored log from the device's storage, check the process's cached theta
against it, append the new block and store the log again (`clients.app._extend_log`,
`prge.update_log.ThetaCache`). Each row times one message that brings one new block of K*q = 32
entries to a device holding L entries, with the cache already at L (so the replay is of the 32
new entries only, also timed, on the tiny model's D). The rows show whether that work grows with
L: a client should pay for what is new, not for the history.

    python bench/client_bookkeeping.py                       # L = 1k, 10k, 100k
    python bench/client_bookkeeping.py --lengths 1000,30000

Ends with one JSON line: seconds per message at each L.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flwr.app import Context, RecordDict  # noqa: E402

from clients.app import _extend_log  # noqa: E402
from prge.perturb import derive_seed  # noqa: E402
from prge.update_log import LogEntry, ThetaCache  # noqa: E402

BLOCK, Q, DIM = 32, 4, 8192  # K*q scalars per round; the tiny model's adapter size


def _entries(a: int, b: int) -> list[LogEntry]:
    rng = np.random.default_rng(a)
    return [LogEntry(derive_seed(0, "bench", i), float(g), 0.01, Q)
            for i, g in zip(range(a, b), rng.normal(size=b - a), strict=True)]


def one_message(device: Path, cache: ThetaCache, length: int) -> dict:
    ctx = Context(run_id=1, node_id=1, node_config={"partition-id": 0}, state=RecordDict(),
                  run_config={})
    tail = _entries(length, length + BLOCK)
    t0 = time.perf_counter()
    log = _extend_log(ctx, length, tail, Q, device)  # read, check, append, store
    t1 = time.perf_counter()
    cache.rebuild(log)  # prefix check, then the BLOCK new entries
    t2 = time.perf_counter()
    return {"storage_s": t1 - t0, "cache_s": t2 - t1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="1000,10000,100000")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = {}
    print(f"{'log entries held':>18} | {'device storage':>14} | {'cache check + replay of 32':>26} |"
          f" {'device file':>11}")
    for length in (int(x) for x in args.lengths.split(",")):
        with TemporaryDirectory() as tmp:
            device = Path(tmp) / "0.json"
            ctx = Context(run_id=1, node_id=1, node_config={"partition-id": 0},
                          state=RecordDict(), run_config={})
            history = _entries(0, length)
            _extend_log(ctx, 0, history, Q, device)
            cache = ThetaCache(DIM)
            cache.rebuild(history)  # the process already rebuilt theta for this history
            t = one_message(device, cache, length)
            size = device.stat().st_size
        out[length] = t
        print(f"{length:>18,} | {t['storage_s'] * 1e3:>11.1f} ms | {t['cache_s'] * 1e3:>23.1f} ms |"
              f" {size / 2**20:>7.2f} MiB")
    print(json.dumps({"seconds_per_message": {str(k): v for k, v in out.items()}}))


if __name__ == "__main__":
    main()
