"""Run configuration: one flat set of kebab-case keys (like Flower's run config), validated.

It lives with the client because a deployed client needs it too (the keys that shape its model,
adapter, data and wire); the server, runner and CLI in simulation/ import it from here.

Sources, later ones win: the defaults below, a TOML file (`--config`), then `--set key=value`.
Every user mistake (unknown key, wrong type, impossible value) raises `ConfigError` with one
sentence naming the key; the CLI turns it into exit code 2.
"""

from __future__ import annotations

import functools
import json
import tomllib
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from clients.faults import ATTACKS
from clients.protocol import CATCH_UP, SCALAR_BITS
from prge.lora_fa import DEFAULT_TARGETS, AdapterError, normalize_targets
from prge.quantize import QUANT_SCHEMES

METHODS = ("prge", "zo-dense", "fo")  # see simulation/server_app.py for each protocol


class ConfigError(ValueError):
    """A configuration mistake the user can fix (one sentence)."""


@dataclass
class Config:
    # == model and task ==
    # smollm2-135m | tiny (a seeded random 2-layer Llama for smoke runs; tiny-qwen2, tiny-qwen3,
    # tiny-gemma3, tiny-mistral, tiny-phi3: the same of another family) | a Hugging Face id | a
    # local directory
    model: str = "smollm2-135m"
    # mr | mixed (movies, tweets, Amazon, NYT) | a .csv/.jsonl file with text, label (0..L-1)
    # and optional domain, split columns
    task: str = "mr"
    template: str = ""  # prompt with {text}; empty: the task's default
    label_words: list[str] = field(default_factory=list)  # one per label; empty: task default
    max_length: int = 64  # prompt tokens; the text is truncated, never the template
    test_fraction: float = 0.2  # share of the examples held out as the test split
    split_seed: int = 0  # fixed train/test split, independent of `seed`
    eval_size: int = 300  # test examples used for periodic evaluation (0: the whole test split)
    train_size: int = 0  # training examples used (the first N of the seeded split; 0: all)
    # == adapter ==
    # LoRA-FA targets: projections (q, k, v, o, gate, up, down) and/or head (the label words'
    # rows of the LM head)
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    # the defaults are the demo's adapter (D = 41,472 on SmolLM2-135M): only the last layer is
    # adapted, so every step runs it alone on the frozen-prefix cache; all layers at a CPU budget
    # do not learn (docs/results.md)
    layers: str = "last-1"  # decoder layers adapted: all | last-N | I-J
    rank: int = 8  # LoRA rank r (A is r x in, frozen; B is out x r, trained)
    # == P-RGE and the inference engine ==
    engine: str = "executorch"  # executorch (exported XNNPACK program) | eager (PyTorch reference)
    quantize: str = "none"  # base weights in the ExecuTorch program: none (fp32) | int8 | int4
    program_cache_gib: float = 8.0  # lowered programs kept on disk; least recently used go first
    # frozen-prefix cache: layers before the first adapted one run once per example, ever
    prefix_cache: str = "auto"  # auto (on when the first layer is frozen) | off
    prefix_cache_mib: float = 2048.0  # hidden states kept per process; least recently used go first
    # lazy: an example's prefix runs at its first use (never more work than no cache); upfront:
    # a device computes all its examples when it first trains, sorted by length (less padding)
    prefix_cache_fill: str = "lazy"  # lazy | upfront
    # packed: the suffix's linear layers run on a batch's real tokens only, back to back
    # (prge/packing.py; same logits, ~1.4x less work on MR); padded: on every padded position
    suffix_layout: str = "packed"  # packed | padded
    mode: str = "parallel"  # parallel (one batched forward) | sequential (MeZO-style, 2q forwards)
    q: int = 4  # queries (directions) per step
    eps: float = 1e-2  # perturbation scale
    lr: float = 0.12  # P-RGE step size (bench/learn_search.py found it for the last-1 adapter)
    # constant | linear | cosine: lr at the fraction of the run done, decaying to 0 at its end
    # (the run's length: `steps` of train, `rounds` of run, constant within a round)
    lr_schedule: str = "cosine"
    batch_size: int = 16  # examples per step
    # random: each step's batch as drawn; length: the examples drawn for a round's K steps (a
    # device) or 8 steps of an epoch (`train`) regrouped into batches of similar length: the same
    # examples, less padding (prge/batching.py)
    batch_order: str = "random"  # random | length
    # == centralized training (fedprge train) ==
    steps: int = 100  # P-RGE steps
    eval_every_steps: int = 25  # steps between test evaluations
    # == federated simulation (fedprge run) ==
    eval_every: int = 50  # rounds between test evaluations (and the last round)
    method: str = "prge"  # prge (seeds + scalars) | zo-dense (P-RGE locally, dense B up) | fo
    fo_lr: float = 0.05  # SGD step size of method=fo (first-order FedAvg of B, backprop)
    rounds: int = 300  # federated rounds
    num_clients: int = 20  # simulated devices (each holds one partition of the data)
    clients_per_round: int = 4  # sampled each round, seeded
    local_steps: int = 8  # K: local P-RGE steps per client per round (K*q scalars uploaded)
    partition: str = "dirichlet"  # iid | dirichlet (alpha over labels) | domain
    alpha: float = 0.5  # Dirichlet concentration: smaller is more non-IID
    strategy: str = "mean"  # aggregation of the scalars (a built-in name or module:Class)
    # keyword arguments of the strategy: TOML table [strategy-args], --set strategy-args.trim=0.1
    # or --set 'strategy-args={"trim": 0.1}'
    strategy_args: dict[str, Any] = field(default_factory=dict)
    client_test_fraction: float = 0.2  # each client's own held-out share
    client_eval_size: int = 32  # per-client test examples for global vs personalized accuracy
    personal_steps: int = 5  # local P-RGE steps from the global adapter after the last round
    # what each device does for its own adapter (clients/personalization/): finetune (personal-
    # steps from the global adapter before each evaluation) | ditto | mixture | split | local |
    # none | module:ClassName (your own)
    personalization: str = "finetune"
    # keyword arguments of the method: TOML table [personalization-args],
    # --set personalization-args.lam=0.5
    personalization_args: dict[str, Any] = field(default_factory=dict)
    # rounds between evaluations of every client's global and personalized accuracy on its own
    # test examples (0: after the last round only)
    client_eval_every: int = 0
    # newcomers: the last N clients never train; at each client evaluation they catch up, do
    # their personalization method's work once, and are reported apart (newcomer_* in metrics)
    holdout_clients: int = 0
    max_reply_value: float = 1e6  # replies with any |value| above it are rejected as absurd
    # precision of the scalars on the wire, both ways: 32 (float32) | 16 (float16) | 8 (int8
    # with a power-of-two scale per round's block; clients/protocol.py)
    scalar_bits: int = 32
    # how a client that lacks log entries catches up: log (the tail it lacks), snapshot (theta_t
    # as float32) or auto (whichever message is smaller for that client; clients/protocol.py)
    catch_up: str = "auto"
    # == simulated faults, adversaries and deadlines ==
    # simulated faults are drawn per sampled client and round (clients/faults.py)
    dropout_prob: float = 0.0  # the device is offline: the server cannot reach it this round
    crash_prob: float = 0.0  # the device crashes while training: it answers with an error
    straggle_prob: float = 0.0  # the reply arrives `straggle-s` simulated seconds late
    straggle_s: float = 2.0  # a straggler's simulated delay
    hang_prob: float = 0.0  # the device never answers (a real hang: the host's guard cuts it off)
    # the round's deadline: seconds, auto (from the work of the rounds so far) or 0 (no limit: one
    # hung client stalls the run). Simulated stragglers past it are `late`; the server also waits
    # at most this long for replies (simulation/deadline.py)
    round_deadline_s: float | str = "auto"
    # auto: this many times the slowest complete round so far (checkpointed, so a resumed run
    # keeps the uninterrupted run's deadlines)
    round_deadline_factor: float = 10.0
    round_deadline_min_s: float = 60.0  # auto: never less
    # auto: before any round completed; with any setting, the least the first training round of
    # each launch waits (its client processes load the model and programs)
    round_deadline_first_s: float = 900.0
    # stop the run (resumable, exit 1) after this many rounds in a row that reached clients and
    # got no valid reply (0: never; raise it for studies of very high fault rates)
    max_failed_rounds: int = 5
    byzantine_fraction: float = 0.0  # clients that corrupt what they send (a fixed set)
    byzantine_attack: str = "scale"  # scale | sign-flip | random | examples-lie
    byzantine_scale: float = 100.0  # how strongly adversaries scale or flip their values
    # == edge devices in virtual time (simulation/virtual_clock.py) ==
    # each client is a device and rounds take its virtual time: "" (off) | phones | laptops (the
    # shipped sets) | a .toml of device classes | a .csv of per-client rows (clients/devices.py)
    devices: str = ""
    # who can be sampled at a round's virtual start: always | diurnal | a .csv trace of
    # client,start,end seconds (simulation/availability.py); needs devices
    availability: str = "always"
    diurnal_hours: float = 8.0  # diurnal: hours a day each client is available
    virtual_deadline_s: float = 0.0  # a reply arriving later, in virtual seconds, is late (0: none)
    # sample this many times clients-per-round and keep the first clients-per-round valid replies
    # to arrive (production systems over-select by ~1.3); needs devices
    over_selection: float = 1.0
    # == Ray (the simulation backend) ==
    client_cpus: float = 1.0  # Ray CPUs per client; concurrency = cores / client-cpus
    ray_cpus: int = 0  # CPUs the local Ray offers (0: every core); actors = ray-cpus / client-cpus
    ray_address: str = ""  # attach to a running Ray cluster (e.g. "auto" or "HOST:6379")
    # == run ==
    seed: int = 0  # every random number of a run derives from it
    threads: int = 0  # torch threads per process (0: torch's default)
    runs_dir: str = "runs"  # where each run makes its directory (unless --out names the directory)
    cache: str = ""  # model cache directory (empty: $FEDPRGE_CACHE or ~/.cache/fedprge)

    def validate(self) -> Config:
        checks = [
            ("q", self.q >= 1, "must be >= 1"),
            ("eps", self.eps > 0, "must be > 0"),
            ("lr", self.lr > 0, "must be > 0"),
            ("rank", self.rank >= 1, "must be >= 1"),
            ("batch-size", self.batch_size >= 1, "must be >= 1"),
            ("steps", self.steps >= 0, "must be >= 0"),
            ("eval-every", self.eval_every >= 1, "must be >= 1"),
            ("eval-every-steps", self.eval_every_steps >= 1, "must be >= 1"),
            ("eval-size", self.eval_size >= 0, "must be >= 0"),
            ("train-size", self.train_size >= 0, "must be >= 0"),
            ("prefix-cache", self.prefix_cache in ("auto", "off"), "must be auto or off"),
            ("prefix-cache-mib", self.prefix_cache_mib > 0, "must be > 0"),
            ("batch-order", self.batch_order in ("random", "length"), "must be random or length"),
            ("prefix-cache-fill", self.prefix_cache_fill in ("upfront", "lazy"),
             "must be upfront or lazy"),
            ("suffix-layout", self.suffix_layout in ("packed", "padded"),
             "must be packed or padded"),
            ("max-length", self.max_length >= 4, "must be >= 4"),
            ("threads", self.threads >= 0, "must be >= 0"),
            ("program-cache-gib", self.program_cache_gib > 0, "must be > 0"),
            ("test-fraction", 0 < self.test_fraction < 1, "must be between 0 and 1"),
            ("rounds", self.rounds >= 0, "must be >= 0"),
            ("num-clients", self.num_clients >= 1, "must be >= 1"),
            ("clients-per-round", 1 <= self.clients_per_round <= self.num_clients,
             f"must be between 1 and num-clients ({self.num_clients})"),
            ("local-steps", self.local_steps >= 1, "must be >= 1"),
            ("alpha", self.alpha > 0, "must be > 0"),
            ("partition", self.partition in ("iid", "dirichlet", "domain"),
             "must be iid, dirichlet or domain"),
            ("client-test-fraction", 0 <= self.client_test_fraction < 1, "must be in [0, 1)"),
            ("client-eval-size", self.client_eval_size >= 0, "must be >= 0"),
            ("personal-steps", self.personal_steps >= 0, "must be >= 0"),
            ("client-eval-every", self.client_eval_every >= 0, "must be >= 0"),
            ("holdout-clients", 0 <= self.holdout_clients <= self.num_clients
             - self.clients_per_round, "must leave at least clients-per-round "
             f"({self.clients_per_round}) of num-clients ({self.num_clients}) to train"),
            ("client-cpus", self.client_cpus > 0, "must be > 0"),
            ("ray-cpus", self.ray_cpus >= 0, "must be >= 0"),
            ("max-reply-value", self.max_reply_value > 0, "must be > 0"),
            ("dropout-prob", 0 <= self.dropout_prob <= 1, "must be in [0, 1]"),
            ("scalar-bits", self.scalar_bits in SCALAR_BITS, "must be 32, 16 or 8"),
            ("catch-up", self.catch_up in CATCH_UP, f"must be one of {', '.join(CATCH_UP)}"),
            ("crash-prob", 0 <= self.crash_prob <= 1, "must be in [0, 1]"),
            ("straggle-prob", 0 <= self.straggle_prob <= 1, "must be in [0, 1]"),
            ("straggle-s", self.straggle_s >= 0, "must be >= 0"),
            ("hang-prob", 0 <= self.hang_prob <= 1, "must be in [0, 1]"),
            ("round-deadline-s", self.round_deadline_s == "auto" or (
                isinstance(self.round_deadline_s, float) and self.round_deadline_s >= 0),
             "must be auto or a number of seconds >= 0"),
            ("round-deadline-factor", self.round_deadline_factor > 0, "must be > 0"),
            ("round-deadline-min-s", self.round_deadline_min_s >= 0, "must be >= 0"),
            ("round-deadline-first-s", self.round_deadline_first_s > 0, "must be > 0"),
            ("max-failed-rounds", self.max_failed_rounds >= 0, "must be >= 0"),
            ("byzantine-fraction", 0 <= self.byzantine_fraction < 1, "must be in [0, 1)"),
            ("byzantine-attack", self.byzantine_attack in ATTACKS,
             f"must be one of {', '.join(ATTACKS)}"),
            ("byzantine-scale", self.byzantine_scale > 0, "must be > 0"),
            ("mode", self.mode in ("parallel", "sequential"), "must be parallel or sequential"),
            ("method", self.method in METHODS, f"must be one of {', '.join(METHODS)}"),
            ("fo-lr", self.fo_lr > 0, "must be > 0"),
            ("engine", self.engine in ("eager", "executorch"), "must be eager or executorch"),
            ("quantize", self.quantize in QUANT_SCHEMES, f"must be one of {', '.join(QUANT_SCHEMES)}"),
            ("quantize", self.quantize == "none" or self.engine == "executorch",
             "needs engine=executorch (the eager engine is the fp32 reference)"),
            ("lr-schedule", self.lr_schedule in ("constant", "linear", "cosine"),
             "must be constant, linear or cosine"),
            ("diurnal-hours", 0 < self.diurnal_hours <= 24, "must be in (0, 24]"),
            ("virtual-deadline-s", self.virtual_deadline_s >= 0, "must be >= 0"),
            ("over-selection", self.over_selection >= 1, "must be >= 1"),
        ]
        for key, ok, why in checks:
            if not ok:
                raise ConfigError(f"{key}={getattr(self, key.replace('-', '_'))!r} {why}")
        if not self.devices:  # these are virtual-time settings: without devices, no clock
            for key, default in (("availability", "always"), ("virtual-deadline-s", 0.0),
                                 ("over-selection", 1.0)):
                if getattr(self, key.replace("-", "_")) != default:
                    raise ConfigError(f"{key} needs devices (a device profile set: "
                                      f"--set devices=phones)")
        if self.template and "{text}" not in self.template:
            raise ConfigError(f"template={self.template!r} must contain {{text}}")
        try:
            self.targets = list(normalize_targets(self.targets))
        except AdapterError as err:
            raise ConfigError(f"targets: {err}") from None
        return self

    def to_dict(self) -> dict[str, Any]:
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}


