"""What a client that returns after R rounds away costs, per catch-up mode: bytes down and the
device's replay work, on the real model's adapter.

    python bench/catch_up.py                                  # the demo's config (configs/demo.toml)
    python bench/catch_up.py --rounds-away 1,10,100 --set scalar-bits=8
    python bench/catch_up.py --set layers=last-4              # another adapter
    python bench/catch_up.py --save                           # also docs/results/catch-up.md

For each R the server's log holds R blocks of K*q entries the client lacks. The bytes are those of
the catch-up fields exactly as the server serializes them (`FederatedServer.catch_up`,
`record_size`; Flower's envelope, the same for every mode, is not included), for `log`,
`snapshot` and `auto`. The scalars are seeded random numbers packed at `scalar-bits`: the bytes do
not depend on their values. The device's work is what `DeviceStore.catch_up` does with that
message on one thread: one randn(D) draw per log entry (counted, and timed on this CPU), none
for a snapshot (it reads D floats).

The model is loaded only for its adapter's size D (engine=eager: no program is lowered). Ends
with one JSON line: the rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clients.device import DeviceStore  # noqa: E402
from clients.protocol import decode_log, quantize, round_seeds  # noqa: E402
from clients.runconfig import load_config  # noqa: E402
from prge.update_log import LogEntry  # noqa: E402
from simulation.server_app import FederatedServer, record_size  # noqa: E402

MODES = ("log", "snapshot", "auto")


def grow_log(server: FederatedServer, rounds: int) -> None:
    """Append `rounds` blocks of seeded scalars, rounded as the wire carries them."""
    cfg, block = server.cfg, server.wire.block
    rng = np.random.default_rng(cfg.seed)
    for r in range(len(server.log_rounds) + 1, len(server.log_rounds) + rounds + 1):
        grads = quantize(rng.normal(0, 1, block), cfg.scalar_bits)
        server.log += [LogEntry(s, float(g), cfg.lr, cfg.q)
                       for s, g in zip(round_seeds(cfg.seed, r, block), grads, strict=True)]
        server.log_rounds.append(r)


def device_work(server: FederatedServer, record: dict) -> tuple[int, float]:
    """(entries replayed, seconds) for a device at the client's position to take `record`."""
    with tempfile.TemporaryDirectory() as tmp:
        device = DeviceStore(Path(tmp) / "0.theta", server.setup.scorer.dim)
        device.store(server.cursors.start(0), torch.zeros(device.dim))  # its theta: values do not matter
        t0 = time.perf_counter()
        caught = device.catch_up(decode_log(record, server.wire))
        return caught.replayed, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/demo.toml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--rounds-away", default="1,10,100,1000,10000")
    ap.add_argument("--save", nargs="?", const=True, metavar="PAGE",
                    help="also write docs/results/catch-up.json and its page "
                         "(or PAGE.json: a second setting's page)")
    args = ap.parse_args()
    torch.set_num_threads(1)  # one device, one core
    away = sorted(int(r) for r in args.rounds_away.split(","))
    cfg = load_config(Path(args.config), [*args.set, "engine=eager", "prefix-cache=off"])
    with tempfile.TemporaryDirectory() as run_dir:
        server = FederatedServer(cfg, Path(run_dir), grid=None, progress=False)
        dim, block = server.setup.scorer.dim, server.wire.block
        print(f"adapter D = {dim:,} ({cfg.model}, layers {cfg.layers}, rank {cfg.rank}), "
              f"K*q = {block}, scalar-bits = {cfg.scalar_bits}; snapshot = {4 * dim:,} bytes")
        grow_log(server, away[-1])
        rows = []
        print(f"{'rounds away':>11} {'mode':>8} {'bytes down':>12} {'entries':>9} "
              f"{'randn(D) draws':>14} {'device s':>9}")
        for r in away:
            server.cursors.held = {0: len(server.log) - r * block}
            for mode in MODES:
                server.cfg.catch_up = mode
                record, entries = server.catch_up(0)
                draws, seconds = device_work(server, record)
                row = {"rounds_away": r, "mode": mode, "bytes": record_size(record),
                       "entries_sent": entries or 0, "sent": "snapshot" if entries is None else "log",
                       "draws": draws, "device_s": round(seconds, 4)}
                rows.append(row)
                print(f"{r:>11,} {mode + ('→' + row['sent'] if mode == 'auto' else ''):>8} "
                      f"{row['bytes']:>12,} {row['entries_sent']:>9,} {draws:>14,} "
                      f"{seconds:>9.3f}")
    figures = {"adapter_dim": dim, "block": block, "scalar_bits": cfg.scalar_bits, "rows": rows}
    if args.save:
        from simulation.benchpage import save, table

        title = (f"Catching up after R rounds away on {cfg.model} (layers {cfg.layers}, rank "
                 f"{cfg.rank}, D = {dim:,}), K*q = {block}, scalar-bits = {cfg.scalar_bits}; "
                 f"snapshot = {4 * dim:,} bytes of theta")
        save("catch-up", [table(title, ["rounds away", "mode", "bytes down", "log entries sent",
                                        "randn(D) draws", "device s"],
                                [[f"{r['rounds_away']:,}",
                                  r["mode"] + ("→" + r["sent"] if r["mode"] == "auto" else ""),
                                  f"{r['bytes']:,}", f"{r['entries_sent']:,}", f"{r['draws']:,}",
                                  f"{r['device_s']:.3f}"] for r in rows], text_columns=2)],
             figures, notes=[
                 "bytes down: the catch-up fields as the server serializes them (Flower's "
                 "envelope, the same for every mode, left out); scalars seeded random numbers at "
                 "scalar-bits (the bytes do not depend on their values)",
                 "device s: DeviceStore.catch_up on one thread, one message each (no repetitions); "
                 f"config {args.config}" + (f" with {', '.join(args.set)}" if args.set else ""),
                 "not measured: Flower's envelope, the network, a device slower than this CPU"],
                 page=args.save)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
