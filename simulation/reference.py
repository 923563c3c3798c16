"""The reference pages generated from the code: config keys (docs/reference/config.md), the
command line (docs/reference/cli.md) and the strategy API (docs/reference/strategy-api.md).

Every key's type, default and meaning come from `Config` in clients/runconfig.py (its comments
are the descriptions; `# == name ==` lines start a section), and every command's options from the
CLI's own parser, so a page cannot drift from the code: tests/simulation/test_reference.py
regenerates every page and fails when a file differs.

    python -m simulation.reference          # rewrite the pages
    python -m simulation.reference --check  # exit 1 when a page is stale
"""

from __future__ import annotations

import argparse
import inspect
import io
import re
import sys
import tokenize
from dataclasses import MISSING, fields
from pathlib import Path

from clients.runconfig import Config

ROOT = Path(__file__).resolve().parent.parent
PAGES = {"config": ROOT / "docs" / "reference" / "config.md",
         "cli": ROOT / "docs" / "reference" / "cli.md",
         "strategy-api": ROOT / "docs" / "reference" / "strategy-api.md"}
SECTION = re.compile(r"==\s*(.+?)\s*==$")  # a comment `# == name ==` (the "#" stripped)
HELP_WIDTH = 100  # argparse wraps to the terminal otherwise: the page must not depend on it


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


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def config_page() -> str:
    out = ["# Config keys", "",
           "Generated from `Config` in `clients/runconfig.py` by `python -m simulation.reference`;",
           "a test fails when this page differs from the code.", "",
           "Set a key in a TOML file (`--config FILE`, kebab-case keys as below), on the command",
           "line (`--set key=value`, repeatable; later sources win), as a sweep axis",
           "(`--grid key=v1,v2`), from Python (`fedprge.load_config(path, key_name=value)`), or,",
           "for the keys that `pyproject.toml` declares in `[tool.flwr.app.config]` (Flower",
           "refuses others), with `flwr run . --run-config 'key=value ...'`. A mistake (unknown",
           "key, wrong type, impossible value) stops the command with one line naming the key.",
           "`fedprge config show` prints the resolved config with each value's source.", ""]
    for name, rows in config_keys():
        out += [f"## {name[0].upper() + name[1:]}", "", "| key | type | default | meaning |",
                "| --- | --- | --- | --- |"]
        out += [f"| `{k}` | {_cell(t)} | `{_cell(d)}` | {_cell(desc)} |" for k, t, d, desc in rows]
        out.append("")
    return "\n".join(out)


def cli_page() -> str:
    from simulation.cli import _parser

    parser = _parser()
    out = ["# Command line", "",
           "Generated from the parser in `simulation/cli.py` by `python -m simulation.reference`;",
           "a test fails when this page differs from the code. Exit codes: 0 done, 1 the run",
           "stopped (one line names the cause; a run directory is resumable), 2 a bad config or",
           "input (one line names it), 130 interrupted.", ""]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        command.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=HELP_WIDTH)
        out += [f"## fedprge {name}", "", "```text", command.format_help().rstrip(), "```", ""]
    return "\n".join(out)


def _signature(obj) -> str:
    return str(inspect.signature(obj)).replace("'", "")


def strategy_page() -> str:
    """The interface a plug-in strategy is written against, from strategies/base.py."""
    from strategies import base

    out = ["# Strategy API", "",
           "Generated from `strategies/base.py` by `python -m simulation.reference`; a test fails",
           "when this page differs from the code. A walk-through with the built-ins is in",
           "[the how-to](../how-to/own-strategy.md).", "", inspect.getdoc(base), ""]
    reply = base.ScalarReply
    out += ["## `ScalarReply`", "", inspect.getdoc(reply), "", "| field | type |", "| --- | --- |"]
    out += [f"| `{f.name}` | {_cell(str(f.type))} |" for f in fields(reply)]
    strategy = base.ScalarStrategy
    out += ["", "## `ScalarStrategy`", "", inspect.getdoc(strategy), "", "Class attributes:", ""]
    for name in ("name", "state_keys", "run_seed", "releases_client_statistics"):
        out.append(f"- `{name}` = `{getattr(strategy, name)!r}`")
    for name in ("aggregate", "configure", "summary", "state_dict", "load_state_dict"):
        method = getattr(strategy, name)
        doc = inspect.getdoc(method) or "Implement it in your subclass (see the rules above)."
        out += ["", f"### `{name}{_signature(method)}`", "", doc]
    out += ["", "## Helpers", ""]
    for fn in (base.stack, base.as_float):
        out += [f"### `{fn.__name__}{_signature(fn)}`", "", inspect.getdoc(fn), ""]
    return "\n".join(out)


def render() -> dict[str, str]:
    return {"config": config_page(), "cli": cli_page(), "strategy-api": strategy_page()}


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="write (or --check) the generated reference pages")
    ap.add_argument("--check", action="store_true", help="exit 1 when a page is stale")
    args = ap.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = PAGES[name]
        if path.exists() and path.read_text() == text:
            continue
        if args.check:
            stale.append(_shown(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(_shown(path))
    if stale:
        print(f"stale: {', '.join(stale)} (run `python -m simulation.reference`)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