@functools.cache  # type hints are resolved once, not once per key parsed
def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(Config)
    return {f.name.replace("_", "-"): hints[f.name] for f in fields(Config)}


def _coerce(key: str, value: Any, typ: Any, from_text: bool) -> Any:
    """Turn a TOML value or a --set string into the field's type, or fail naming the key."""
    bad = ConfigError(f"{key}={value!r} is not a valid {getattr(typ, '__name__', str(typ))}")
    if typing.get_origin(typ) is dict:
        if from_text and isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ConfigError(f"{key} must be a JSON object, got {value!r}") from None
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a table of keyword arguments, got {value!r}")
        return dict(value)
    if typing.get_origin(typ) in (list, types.GenericAlias) or typ == list[str]:
        if from_text and isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError:
                    raise bad from None
            else:
                value = [v for v in text.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key} must be a list of strings, got {value!r}")
        return value
    if typ is bool:
        if isinstance(value, bool):
            return value
        if from_text and str(value).lower() in ("true", "1", "yes", "false", "0", "no"):
            return str(value).lower() in ("true", "1", "yes")
        raise bad
    if typ in (int, float):
        # a bool is an int to Python, never a number to a user; an int is a fine float
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int if typ is int else int | float):
            return typ(value)
        if from_text:
            try:
                return typ(str(value))
            except ValueError:
                raise bad from None
        raise bad
    if typ is str:
        if isinstance(value, str):
            return value
        raise bad
    if typ == float | str:  # a number, or a word such as "auto"
        try:
            return _coerce(key, value, float, from_text)
        except ConfigError:
            return _coerce(key, value, str, from_text)
    raise bad


