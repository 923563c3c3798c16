"""`fedprge config show|validate`: the resolved config of a command line, and where each value
came from (the defaults, the TOML file, or --set); and which of the keys a user set the command
they ran ignores (`fedprge train` runs no federation: a `rounds` there is a mistake worth a line).

`show` prints TOML that `--config` reads back to the same config, one key per line with its
source as a comment, so a run's settings can be checked before minutes are spent on it, and
saved as a config file of its own.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from clients.runconfig import Config, load_config
from simulation.config_doc import config_keys


def _toml(value: Any) -> str:
    """One TOML value (strings as JSON strings, which TOML's basic strings accept)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml(v)}" for k, v in value.items()) + "}"
    return repr(value)


def sources(path: str | None, overrides: list[str]) -> dict[str, str]:
    """key -> where its value came from: the file's name, --set, else the default."""
    where: dict[str, str] = {}
    if path:
        for key in tomllib.loads(Path(path).read_text()):
            where[key.split(".")[0]] = str(path)
    for item in overrides:
        where[item.partition("=")[0].strip().split(".")[0]] = "--set"
    return where


def show(path: str | None, overrides: list[str]) -> str:
    cfg = load_config(path, overrides)  # first: a mistake is its one line, before anything else
    where = sources(path, overrides)
    lines = []
    for key, value in cfg.to_dict().items():
        lines.append(f"{key} = {_toml(value)}  # {where.get(key, 'default')}")
    return "\n".join(lines) + "\n"


def validate(path: str | None, overrides: list[str]) -> str:
    cfg: Config = load_config(path, overrides)
    where = sources(path, overrides)
    from_file = sum(1 for s in where.values() if s != "--set")
    from_set = sum(1 for s in where.values() if s == "--set")
    return (f"ok: {len(cfg.to_dict())} keys valid ({from_file} from {path or 'no file'}, "
            f"{from_set} from --set, the rest defaults)\n")


# The sections of Config (clients/runconfig.py, its "# == name ==" lines) that only one command
# reads; every other key is read by both.
FEDERATED_SECTIONS = ("federated simulation (fedprge run)",
                      "simulated faults, adversaries and deadlines", "Ray (the simulation backend)")
TRAIN_SECTIONS = ("centralized training (fedprge train)",)

# A key of the other command that means the same thing as one of this command's: named in the
# warning, so that a config moved from one command to the other is fixed in one edit.
COUNTERPART = {"eval-every": "eval-every-steps", "eval-every-steps": "eval-every",
               "rounds": "steps", "steps": "rounds"}


def _keys_of(sections: tuple[str, ...]) -> set[str]:
    return {key for name, rows in config_keys() if name in sections for key, *_ in rows}


def unused_keys(command: str, path: str | None, overrides: list[str]) -> list[str]:
    """Keys set in the file or with --set that `fedprge <command>` never reads."""
    ignored = _keys_of(FEDERATED_SECTIONS if command == "train" else TRAIN_SECTIONS)
    return sorted(key for key in sources(path, overrides) if key in ignored)


def unused_warning(command: str, path: str | None, overrides: list[str]) -> str | None:
    """The one-line warning for the keys `fedprge <command>` ignores, each with the key of this
    command that means the same where there is one; None when every key set is read."""
    unused = unused_keys(command, path, overrides)
    if not unused:
        return None
    named = [f"{k} (use {COUNTERPART[k]})" if k in COUNTERPART else k for k in unused]
    return f"fedprge: warning: `fedprge {command}` does not use {', '.join(named)}"
