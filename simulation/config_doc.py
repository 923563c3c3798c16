"""Config's own description of its keys: each key's type, default and comment, by section.

`Config` in clients/runconfig.py documents every key with a comment (above or beside it) and
groups keys under `# == name ==` lines. The reference page (simulation/reference.py) and the
CLI's check of keys a command never reads (simulation/config_cmd.py) both read that, here.
"""

from __future__ import annotations

import inspect
import io
import re
import tokenize
from dataclasses import MISSING, fields

from clients.runconfig import Config

SECTION = re.compile(r"==\s*(.+?)\s*==$")  # a comment `# == name ==` (the "#" stripped)


def _comments(source: str) -> dict[int, tuple[str, bool]]:
    """Line number (1-based, in `source`) -> (comment text, whether code precedes it)."""
    out: dict[int, tuple[str, bool]] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            inline = bool(tok.line[:tok.start[1]].strip())
            out[tok.start[0]] = (tok.string.lstrip("#").strip(), inline)
    return out


def _field_lines(source: str) -> dict[str, int]:
    """Field name -> the line of its annotation in `source`."""
    return {m.group(1): n for n, line in enumerate(source.splitlines(), start=1)
            if (m := re.match(r"\s{4}(\w+):", line))}


def _default(f) -> str:
    value = f.default if f.default is not MISSING else f.default_factory()
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else repr(value)
    return repr(value)


def _type(f) -> str:
    return str(f.type).replace("typing.", "").replace("dict[str, Any]", "table")


def config_keys() -> list[tuple[str, list[tuple[str, str, str, str]]]]:
    """[(section, [(key, type, default, description), ...]), ...] in the order of `Config`."""
    source = inspect.getsource(Config)
    comments, lines = _comments(source), _field_lines(source)
    sections: list[tuple[str, list]] = [("", [])]
    last = 0
    for f in fields(Config):
        at = lines[f.name]
        above = []
        for n in range(last + 1, at):
            text, inline = comments.get(n, ("", True))
            if inline or not text:
                continue
            if (m := SECTION.match(text)):
                sections.append((m.group(1), []))
                above = []
            else:
                above.append(text)
        beside = comments.get(at, ("", False))
        description = " ".join([*above, beside[0] if beside[1] else ""]).strip()
        key = f.name.replace("_", "-")
        sections[-1][1].append((key, _type(f), _default(f), description))
        last = at
    return [(name, rows) for name, rows in sections if rows]