def _scalar_from_text(text: str) -> Any:
    """`0.1` -> 0.1, `true` -> True, `"a"` or a bare word -> a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions of one character."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def closest_key(key: str, known) -> str | None:
    """The known key a typo most likely meant: `batch_size` -> batch-size, `round` -> rounds;
    None when nothing is within a third of the key's length."""
    spelled = key.replace("_", "-").lower()
    if spelled in known:
        return spelled
    distance, best = min((_edit_distance(spelled, k), k) for k in known)
    return best if distance <= max(1, len(spelled) // 3) else None


# Keys renamed since a release: old name -> new name. A user's file or --set that uses the old
# name gets one line naming the new one; a run directory's saved config is read through it.
RENAMED = {"out": "runs-dir"}  # `--out` names one run's directory; this key, their parent


def _apply(values: dict[str, Any], key: str, raw: Any, from_text: bool) -> None:
    types_by_key = _field_types()
    table, dot, arg = key.partition(".")
    if dot and typing.get_origin(types_by_key.get(table)) is dict:  # strategy-args.trim=0.1
        if not arg:
            raise ConfigError(f"{key!r} needs an argument name after the dot")
        value = _scalar_from_text(raw) if from_text and isinstance(raw, str) else raw
        values.setdefault(table, {})[arg] = value
        return
    if key in RENAMED:
        raise ConfigError(f"config key {key!r} is now {RENAMED[key]!r}")
    if key not in types_by_key:
        hint = closest_key(key, types_by_key)
        extra = f" (did you mean {hint!r}?)" if hint else ""
        raise ConfigError(f"unknown config key {key!r}{extra}")
    values[key] = _coerce(key, raw, types_by_key[key], from_text)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- TOML file <- `key=value` overrides, then validate."""
    values: dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"config file {str(p)!r} is not valid TOML: {err}") from None
        for key, raw in data.items():
            _apply(values, key, raw, from_text=False)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r} must look like key=value")
        _apply(values, key.strip(), raw, from_text=True)
    kwargs = {k.replace("-", "_"): v for k, v in values.items()}
    return Config(**kwargs).validate()


def config_from_mapping(values: dict[str, Any], saved: bool = False) -> Config:
    """A validated Config from a flat mapping, e.g. Flower's run config (strings for lists).
    `saved`: the mapping is a run directory's config.json, perhaps written before a key was
    renamed; its old names are read as the new ones."""
    parsed: dict[str, Any] = {}
    for key, raw in values.items():
        if saved:
            key = RENAMED.get(key, key)
        _apply(parsed, key, raw, from_text=True)
    return Config(**{k.replace("-", "_"): v for k, v in parsed.items()}).validate()


# Keys a runner adds to Flower's run config beside (or instead of) the flat keys above: the whole
# resolved config as JSON, the run directory it made, whether the run continues a stopped one, and
# the PID of the command that owns the run (the run stops when that process is gone).
RUNNER_KEYS = ("config-json", "run-dir", "resume", "owner-pid")


@dataclass(frozen=True)
class FlowerRun:
    """What a ServerApp or ClientApp reads from Flower's run config."""

    cfg: Config
    run_dir: Path | None  # None: `flwr run .` with no runner; the ServerApp makes one
    resume: bool
    owner_pid: int  # 0: none


def config_from_flower(run_config: dict[str, Any]) -> FlowerRun:
    """The one parser of Flower's run config, for both paths: `fedprge run` (which passes
    `config-json` and `run-dir`) and `flwr run .` (the flat keys of pyproject.toml plus any
    --run-config overrides; lists as comma-separated strings). A client calls it for every
    message: the same run config is parsed once per process."""
    return _parse_flower(json.dumps(dict(run_config), sort_keys=True))


@functools.lru_cache(maxsize=8)
def _parse_flower(key: str) -> FlowerRun:
    values = json.loads(key)
    blob = str(values.pop("config-json", ""))
    run_dir = str(values.pop("run-dir", ""))
    resume = _coerce("resume", values.pop("resume", False), bool, from_text=True)
    owner_pid = _coerce("owner-pid", values.pop("owner-pid", 0), int, from_text=True)
    if blob:
        try:
            values = json.loads(blob)
        except json.JSONDecodeError:
            raise ConfigError("config-json is not a JSON object") from None
    return FlowerRun(config_from_mapping(values), Path(run_dir) if run_dir else None, resume,
                     owner_pid)
