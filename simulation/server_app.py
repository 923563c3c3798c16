"""The Flower ServerApp: samples clients, ships log tails and seeds, validates and aggregates scalar
replies, keeps the update log (the whole model state), evaluates, and writes the run directory.

The server holds no client's data and needs the model only for central evaluation: aggregation
touches seeds and scalars alone.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import Counter
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common.serde import config_record_to_proto, message_to_proto
from flwr.serverapp import Grid, ServerApp
from tqdm import tqdm

from clients.build import build
from clients.busy import stop_busy
from clients.faults import adversaries, draw_faults
from clients.partition import run_partitions
from clients.protocol import (
    Wire,
    encode_log,
    encode_snapshot,
    encode_tensor,
    encode_train_ins,
    quantize,
    round_seeds,
)
from clients.runconfig import Config, config_from_flower
from prge.estimator import scheduled_lr
from prge.evaluate import evaluate
from prge.perturb import derive_seed
from prge.prefix_cache import cache_summary, warm_examples
from prge.scorer import model_fingerprint
from prge.update_log import LogEntry, replay, state_hash, theta_hash
from simulation.checkpoint import Checkpoint, keep_lines, load_checkpoint, save_checkpoint
from simulation.deadline import Deadlines
from simulation.environment import record_environment
from simulation.owner import stop_with_owner
from simulation.rundir import JsonlWriter, claim_run_dir, read_jsonl, write_json
from simulation.validate import error_reason, validate_reply
from strategies.base import ScalarReply
from strategies.loader import load_strategy

NODE_WAIT_S = 120.0


RESEND_ATTEMPTS = 3  # sends of a message whose client process died, after the first
RESEND_WAIT_S = 1.0  # times the attempt number, before each resend


def sample_cohort(cfg: Config, server_round: int) -> list[int]:
    """Partition ids of the round's clients: a function of (seed, round) only."""
    rng = np.random.default_rng(derive_seed(cfg.seed, "cohort", server_round))
    pids = rng.choice(cfg.num_clients, size=cfg.clients_per_round, replace=False)
    return sorted(int(p) for p in pids)


MAX_ID = 2**63 - 1


def wire_size(msg: Message) -> int:
    """Bytes of the serialized message (metadata + content), as it crosses the wire.

    Flower draws node and run ids at random, and a varint's width depends on its value: each id is
    counted at 9 bytes (an id below 2**63; one drawn above it takes a byte more), so that byte
    counts are an exact function of the run's seed. A message also carries the id of the
    ServerApp's task (as `src_task_id` going out, `dst_task_id` coming back): 1 in Flower's
    in-process simulation, a random 64-bit id under a SuperLink; it is counted as 1 (one byte), so
    that both runtimes count the same bytes. In a deployment every id may take 10 bytes: up to 12
    bytes more per message than counted here.
    """
    proto = message_to_proto(msg)
    meta = proto.metadata
    meta.run_id, meta.src_node_id, meta.dst_node_id = MAX_ID, MAX_ID, MAX_ID
    for task in ("src_task_id", "dst_task_id"):
        if meta.HasField(task):
            setattr(meta, task, 1)
    meta.created_at = 0.5  # a double: fixed width whatever the clock says
    meta.message_id = "0" * 64  # assigned at push time (a 64-hex digest); count it either way
    return proto.ByteSize()


def record_size(fields: dict) -> int:
    """Serialized bytes of a ConfigRecord holding `fields`."""
    return config_record_to_proto(ConfigRecord(fields)).ByteSize()


