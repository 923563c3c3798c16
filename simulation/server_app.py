"""The Flower ServerApp: samples clients, ships log tails and seeds, validates and aggregates scalar
replies, keeps the update log (the whole model state), evaluates, and writes the run directory.

The server holds no client's data and needs the model only for central evaluation: aggregation
touches seeds and scalars alone.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
import time
from collections import Counter
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp
from tqdm import tqdm

from clients.app import default_device_dir
from clients.build import build
from clients.busy import stop_busy
from clients.devices import fleet
from clients.faults import adversaries, draw_faults, simulated_delay_s
from clients.partition import run_partitions
from clients.protocol import (
    Wire,
    encode_log,
    encode_snapshot,
    encode_tensor,
    encode_train_ins,
    quantize,
    round_seeds,
    split_cursor,
)
from clients.runconfig import Config, config_from_flower
from prge.estimator import scheduled_lr
from prge.evaluate import evaluate
from prge.perturb import derive_seed
from prge.prefix_cache import cache_summary, warm_examples
from prge.scorer import model_fingerprint
from prge.update_log import LogEntry, replay, state_hash, theta_hash
from simulation.availability import availability_of
from simulation.checkpoint import (
    Checkpoint,
    CheckpointError,
    keep_lines,
    load_checkpoint,
    save_checkpoint,
)
from simulation.client_stats import client_stats
from simulation.cursors import DeviceCursors
from simulation.deadline import Deadlines
from simulation.device_work import DeviceWork
from simulation.environment import record_environment
from simulation.failures import STOPPED, FailureWatch
from simulation.follow import progress_fields
from simulation.owner import stop_with_owner
from simulation.restore import EMPTY_DIGEST, chain_digest, restore_log
from simulation.rundir import JsonlWriter, claim_run_dir, write_json
from simulation.traffic import Traffic, one_line, record_size, wire_size
from simulation.validate import error_reason, validate_eval_reply, validate_reply
from simulation.virtual_clock import Arrival, VirtualClock, settle
from strategies.base import ScalarReply, configure_strategy
from strategies.loader import load_strategy

NODE_WAIT_S = 120.0
# How long a round waits for devices to say their log position (a query is answered in
# milliseconds unless the device's process is busy; unanswered, the server's lower bound stands)
QUERY_WAIT_S = 10.0


# what a round's `errors` says of a sound reply it did not keep, in virtual time
LATE_TEXT = {"late": "the reply arrived after the virtual deadline",
             "surplus": "over-selection: the round had its replies before this one arrived"}

RESEND_ATTEMPTS = 3  # sends of a message whose client process died, after the first
RESEND_WAIT_S = 1.0  # times the attempt number, before each resend


def sample_cohort(cfg: Config, server_round: int) -> list[int]:
    """Partition ids of the round's clients: a function of (seed, round) only, drawn from the
    clients that train (all but the `holdout-clients` newcomers, the highest ids)."""
    rng = np.random.default_rng(derive_seed(cfg.seed, "cohort", server_round))
    pids = rng.choice(cfg.num_clients - cfg.holdout_clients, size=cfg.clients_per_round,
                      replace=False)
    return sorted(int(p) for p in pids)


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
        self.cursors = DeviceCursors()  # what each device holds of the log (simulation/cursors.py)
        self.node_of: dict[int, int] = {}  # partition id -> Flower node id
        self.pid_of: dict[int, int] = {}  # Flower node id -> partition id
        self.totals = Counter()
        self._eval_warm = False
        self.deadlines = Deadlines.of(cfg)
        self.worked = False  # whether this launch's client processes have built their models
        self.failures = FailureWatch(cfg.max_failed_rounds)
        # edge devices in virtual time (simulation/virtual_clock.py); None without `devices`
        self.clock = self.work = self.availability = None
        self.personalize_virtual_s = 0.0
        if cfg.devices:
            self.clock = VirtualClock(fleet(cfg.devices, cfg.num_clients, cfg.seed),
                                      quantized=cfg.quantize != "none")
            self.availability = availability_of(cfg)
            self.work = DeviceWork(cfg, self.setup, self.partitions)
        self.log_digest = EMPTY_DIGEST  # hash chain over update_log.jsonl's rows
        self.checkpoint = load_checkpoint(run_dir) if resume else None
        if self.checkpoint is not None:
            self._restore(self.checkpoint)
        elif resume:  # stopped before its first checkpoint: start over in the same directory
            keep_lines(run_dir / "metrics.jsonl", 0)
            keep_lines(run_dir / "update_log.jsonl", 0)
            keep_lines(run_dir / "clients_eval.jsonl", 0)
        configure_strategy(self.strategy, clients_per_round=cfg.clients_per_round,
                           run_seed=cfg.seed)
        self.metrics = JsonlWriter(run_dir / "metrics.jsonl")
        self.log_file = JsonlWriter(run_dir / "update_log.jsonl")
        # every client's scores at each client evaluation before the last round's
        self.clients_eval = (JsonlWriter(run_dir / "clients_eval.jsonl")
                             if cfg.client_eval_every else None)

    def client_eval_due(self, server_round: int) -> bool:
        """Whether every client is evaluated after this round (`client-eval-every`); the last
        round's evaluation is the run's, after the loop, into clients.json."""
        every = self.cfg.client_eval_every
        return bool(every) and server_round % every == 0 and server_round < self.cfg.rounds

    def _restore(self, ckpt: Checkpoint) -> None:
        """The state after round `ckpt.round`, from the checkpoint alone: theta from its file,
        the log read (not replayed) and checked against the checkpoint's hash chain, so a resume
        costs the same at round 10 and at round 1,000. Lines written after that checkpoint are
        dropped (the resumed run writes them again, identically)."""
        restored = restore_log(self.run_dir, ckpt, self.wire.block)
        keep_lines(self.run_dir / "clients_eval.jsonl",
                   sum(self.client_eval_due(t) for t in range(1, ckpt.round + 1)))
        self.log, self.log_rounds, self.log_digest = restored.log, restored.rounds, restored.digest
        self.theta = torch.from_numpy(ckpt.theta.copy())
        self.cursors = DeviceCursors(dict(ckpt.held), set(ckpt.unsure))
        self.totals = Counter(ckpt.totals)
        self.deadlines.slowest = ckpt.deadline_slowest_s
        self.failures.streak = ckpt.consecutive_failed
        if self.clock is not None and ckpt.virtual is not None:
            self.clock.restore(ckpt.virtual)
            self.work.restore(ckpt.virtual["filled"])
        if ckpt.strategy_state is not None:
            try:
                self.strategy.load_state_dict(ckpt.strategy_state)
            except ValueError as err:
                raise CheckpointError(f"{self.run_dir}/checkpoint.json: strategy state: {err}"
                                      ) from None
        else:  # it has no state_dict(): say so rather than silently restart its state
            print(f"fedprge: warning: strategy {self.cfg.strategy!r} has no state_dict(); "
                  "it resumes without its state from earlier rounds", file=sys.stderr)

    def save_checkpoint(self, server_round: int, zero: dict, last: dict, elapsed: float) -> None:
        save_checkpoint(self.run_dir, Checkpoint(
            round=server_round, theta=self.theta.numpy().copy(), log_len=len(self.log),
            metrics_lines=server_round + 1, held=dict(self.cursors.held),
            totals=dict(self.totals), strategy_state=self.strategy.state_dict(), zero_eval=zero,
            last_eval=last, elapsed_s=elapsed, deadline_slowest_s=self.deadlines.slowest,
            log_hash=self.log_digest, unsure=sorted(self.cursors.unsure),
            consecutive_failed=self.failures.streak, virtual=self.virtual_state()))

    def virtual_state(self) -> dict | None:
        if self.clock is None:
            return None
        return {**self.clock.state(), "filled": self.work.state()}

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
        self.totals["bytes_discovery"] += sum(wire_size(m) for m in asks)
        for reply in self.exchange(asks):
            self.totals["bytes_discovery"] += wire_size(reply)
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
        # this launch's first training or evaluation has the client processes load the model
        # and programs (a query needs neither): never cut it short
        if any(m.metadata.message_type != "query" for m in messages):
            timeout = self.deadlines.wait(timeout, first_of_launch=not self.worked)
            self.worked = True
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
        """The round's sampled clients: `sample_cohort`, unless devices come and go or are
        over-selected; then a seeded draw of ceil(over-selection * clients-per-round) among those
        available at the round's virtual start."""
        cfg = self.cfg
        if self.clock is None or (cfg.availability == "always" and cfg.over_selection == 1):
            return sample_cohort(cfg, server_round)
        available = self.available_now()
        size = min(len(available), math.ceil(cfg.clients_per_round * cfg.over_selection))
        rng = np.random.default_rng(derive_seed(cfg.seed, "cohort", server_round))
        return sorted(int(p) for p in rng.choice(available, size=size, replace=False))

    def available_now(self) -> list[int]:
        """The clients available at the clock's time; with none, the clock moves on to the next
        moment one is."""
        trains = self.cfg.num_clients - self.cfg.holdout_clients  # newcomers are never sampled
        for _ in range(3):  # the next start is found to float rounding: a step past it at most
            available = [p for p in self.availability.available(self.clock.now) if p < trains]
            if available:
                self.last_available = len(available)
                return available
            self.clock.now = self.availability.next_start(self.clock.now)
        raise RuntimeError(f"no client is available at virtual time {self.clock.now:.0f} s")

    def refuse_short_of_memory(self, pids: list[int], rejected: Counter,
                               errors: dict[str, tuple[int, str]]) -> list[int]:
        """The devices that can hold the round's work; the others are refused (`memory`), never
        contacted."""
        if self.work is None:
            return pids
        kept = []
        for pid in pids:
            need, device = self.work.memory_bytes(pid), self.clock.devices[pid]
            if need <= device.memory_gib * 2**30:
                kept.append(pid)
                continue
            rejected["memory"] += 1
            entry = (pid, f"{device.name} holds {device.memory_gib:g} GiB; the program, caches "
                          f"and adapter copies need {need / 2**30:.2f} GiB")
            errors["memory"] = min(errors.get("memory", entry), entry)
        return kept

    def judge_arrivals(self, server_round: int, answers: list, down_of: dict, flops_of: dict,
                       timeout: float | None, missing: bool) -> tuple[set, set, dict]:
        """(late, surplus, the round record's virtual-time fields). Without devices a straggler
        is late when its simulated delay passes the round's deadline; with them, each reply's
        arrival is its device's virtual time (simulation/virtual_clock.py)."""
        cfg = self.cfg
        if self.clock is None:
            late = {pid for pid, _, ok, _ in answers if ok is not None and timeout
                    and simulated_delay_s(cfg, server_round, pid) > timeout}
            return late, set(), {}
        arrivals: list[Arrival] = []
        up_of = {}
        for pid, reply, _, reason in answers:
            if reason == "actor-lost":  # made up by the runtime: no device sent it
                continue
            up_of[pid] = wire_size(reply)
            arrivals.append(self.clock.arrival(pid, down_of[pid], flops_of[pid], up_of[pid],
                                               simulated_delay_s(cfg, server_round, pid)))
        keep = cfg.clients_per_round if cfg.over_selection > 1 else None
        sound = {pid for pid, _, ok, _ in answers if ok is not None}
        done = settle({a.pid: a.at_s for a in arrivals}, sound, cfg.virtual_deadline_s or None,
                      keep, missing)
        self.clock.close_round(arrivals, done.duration_s)
        fields = {"round_virtual_s": done.duration_s, "virtual_s": self.clock.now,
                  "round_flops": sum(a.flops for a in arrivals),
                  # what each device that answered did, so that the run can be re-timed on
                  # another fleet (simulation/retime.py): partition id, bytes down, FLOPs,
                  # bytes up, whether the reply was sound, the memory its work needs
                  "devices_work": [[a.pid, down_of[a.pid], a.flops, up_of[a.pid],
                                    int(a.pid in sound), self.work.memory_bytes(a.pid)]
                                   for a in arrivals]}
        if cfg.availability != "always":
            fields["available"] = self.last_available
        return set(done.late), set(done.surplus), fields

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
    def partitions(self) -> list:
        return run_partitions(self.setup.task.train, self.cfg)

    @cached_property
    def train_sizes(self) -> list[int]:
        """Training examples of each simulated client: the simulator dealt the partitions, so the
        server can bound the counts that replies claim (they weight the mean)."""
        return [len(data.train) for data in self.partitions]

    def run_round(self, server_round: int) -> dict:
        t0 = time.perf_counter()
        cfg = self.cfg
        base_lr = cfg.fo_lr if cfg.method == "fo" else cfg.lr
        lr = scheduled_lr(base_lr, server_round - 1, cfg.rounds, cfg.lr_schedule)
        seeds = self.round_seeds(server_round)
        expected = state_hash(self.theta, model_fingerprint(self.setup.scorer))
        timeout = self.deadlines.round()  # replies after the deadline are discarded
        cohort = self.cohort(server_round)
        # offline devices are never reached; the rest may still crash, straggle or attack
        online = [p for p in cohort if not draw_faults(cfg, server_round, p).dropout]
        rejected: Counter = Counter()
        # each kind's error text from the lowest partition id: arrival order varies between runs
        errors: dict[str, tuple[int, str]] = {}
        dropped = len(cohort) - len(online)
        online = self.refuse_short_of_memory(online, rejected, errors)
        traffic = Traffic()
        asked = [p for p in online if p in self.cursors.unsure]
        self.ask_cursors(asked, min(timeout or QUERY_WAIT_S, QUERY_WAIT_S), traffic)
        messages, entries_down, snapshots = [], 0, 0
        down_of, flops_of = {}, {}  # each contacted device's message bytes and work
        sent_len = len(self.log)  # what every client reached this round holds once it has read it
        for pid in online:
            ins, entries = self.train_ins(pid, server_round, lr)
            msg = Message(RecordDict({"ins": ConfigRecord(ins)}), dst_node_id=self.node_of[pid],
                          message_type="train", group_id=str(server_round))
            down_of[pid] = wire_size(msg)
            traffic.down += down_of[pid]
            if entries is None:
                snapshots += 1
            else:
                entries_down += entries
            if self.work is not None:
                flops_of[pid] = self.work.train_round(pid, server_round, entries or 0)
            messages.append(msg)
        valid: list[ScalarReply] = []
        resent = self.totals["resent"]
        unanswered = {self.pid_of[m.metadata.dst_node_id] for m in messages}
        answers = []
        for reply in self.exchange(messages, timeout=timeout):
            pid = self.pid_of.get(reply.metadata.src_node_id)
            if pid is None:  # not a node we sent to: never aggregated, never tracked
                rejected["unknown-node"] += 1
                continue
            unanswered.discard(pid)
            answers.append((pid, reply, *self.check(reply, server_round, expected)))
        answers.sort(key=lambda a: a[0])  # partition order: arrival order varies between runs
        late, surplus, virtual = self.judge_arrivals(server_round, answers, down_of, flops_of,
                                                     timeout, bool(unanswered))
        for pid, reply, ok, reason in answers:
            if ok is not None and (pid in late or pid in surplus):
                # a sound reply the round does not keep: past the deadline, or (over-selection)
                # after the round had its replies. It rebuilt theta_t: it holds the log it was sent
                kind = "late" if pid in late else "surplus"
                traffic.reply(reply, kind)
                rejected[kind] += 1
                errors[kind] = (-1, LATE_TEXT[kind] if self.clock is not None
                                else "a simulated straggler answered after the deadline")
                self.cursors.settle(pid, sent=sent_len, valid=True)
                continue
            traffic.reply(reply, reason)
            if ok is None:
                rejected[reason] += 1
                text, reported = self.what_it_holds(reply, reason, expected, sent_len)
                entry = (pid, one_line(text))
                errors[reason] = min(errors.get(reason, entry), entry)
                self.cursors.settle(pid, sent=sent_len, reported=reported)
                continue
            valid.append(ok)
            self.cursors.settle(pid, sent=sent_len, valid=True)
            self.totals["client_steps"] += cfg.local_steps
        for pid in unanswered:  # it may or may not have read the message: ask next time
            self.cursors.settle(pid, sent=sent_len)
        if unanswered:
            kind = "timeout" if timeout else "no-reply"
            rejected[kind] += len(unanswered)
            # no figure of this host's time in the text: metrics must not differ between runs
            errors[kind] = (-1, "no reply before the deadline" if timeout else "no reply")
        texts = {kind: text for kind, (_, text) in sorted(errors.items())}
        record = {"round": server_round, "replies": len(valid), "rejected": sum(rejected.values()),
                  "dropped": dropped, "bytes_down": traffic.down,
                  # what the cohort's devices replay (one randn(D) each), and who got theta
                  "log_entries_down": entries_down, "snapshots_down": snapshots,
                  "bytes_up": traffic.up, "bytes_up_valid": traffic.up_valid, "lr": lr}
        if traffic.queries:
            record["cursor_queries"] = traffic.queries
        if cfg.byzantine_fraction:  # ground truth, known to the simulator only
            record["adversaries_in_cohort"] = len(set(online) & adversaries(cfg))
        if rejected and self.strategy.releases_client_statistics:
            record["rejected_reasons"] = dict(rejected)
            record["errors"] = texts
        if self.totals["resent"] > resent:
            record["resent"] = self.totals["resent"] - resent
        record.update(virtual)
        if valid:
            self.apply(server_round, valid, seeds, lr, record)
        record.update(theta_hash=theta_hash(self.theta), log_len=len(self.log),
                      round_s=time.perf_counter() - t0)
        if timeout:
            record["deadline_s"] = timeout
        self.deadlines.observe(record["round_s"], complete=not unanswered)
        # a device refused for memory counts as reached: a fleet that cannot hold the work stops
        # the run after max-failed-rounds, saying so, instead of training nothing to the end
        self.failures.observe(server_round, contacted=bool(messages) or rejected["memory"] > 0,
                              valid=bool(valid), errors=texts)
        return record

    def apply(self, server_round: int, valid: list[ScalarReply], seeds: list[int], lr: float,
              record: dict) -> None:
        """Aggregate the round's valid replies and apply the result to theta and the log."""
        cfg = self.cfg
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
                row = {"round": server_round, "seed": e.seed, "grad": e.grad, "lr": e.lr, "q": e.q}
                self.log_file.write(row)
                self.log_digest = chain_digest(self.log_digest, row)
        else:
            record["aggregate_rejected"] = True
        if self.strategy.releases_client_statistics:  # an un-noised mean of client data
            weights = np.array([r.num_examples for r in valid], dtype=np.float64)
            losses = np.array([r.train_loss for r in valid])
            record["train_loss"] = float(weights @ losses / weights.sum())

    @staticmethod
    def what_it_holds(reply: Message, reason: str, expected: str,
                      sent: int) -> tuple[str, int | None]:
        """(the rejection's text, the log position the rejected device holds, None: unknown).
        An error reply says it (clients/protocol.py, `with_cursor`); a reply with content was
        made after the device caught up: built on the server's theta it holds the log sent,
        built on another it holds nothing the server can build on, and starts over from the
        whole log (which repairs a corrupted device)."""
        if reply.has_error():
            return split_cursor(reply.error.reason)
        try:
            built_on = reply.content["res"]["theta-hash"]
        except (KeyError, TypeError):
            built_on = None
        return reason, sent if built_on == expected else 0

    def ask_cursors(self, pids: list[int], timeout: float, traffic: Traffic) -> None:
        """Ask these devices what they hold (the server could not tell after their last
        message); the queries and their answers are traffic of the round."""
        if not pids or self.cfg.method != "prge":  # dense baselines send theta itself
            return
        ask = RecordDict({"ask": ConfigRecord({"cursor": True})})
        messages = [Message(ask, dst_node_id=self.node_of[p], message_type="query") for p in pids]
        traffic.down += sum(wire_size(m) for m in messages)
        traffic.queries += len(messages)
        for reply in self.exchange(messages, timeout=timeout):
            pid = self.pid_of.get(reply.metadata.src_node_id)
            if pid is None or reply.has_error():
                continue
            traffic.up += wire_size(reply)
            try:
                told = int(reply.content["node"]["cursor"])
            except (KeyError, TypeError, ValueError):
                continue  # a malformed answer: the lower bound stays, and so does the doubt
            self.cursors.told(pid, told, len(self.log))

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
        start = self.cursors.start(pid)
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

    def state_for(self, pid: int) -> tuple[dict, int | None]:
        """What a client needs to rebuild theta_T: its catch-up, or (dense) theta itself; with
        the log entries that sends (None: a snapshot)."""
        if self.cfg.method == "prge":
            return self.catch_up(pid)
        return {"theta": encode_tensor(self.theta)}, 0

    # -- evaluation ---------------------------------------------------------------------------
    def central_eval(self) -> dict:
        test = self.setup.task.test[: self.cfg.eval_size or None]
        if self.cfg.prefix_cache_fill == "upfront" and not self._eval_warm:
            warm_examples(self.setup.engine, self.setup.encoder, test)  # once per process
            self._eval_warm = True
        r = evaluate(self.setup.engine, self.setup.encoder, test, self.theta)
        return {"test_acc": r.acc, "test_acc_cal": r.acc_calibrated, "test_loss": r.loss}

    def is_newcomer(self, pid: int) -> bool:
        return pid >= self.cfg.num_clients - self.cfg.holdout_clients

    def personalize(self, server_round: int) -> list[dict]:
        """Every client: global vs personalized accuracy on its own test data after this round.
        Clients are contacted a cohort (`clients-per-round`) at a time, so the messages in memory
        at once are a round's, whatever the number of clients."""
        cfg, rows = self.cfg, []
        pids = list(range(cfg.num_clients))
        for at in range(0, len(pids), cfg.clients_per_round):
            rows += self.personalize_cohort(pids[at:at + cfg.clients_per_round], server_round)
        for row in rows:  # reported apart (simulation/client_stats.py)
            if self.is_newcomer(row["client"]):
                row["newcomer"] = True
        return sorted(rows, key=lambda r: r["client"])

    def personalize_cohort(self, pids: list[int], server_round: int) -> list[dict]:
        messages, rows, down_of, flops_of = [], [], {}, {}
        if self.work is not None:  # a device that cannot hold the work is not asked
            refused: Counter = Counter()
            errors: dict[str, tuple[int, str]] = {}
            kept = self.refuse_short_of_memory(pids, refused, errors)
            rows += [{"client": p, "error": f"memory: {errors['memory'][1]}"}
                     for p in pids if p not in kept]
            pids = kept
        for pid in pids:
            state, entries = self.state_for(pid)
            content = {**state, "personal-steps": self.cfg.personal_steps,
                       "server-round": server_round, "newcomer": self.is_newcomer(pid)}
            messages.append(Message(RecordDict({"ins": ConfigRecord(content)}),
                                    dst_node_id=self.node_of[pid], message_type="evaluate"))
            down_of[pid] = wire_size(messages[-1])
            self.totals["bytes_down_eval"] += down_of[pid]
            if self.work is not None:
                flops_of[pid] = self.work.personalize(pid, entries or 0, server_round,
                                                      self.is_newcomer(pid))
        timeout = self.deadlines.personalization(self.cfg.personal_steps, self.cfg.local_steps)
        unanswered, slowest = set(pids), 0.0
        for reply in self.exchange(messages, timeout=timeout):
            pid = self.pid_of.get(reply.metadata.src_node_id)
            if pid not in unanswered:  # not a node asked in this cohort, or a second reply
                continue
            unanswered.discard(pid)
            # what the evaluation cost this device on the wire (a newcomer: its whole catch-up)
            row: dict = {"client": pid, "bytes_down": down_of[pid], "bytes_up": wire_size(reply)}
            if self.clock is not None and not (reply.has_error() and error_reason(
                    split_cursor(reply.error.reason)[0]) == "actor-lost"):
                a = self.clock.arrival(pid, down_of[pid], flops_of[pid], wire_size(reply))
                slowest = max(slowest, a.at_s)
                row.update(personalize_virtual_s=a.at_s, personalize_flops=a.flops,
                           personalize_energy_j=a.energy_j)
            if reply.has_error():
                text = split_cursor(reply.error.reason)[0]
                if error_reason(text) != "actor-lost":
                    self.totals["bytes_up_eval"] += wire_size(reply)
                rows.append({**row, "error": one_line(text)})
                continue
            self.totals["bytes_up_eval"] += wire_size(reply)
            scores = validate_eval_reply(reply.content.get("res"))
            rows.append({**row, **scores} if scores else {**row, "error": "malformed"})
        self.personalize_virtual_s += slowest  # the cohorts one after another
        return rows + [{"client": pid, "error": "timeout"} for pid in unanswered]

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
        last_clients = None
        bar = tqdm(range(first, self.cfg.rounds + 1), desc="rounds", unit="round",
                   disable=not self.progress)
        for t in bar:
            record = self.run_round(t)
            if t % self.cfg.eval_every == 0 or t == self.cfg.rounds:
                last = self.central_eval()
                record.update(last)
            if self.client_eval_due(t):
                rows = self.personalize(t)
                last_clients = client_stats(rows)
                record.update(last_clients)
                self.clients_eval.write({"round": t, "clients": rows})
            for key in ("bytes_up", "bytes_down", "bytes_up_valid", "replies", "log_entries_down",
                        "snapshots_down"):
                self.totals[key] += record[key]
            record["elapsed_s"] = time.perf_counter() - start
            self.metrics.write(record)
            self.save_checkpoint(t, zero, last, record["elapsed_s"])
            bar.set_postfix(progress_fields(last, self.totals["bytes_up"],
                                            self.totals["bytes_down"], record.get("errors"),
                                            record.get("virtual_s"), last_clients))
            self.failures.check(t)  # after the round is on disk: the run resumes from here
        clients = (self.personalize(self.cfg.rounds)
                   if self.cfg.personal_steps or self.cfg.client_eval_size else [])
        if self.clock is not None:  # each device's rounds in virtual time
            clients = [{**c, **self.clock.client_fields(c["client"])} for c in clients]
        write_json(self.run_dir / "clients.json", clients)
        stats = client_stats(clients)
        summary = {
            "rounds": self.cfg.rounds, "adapter_dim": self.setup.scorer.dim,
            "eval_examples": len(self.setup.task.test[: self.cfg.eval_size or None]),
            "zero_shot_acc": zero["test_acc"], "zero_shot_acc_cal": zero["test_acc_cal"],
            "final_acc": last["test_acc"], "final_acc_cal": last["test_acc_cal"],
            "client_global_acc": stats.get("client_global_acc"),
            "client_personal_acc": stats.get("client_personal_acc"),
            **{k: v for k, v in stats.items() if k not in ("client_global_acc",
                                                            "client_personal_acc")},
            "personalization": self.cfg.personalization,
            "bytes_up": self.totals["bytes_up"], "bytes_down": self.totals["bytes_down"],
            # what one client uploads in a round: valid replies' bytes per valid reply (clients
            # that were offline, crashed or late did not upload a training reply)
            "bytes_up_per_client_round": self.totals["bytes_up_valid"]
            / max(1, self.totals["replies"]),
            "bytes_eval": self.totals["bytes_up_eval"] + self.totals["bytes_down_eval"],
            # the server's queries for each node's partition, at every start of the run
            "bytes_discovery": self.totals["bytes_discovery"],
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
        if self.clock is not None:  # the fleet's time and work (simulation/virtual_clock.py)
            summary.update(virtual_s=self.clock.now, device_hours=self.clock.device_hours(),
                           energy_j=self.clock.energy_j(),
                           device_flops=sum(t.flops for t in self.clock.times.values()),
                           personalize_virtual_s=self.personalize_virtual_s)
        np.save(self.run_dir / "final_theta.npy", self.theta.numpy())  # also the log's result
        write_json(self.run_dir / "summary.json", summary)
        self.metrics.close()
        self.log_file.close()
        if self.clients_eval is not None:
            self.clients_eval.close()
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
        lock, scratch = None, None  # `fedprge run` holds its directory's lock itself
        if out is None:  # `flwr run .`: this app makes the directory, and holds it as the runner does
            out, lock = claim_run_dir(run_cfg.runs_dir, "run")
            write_json(out / "config.json", run_cfg.to_dict())
            record_environment(out)
            # the clients were given no run directory: their devices live in a folder of this
            # Flower run, which this app removes when the run is over (there is no resume here)
            scratch = default_device_dir(context.run_id)
        devices = scratch or out / "devices"
        try:
            FederatedServer(run_cfg, out, grid, show, resume=again).run()
        except Exception as err:
            # Flower's log stream does not carry the ServerApp's traceback: say why, in one line
            # the command recognises (simulation/runner.py) and passes on
            print(f"{STOPPED}{type(err).__name__}: {one_line(str(err))}", file=sys.stderr)
            raise
        finally:
            # Flower's runtime waits for every message it handed out before it exits: stop the
            # clients still working on one (a straggler past its deadline, a hung device), on
            # success and on failure alike
            logging.getLogger("flwr").setLevel(logging.CRITICAL)  # their end is expected
            stopped = stop_busy(devices)
            if stopped:
                print(f"fedprge: stopped the processes of {len(stopped)} client(s) still busy "
                      f"after their deadline: {sorted(stopped)}", file=sys.stderr)
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
            if lock is not None:
                os.close(lock)

    return app


app = build_server_app()
