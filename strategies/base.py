"""Aggregation over scalar replies: the one thing a strategy decides.

Every round, each sampled client returns K*q projected gradients computed with the round's shared
seeds (the same seeds for every client). A strategy turns the valid replies into one aggregated
scalar per seed; the server appends (seed, scalar) to the update log and every client replays it.

Writing your own: subclass `ScalarStrategy`, implement `aggregate`, load it with
`--set strategy=package.module:ClassName` (built-ins are listed in `strategies.loader.BUILT_IN`).

- Input: `aggregate(server_round, replies)` gets the round number (1, 2, ...) and a list of >= 1
  `ScalarReply`, sorted by partition id (whatever order they arrived in, so that float sums and
  hence the run are reproducible): `partition_id` (which client), `grads` ((K*q,) float64,
  finite, step-major), `num_examples` (>= 1, at most the client's training examples, for
  weighting) and `train_loss`. The server has already dropped bad replies (wrong round or model,
  wrong length, non-finite values, example counts above the client's partition);
  clients that did not answer are absent, so the number of replies can change between rounds.
- Output: a (K*q,) array of finite float64 scalars, one per seed, in the same order as `grads`.
- Failure: if `aggregate` raises, or returns a wrong length or a non-finite value, the server
  discards that round's update (the model and log stay as they were), records why in the round's
  metrics and goes on with the next round.
- State: one instance lives for the whole run, so keep anything that spans rounds (counters, a
  privacy budget, momentum) on `self`, and change it only once the round's result is computed.
  For `fedprge run --resume`, name that state in `state_keys` (attribute names whose values are
  JSON values: numbers, strings, lists, dicts); the default `state_dict()` / `load_state_dict()`
  save and restore them in each checkpoint, or override both. A stateless strategy sets
  `state_keys = ()`. Without either, a resumed run warns and starts the strategy afresh.
  `summary()` is called once at the end; its dict goes under "strategy_summary" in the run's
  summary.json, so keep it JSON-serialisable (plain floats, ints, strings).
- Cohort: before round 1 (and again on a resume) the server sets `self.run_seed` (the run's
  `seed`) and calls `configure(clients_per_round=...)`, the number of clients it samples per
  round, fixed by the config whatever crashes or rejections leave. Override it if you need it
  (as `dp-mean` does). Draw any randomness from `self.run_seed` (0 when no server set it), never
  from a fixed seed alone, or every seed of a `--grid seed=...` sweep draws the same numbers.
- Privacy: a strategy whose output must not reveal raw client data (as `dp-mean`) sets
  `releases_client_statistics = False`; the server then leaves figures computed from the raw
  replies (the example-weighted `train_loss`, `rejected_reasons`) out of metrics.jsonl.
- Arguments: the run config's `strategy-args` table (`--set strategy-args.trim=0.1`) becomes the
  keyword arguments of `__init__`; give each a default. Validate them there with a one-line
  `ValueError` naming the argument; the run stops before it starts with that sentence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ScalarReply:
    """One client's valid reply (already checked by the server: finite, right length, right round)."""

    partition_id: int
    grads: np.ndarray  # (K*q,) float64, step-major: grads[k*q + i] belongs to seed k*q + i
    num_examples: int
    train_loss: float


class ScalarStrategy:
    """Base class: `aggregate` gets >= 1 valid replies and returns (K*q,) finite float64 scalars."""

    name = "base"
    state_keys: tuple[str, ...] | None = None  # attributes that carry state across rounds
    run_seed: int = 0  # the run's seed, set by `configure_strategy` before round 1
    releases_client_statistics = True  # False: per-round figures of raw client data stay private

    def state_dict(self) -> dict[str, Any] | None:
        """The state a checkpoint saves (JSON values), or None: this strategy cannot say."""
        if self.state_keys is None:
            return None
        return {key: getattr(self, key) for key in self.state_keys}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned, on a resumed run."""
        for key, value in state.items():
            setattr(self, key, value)

    def aggregate(self, server_round: int, replies: list[ScalarReply]) -> np.ndarray:
        raise NotImplementedError

    def configure(self, *, clients_per_round: int) -> None:
        """The run's fixed cohort size, given once before round 1; ignored by default."""

    def summary(self) -> dict[str, Any]:
        """Run-level figures to record (e.g. a privacy budget); empty by default."""
        return {}


def configure_strategy(strategy: ScalarStrategy, *, clients_per_round: int, run_seed: int) -> None:
    """What the server does before round 1 and on a resume: set the run seed, then `configure`.

    The seed goes in as an attribute rather than a `configure` argument so that overrides written
    as `configure(self, *, clients_per_round)` keep working.
    """
    strategy.run_seed = int(run_seed)
    strategy.configure(clients_per_round=clients_per_round)


def stack(replies: list[ScalarReply]) -> tuple[np.ndarray, np.ndarray]:
    """(clients, K*q) scalars and (clients,) example counts."""
    grads = np.stack([r.grads for r in replies]).astype(np.float64)
    weights = np.array([r.num_examples for r in replies], dtype=np.float64)
    return grads, weights


def as_float(name: str, value: Any) -> float:
    """`value` as a finite float, else a one-line ValueError naming the argument (for `__init__`)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(x):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return x