class FederatedServer:
    def __init__(self, cfg: Config, run_dir: Path, grid: Grid, progress: bool = True,
                 resume: bool = False):
        self.cfg, self.run_dir, self.grid, self.progress = cfg, run_dir, grid, progress
        self.resume = resume
        self.strategy = load_strategy(cfg.strategy, **cfg.strategy_args)
        self.setup = build(cfg)  # central evaluation only
        self.theta = self.setup.scorer.layout.zeros()
        self.log: list[LogEntry] = []
        self.log_rounds: list[int] = []  # the round of each block of K*q log entries
        self.wire = Wire.of(cfg)
        self.held: dict[int, int] = {}  # partition id -> log length that client already holds
        self.node_of: dict[int, int] = {}  # partition id -> Flower node id
        self.pid_of: dict[int, int] = {}  # Flower node id -> partition id
        self.totals = Counter()
        self._eval_warm = False
        self.deadlines = Deadlines(cfg.round_deadline_s)
        self.checkpoint = load_checkpoint(run_dir) if resume else None
        if self.checkpoint is not None:
            self._restore(self.checkpoint)
        elif resume:  # stopped before its first checkpoint: start over in the same directory
            keep_lines(run_dir / "metrics.jsonl", 0)
            keep_lines(run_dir / "update_log.jsonl", 0)
        self.strategy.configure(clients_per_round=cfg.clients_per_round)
        self.metrics = JsonlWriter(run_dir / "metrics.jsonl")
        self.log_file = JsonlWriter(run_dir / "update_log.jsonl")

    def _restore(self, ckpt: Checkpoint) -> None:
        """The state after round `ckpt.round`; lines written after that checkpoint are dropped
        (the resumed run writes them again, identically)."""
        keep_lines(self.run_dir / "metrics.jsonl", ckpt.metrics_lines)
        keep_lines(self.run_dir / "update_log.jsonl", ckpt.log_len)
        rows = read_jsonl(self.run_dir / "update_log.jsonl")
        self.log = [LogEntry(r["seed"], r["grad"], r["lr"], r["q"]) for r in rows]
        self.log_rounds = [r["round"] for r in rows[::self.wire.block]]
        if self.cfg.method == "prge":
            replay(self.theta, self.log)
        else:
            self.theta = torch.from_numpy(ckpt.theta.copy())
        if theta_hash(self.theta) != theta_hash(torch.from_numpy(ckpt.theta)):
            raise RuntimeError(f"{self.run_dir}/update_log.jsonl does not rebuild the checkpoint")
        self.held = dict(ckpt.held)
        self.totals = Counter(ckpt.totals)
        if ckpt.strategy_state is not None:
            self.strategy.load_state_dict(ckpt.strategy_state)
        else:  # it has no state_dict(): say so rather than silently restart its state
            print(f"fedprge: warning: strategy {self.cfg.strategy!r} has no state_dict(); "
                  "it resumes without its state from earlier rounds", file=sys.stderr)

    def save_checkpoint(self, server_round: int, zero: dict, last: dict, elapsed: float) -> None:
        save_checkpoint(self.run_dir, Checkpoint(
            round=server_round, theta=self.theta.numpy().copy(), log_len=len(self.log),
            metrics_lines=server_round + 1, held=dict(self.held), totals=dict(self.totals),
            strategy_state=self.strategy.state_dict(), zero_eval=zero, last_eval=last,
            elapsed_s=elapsed))

    # -- set-up -------------------------------------------------------------------------------
    def discover_nodes(self) -> None:
        """Ask every node for its partition id once; cohorts are then sampled over partition ids,
        so they do not depend on Flower's random node ids."""
        deadline = time.monotonic() + NODE_WAIT_S
        while len(nodes := list(self.grid.get_node_ids())) < self.cfg.num_clients:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(nodes)} of {self.cfg.num_clients} clients came up")
            time.sleep(0.2)
        asks = [Message(RecordDict(), dst_node_id=n, message_type="query") for n in nodes]
        for reply in self.exchange(asks):
            if reply.has_error():
                raise RuntimeError(f"client failed to start: {reply.error.reason}")
            pid = int(reply.content["node"]["partition-id"])
            self.node_of[pid] = reply.metadata.src_node_id
            self.pid_of[reply.metadata.src_node_id] = pid
        missing = set(range(self.cfg.num_clients)) - set(self.node_of)
        if missing:
            raise RuntimeError(f"no node holds partition(s) {sorted(missing)}")

    def exchange(self, messages: list[Message], timeout: float | None = None) -> list[Message]:
        """Send and receive. A message whose client process died under it (Ray starts the
        process again) is sent again, up to RESEND_ATTEMPTS times: that is an accident of the
        host running the simulation, not a simulated device fault, so it must not change the
        run. Resends are counted (`resent` per round, `messages_resent` in the summary), not
        billed as traffic; a message lost on every attempt is rejected as `actor-lost`."""
        t0 = time.monotonic()
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        for attempt in range(1, RESEND_ATTEMPTS + 1):
            lost = {r.metadata.src_node_id for r in replies
                    if r.has_error() and error_reason(r.error.reason) == "actor-lost"}
            if not lost:
                break
            # until Ray has noticed the death, a message would be routed to the dead process
            time.sleep(RESEND_WAIT_S * attempt)
            again = [Message(m.content, dst_node_id=m.metadata.dst_node_id,
                             message_type=m.metadata.message_type, group_id=m.metadata.group_id)
                     for m in messages if m.metadata.dst_node_id in lost]
            self.totals["resent"] += len(again)
            left = None if timeout is None else max(0.0, timeout - (time.monotonic() - t0))
            replies = [r for r in replies if r.metadata.src_node_id not in lost]
            replies += self.grid.send_and_receive(again, timeout=left)
        return replies

    # -- one round ----------------------------------------------------------------------------
    def cohort(self, server_round: int) -> list[int]:
        return sample_cohort(self.cfg, server_round)

    def round_seeds(self, server_round: int) -> list[int]:
        return round_seeds(self.cfg.seed, server_round, self.wire.block)

    def check(self, reply: Message, server_round: int, expected_hash: str):
        """(ScalarReply, None) for a valid reply, else (None, reason). Never raises."""
        if reply.has_error():
            return None, error_reason(reply.error.reason)
        dense = self.cfg.method != "prge"
        size = self.setup.scorer.dim if dense else self.cfg.local_steps * self.cfg.q
        pid = self.pid_of[reply.metadata.src_node_id]
        ok, reason = validate_reply(reply.content.get("res"), server_round=server_round,
                                    expected_hash=expected_hash, dense=dense, size=size,
                                    max_abs=self.cfg.max_reply_value, bits=self.cfg.scalar_bits,
                                    max_examples=self.train_sizes[pid])
        if ok is None:
            return None, reason
        return ScalarReply(pid, *ok), None

    @cached_property
    def train_sizes(self) -> list[int]:
        """Training examples of each simulated client: the simulator dealt the partitions, so the
        server can bound the counts that replies claim (they weight the mean)."""
        return [len(data.train) for data in run_partitions(self.setup.task.train, self.cfg)]

    def run_round(self, server_round: int) -> dict:
        t0 = time.perf_counter()
        cfg = self.cfg
        base_lr = cfg.fo_lr if cfg.method == "fo" else cfg.lr
        lr = scheduled_lr(base_lr, server_round - 1, cfg.rounds, cfg.lr_schedule)
        seeds = self.round_seeds(server_round)
        expected = state_hash(self.theta, model_fingerprint(self.setup.scorer))
        messages, bytes_down, entries_down, snapshots = [], 0, 0, 0
        sent_len = len(self.log)  # what every client reached this round holds once it has read it
        cohort = self.cohort(server_round)
        # offline devices are never reached; the rest may still crash, straggle or attack
        online = [p for p in cohort if not draw_faults(cfg, server_round, p).dropout]
        for pid in online:
            ins, entries = self.train_ins(pid, server_round, lr)
            msg = Message(RecordDict({"ins": ConfigRecord(ins)}), dst_node_id=self.node_of[pid],
                          message_type="train", group_id=str(server_round))
            bytes_down += wire_size(msg)
            if entries is None:
                snapshots += 1
            else:
                entries_down += entries
            messages.append(msg)
        valid: list[ScalarReply] = []
        rejected: Counter = Counter()
        bytes_up = 0
        timeout = self.deadlines.round()  # replies after the deadline are discarded
        resent = self.totals["resent"]
        unanswered = {self.pid_of[m.metadata.dst_node_id] for m in messages}
        for reply in self.exchange(messages, timeout=timeout):
            bytes_up += wire_size(reply)
            pid = self.pid_of.get(reply.metadata.src_node_id)
            if pid is None:  # not a node we sent to: never aggregated, never tracked
                rejected["unknown-node"] += 1
                continue
            unanswered.discard(pid)
            ok, reason = self.check(reply, server_round, expected)
            if ok is None:
                rejected[reason] += 1
                self.held[pid] = 0  # its stored log may be stale: send the whole log next time
                continue
            valid.append(ok)
            self.held[pid] = sent_len
            self.totals["client_steps"] += cfg.local_steps
        missing = len(messages) - sum(rejected.values()) - len(valid)
        if missing:
            rejected["late" if timeout else "no-reply"] += missing
        if timeout:
            # a straggler past the deadline stored the log tail first thing, as every client does
            # before it trains: it holds the whole log of this round, whatever it answers later
            for pid in unanswered:
                self.held[pid] = sent_len
        record = {"round": server_round, "replies": len(valid), "rejected": sum(rejected.values()),
                  "dropped": len(cohort) - len(online), "bytes_down": bytes_down,
                  # what the cohort's devices replay (one randn(D) each), and who got theta
                  "log_entries_down": entries_down, "snapshots_down": snapshots,
                  "bytes_up": bytes_up, "lr": lr}
        if cfg.byzantine_fraction:  # ground truth, known to the simulator only
            record["adversaries_in_cohort"] = len(set(online) & adversaries(cfg))
        if rejected:
            record["rejected_reasons"] = dict(rejected)
        if self.totals["resent"] > resent:
            record["resent"] = self.totals["resent"] - resent
        if valid:
            # in partition order, not arrival order: float sums depend on their order, and a run
            # must not depend on which client process finished first
            valid.sort(key=lambda r: r.partition_id)
            size = len(seeds) if cfg.method == "prge" else self.setup.scorer.dim
            try:
                agg = np.asarray(self.strategy.aggregate(server_round, valid), dtype=np.float64)
            except Exception as err:  # a plug-in's bug must not take the global state with it
                agg = np.full(size, np.nan)
                record["aggregate_error"] = f"{type(err).__name__}: {err}"[:200]
            if agg.shape == (size,) and np.isfinite(agg).all() and cfg.method == "prge":
                # the aggregate as the wire carries it: what every client will replay (float16
                # turns values beyond its range into inf: such a round is rejected below)
                agg = quantize(agg, cfg.scalar_bits)
            if agg.shape == (size,) and np.isfinite(agg).all() and cfg.method != "prge":
                self.theta += torch.from_numpy(agg).to(self.theta.dtype)  # FedAvg: theta + mean delta
            elif agg.shape == (size,) and np.isfinite(agg).all():
                new = [LogEntry(s, float(g), lr, cfg.q) for s, g in zip(seeds, agg, strict=True)]
                replay(self.theta, new)
                self.log.extend(new)
                self.log_rounds.append(server_round)
                for e in new:
                    self.log_file.write({"round": server_round, "seed": e.seed, "grad": e.grad,
                                         "lr": e.lr, "q": e.q})
            else:
                record["aggregate_rejected"] = True
            weights = np.array([r.num_examples for r in valid], dtype=np.float64)
            losses = np.array([r.train_loss for r in valid])
            record["train_loss"] = float(weights @ losses / weights.sum())
        record.update(theta_hash=theta_hash(self.theta), log_len=len(self.log),
                      round_s=time.perf_counter() - t0)
        if timeout:
            record["deadline_s"] = timeout
        self.deadlines.observe(record["round_s"], complete=not missing)
        return record

    def train_ins(self, pid: int, server_round: int, lr: float) -> tuple[dict, int | None]:
        """P-RGE: how this client catches up (the round's seeds it derives itself), and the log
        entries that sends (None: a snapshot). Dense baselines: theta."""
        if self.cfg.method == "prge":
            catch_up, entries = self.catch_up(pid)
            return encode_train_ins(server_round, catch_up, self.cfg.eps, lr), entries
        return {"server-round": server_round, "theta": encode_tensor(self.theta),
                "eps": float(self.cfg.eps), "lr": float(lr)}, 0

    def catch_up(self, pid: int) -> tuple[dict, int | None]:
        """The log tail this client lacks or theta_t itself, as `catch-up` says (auto: whichever
        record is smaller, in serialized bytes), with the log entries sent (None: a snapshot)."""
        start = self.held.get(pid, 0)
        tail = encode_log(start, self.log[start:], self.tail_rounds(start), self.wire)
        if start == len(self.log):  # nothing to catch up with
            return tail, 0
        if self.cfg.catch_up == "snapshot":
            return encode_snapshot(len(self.log), self.theta), None
        # a snapshot record holds more than theta's 4*D bytes: encode one only when the tail
        # is larger than that (else every client of every round would serialize theta for nothing)
        if self.cfg.catch_up == "auto" and record_size(tail) > 4 * self.theta.numel():
            snapshot = encode_snapshot(len(self.log), self.theta)
            if record_size(snapshot) < record_size(tail):
                return snapshot, None
        return tail, len(self.log) - start

    def tail_rounds(self, start: int) -> list[int]:
        """The rounds of the log's blocks from entry `start` on (a block boundary)."""
        return self.log_rounds[start // self.wire.block:]

    def state_for(self, pid: int) -> dict:
        """What a client needs to rebuild theta_T: its catch-up, or (dense) theta itself."""
        if self.cfg.method == "prge":
            return self.catch_up(pid)[0]
        return {"theta": encode_tensor(self.theta)}

    # -- evaluation ---------------------------------------------------------------------------
    def central_eval(self) -> dict:
        test = self.setup.task.test[: self.cfg.eval_size or None]
        if self.cfg.prefix_cache_fill == "upfront" and not self._eval_warm:
            warm_examples(self.setup.engine, self.setup.encoder, test)  # once per process
            self._eval_warm = True
        r = evaluate(self.setup.engine, self.setup.encoder, test, self.theta)
        return {"test_acc": r.acc, "test_acc_cal": r.acc_calibrated, "test_loss": r.loss}

    def personalize(self) -> list[dict]:
        """Every client: global vs personalized accuracy on its own test data."""
        messages = []
        for pid in range(self.cfg.num_clients):
            content = {**self.state_for(pid), "personal-steps": self.cfg.personal_steps}
            messages.append(Message(RecordDict({"ins": ConfigRecord(content)}),
                                    dst_node_id=self.node_of[pid], message_type="evaluate"))
            self.totals["bytes_down_eval"] += wire_size(messages[-1])
        rows = []
        cfg = self.cfg
        timeout = self.deadlines.personalization(cfg.num_clients, cfg.clients_per_round,
                                                 cfg.personal_steps, cfg.local_steps)
        unanswered = set(range(cfg.num_clients))
        for reply in self.exchange(messages, timeout=timeout):
            self.totals["bytes_up_eval"] += wire_size(reply)
            pid = self.pid_of.get(reply.metadata.src_node_id, -1)
            unanswered.discard(pid)
            if reply.has_error():
                rows.append({"client": pid, "error": reply.error.reason[:200]})
                continue
            m = reply.content["res"]
            rows.append({"client": pid, "num_test": int(m["num-test"]),
                         **({"global_acc": float(m["global-acc"]),
                             "personal_acc": float(m["personal-acc"])} if "global-acc" in m else {})})
        rows += [{"client": pid, "error": "late"} for pid in unanswered]
        return sorted(rows, key=lambda r: r["client"])

    # -- the whole run ------------------------------------------------------------------------
    def run(self) -> dict:
        start = time.perf_counter()
        self.discover_nodes()
        ckpt = self.checkpoint
        if ckpt is None:
            zero = self.central_eval()
            self.metrics.write({"round": 0, **zero, "theta_hash": theta_hash(self.theta),
                                "elapsed_s": time.perf_counter() - start})
            last, first = zero, 1
            self.save_checkpoint(0, zero, last, time.perf_counter() - start)
        else:  # resumed: the clock goes on from where the stopped run was
            zero, last, first = ckpt.zero_eval, ckpt.last_eval, ckpt.round + 1
            start -= ckpt.elapsed_s
        bar = tqdm(range(first, self.cfg.rounds + 1), desc="rounds", unit="round",
                   disable=not self.progress)
        for t in bar:
            record = self.run_round(t)
            if t % self.cfg.eval_every == 0 or t == self.cfg.rounds:
                last = self.central_eval()
                record.update(last)
            self.totals["bytes_up"] += record["bytes_up"]
            self.totals["bytes_down"] += record["bytes_down"]
            self.totals["log_entries_down"] += record["log_entries_down"]
            self.totals["snapshots_down"] += record["snapshots_down"]
            record["elapsed_s"] = time.perf_counter() - start
            self.metrics.write(record)
            self.save_checkpoint(t, zero, last, record["elapsed_s"])
            bar.set_postfix(acc=f"{last['test_acc']:.3f}", cal=f"{last['test_acc_cal']:.3f}",
                            up=f"{self.totals['bytes_up']:,}B", down=f"{self.totals['bytes_down']:,}B")
        clients = self.personalize() if self.cfg.personal_steps or self.cfg.client_eval_size else []
        write_json(self.run_dir / "clients.json", clients)
        scored = [c for c in clients if "global_acc" in c]

        def client_mean(key: str) -> float | None:
            return float(np.mean([c[key] for c in scored])) if scored else None

        updates = self.cfg.rounds * self.cfg.clients_per_round
        summary = {
            "rounds": self.cfg.rounds, "adapter_dim": self.setup.scorer.dim,
            "eval_examples": len(self.setup.task.test[: self.cfg.eval_size or None]),
            "zero_shot_acc": zero["test_acc"], "zero_shot_acc_cal": zero["test_acc_cal"],
            "final_acc": last["test_acc"], "final_acc_cal": last["test_acc_cal"],
            "client_global_acc": client_mean("global_acc"),
            "client_personal_acc": client_mean("personal_acc"),
            "bytes_up": self.totals["bytes_up"], "bytes_down": self.totals["bytes_down"],
            "bytes_up_per_client_round": self.totals["bytes_up"] / max(1, updates),
            "bytes_eval": self.totals["bytes_up_eval"] + self.totals["bytes_down_eval"],
            "messages_resent": self.totals["resent"],
            # catch-up in the rounds: log entries sent (each replayed by its device) and snapshots
            "log_entries_down": self.totals["log_entries_down"],
            "snapshots_down": self.totals["snapshots_down"],
            "final_theta_hash": theta_hash(self.theta), "log_len": len(self.log),
            "method": self.cfg.method, "strategy": self.cfg.strategy,
            "strategy_summary": self.strategy.summary(),
            "wall_s": time.perf_counter() - start,
            # local steps of the aggregated replies (throughput: client_steps / wall_s)
            "client_steps": self.totals["client_steps"],
            "dense_bytes": 4 * self.setup.scorer.dim,  # one float32 upload of the adapter
            **cache_summary(self.setup.engine),  # the server's cache (evaluation set)
        }
        np.save(self.run_dir / "final_theta.npy", self.theta.numpy())  # also the log's result
        write_json(self.run_dir / "summary.json", summary)
        self.metrics.close()
        self.log_file.close()
        return summary


def build_server_app(cfg: Config | None = None, run_dir: Path | None = None,
                     progress: bool = True, resume: bool = False) -> ServerApp:
    """A ServerApp for `cfg`, or, when None, for the run config Flower passes in the Context:
    `fedprge run` passes the resolved config and the run directory it made (it draws the progress
    itself, from metrics.jsonl); `flwr run .` passes the flat keys, and this app makes the
    directory and prints the progress into Flower's log."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if cfg is not None:
            run_cfg, out, show, again = cfg, run_dir, progress, resume
        else:
            given = config_from_flower(dict(context.run_config))
            run_cfg, out, show, again = given.cfg, given.run_dir, given.run_dir is None, given.resume
            if given.owner_pid:
                stop_with_owner(given.owner_pid)
        lock = None  # `fedprge run` holds its directory's lock itself
        if out is None:  # `flwr run .`: this app makes the directory, and holds it as the runner does
            out, lock = claim_run_dir(run_cfg.out, "run")
            write_json(out / "config.json", run_cfg.to_dict())
            record_environment(out)
        try:
            FederatedServer(run_cfg, out, grid, show, resume=again).run()
            # Flower's runtime waits for every message it handed out before it exits: stop the
            # clients still working on one (a straggler past its deadline, a hung device)
            logging.getLogger("flwr").setLevel(logging.CRITICAL)  # their end is expected
            stopped = stop_busy(out / "devices")
            if stopped:
                print(f"fedprge: stopped the processes of {len(stopped)} client(s) still busy "
                      f"after their deadline: {sorted(stopped)}", file=sys.stderr)
        finally:
            if lock is not None:
                os.close(lock)

    return app


app = build_server_app()
