"""The reference pages generated from the code: config keys (docs/reference/config.md), the
command line (docs/reference/cli.md), the strategy API (docs/reference/strategy-api.md), and
pyproject.toml's `[tool.flwr.app.config]` (simulation/flower_app_config.py).

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
import sys
from dataclasses import fields
from pathlib import Path

from simulation.config_doc import config_keys
from simulation.flower_app_config import with_block

ROOT = Path(__file__).resolve().parent.parent
PAGES = {"config": ROOT / "docs" / "reference" / "config.md",
         "cli": ROOT / "docs" / "reference" / "cli.md",
         "strategy-api": ROOT / "docs" / "reference" / "strategy-api.md",
         "flower-app": ROOT / "pyproject.toml"}  # its [tool.flwr.app.config] block only
HELP_WIDTH = 100  # argparse wraps to the terminal otherwise: the page must not depend on it


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def config_page() -> str:
    out = ["# Config keys", "",
           "Generated from `Config` in `clients/runconfig.py` by `python -m simulation.reference`;",
           "a test fails when this page differs from the code.", "",
           "Set a key in a TOML file (`--config FILE`, kebab-case keys as below), on the command",
           "line (`--set key=value`, repeatable; later sources win), as a sweep axis",
           "(`--grid key=v1,v2`), from Python (`fedprge.load_config(path, key_name=value)`), or",
           "with `flwr run . --run-config 'key=value ...'` (`pyproject.toml` declares every key in",
           "`[tool.flwr.app.config]`, generated from these defaults). A mistake (unknown",
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
    return {"config": config_page(), "cli": cli_page(), "strategy-api": strategy_page(),
            "flower-app": with_block(PAGES["flower-app"].read_text())}


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
