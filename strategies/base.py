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
        """Restore what `state_dict` returned, on a resumed run.

        `state` is read from a checkpoint on disk, so it is checked whole before any attribute is
        set: each key must be in `state_keys`, and each value of the JSON type of the attribute's
        value now, as `__init__` left it (a value of another type would break every later
        `aggregate`). A float attribute also takes an int, as a float; one that is None now takes
        any JSON value. So give each state attribute its type in `__init__` (`0.0` for a float).
        Anything else is a one-sentence ValueError and leaves the strategy as it was.
        """
        def kind(value: Any) -> str | None:  # its JSON type; None: not a JSON value
            for name, types in (("a boolean", bool | np.bool_), ("an integer", int | np.integer),
                                ("a number", float | np.floating), ("a string", str),
                                ("a list", list | tuple), ("an object", dict)):
                if isinstance(value, types):  # bool before int: a bool is not a count
                    return name
            return "null" if value is None else None

        if not isinstance(state, dict):
            raise ValueError(f"strategy state must be a JSON object, got {type(state).__name__}")
        checked = {}
        for key, value in state.items():
            if key not in (self.state_keys or ()) or not hasattr(self, key):
                raise ValueError(f"{key!r} is not part of the state of strategy {self.name!r}")
            now, given = kind(getattr(self, key)), kind(value)
            if now == "a number" and given == "an integer" and abs(value) < 2**1023:
                value = float(value)  # the bound: beyond it float() overflows
            elif given is None or now not in ("null", given):
                expected = now or f"like its {type(getattr(self, key)).__name__}"
                raise ValueError(f"strategy state {key!r} must be {expected}, "
                                 f"got {repr(value)[:40]}")
            checked[key] = value
        for key, value in checked.items():
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
