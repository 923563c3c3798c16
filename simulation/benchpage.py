"""Benchmark results as artifacts: a bench script run with `--save` writes its figures to
`docs/results/<bench>.json` (what it measured, the command, the machine and library versions) and
renders `docs/results/<bench>.md` from it; `python -m simulation.benchpage FILE.json...` renders
pages again from their JSON without measuring anything (a test does it for every shipped page).

The record (one JSON object):

    {"bench": "step-time", "command": "python bench/step_time.py --save",
     "environment": {...},            # simulation/environment.py's record of this process
     "tables": [{"title": "...", "columns": ["q", "parallel s", ...],
                 "rows": [["4", "0.31", ...], ...], "text_columns": 1}],
     "notes": ["what the table does not measure", ...],
     "figures": {...}}                # the raw numbers, for scripts (the bench's JSON line)

Cells are the strings the bench prints, so that a page reads like the bench's own output; the
raw numbers stay in `figures`.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simulation.report import GENERATED, _markdown, environment_line

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"


class BenchPageError(ValueError):
    """A record that is not a benchmark record (one line)."""


def table(title: str, columns: list[str], rows: list[list[Any]], text_columns: int = 1
          ) -> dict[str, Any]:
    """One table of a record; every cell becomes its string."""
    cells = [[str(c) for c in r] for r in rows]
    if any(len(r) != len(columns) for r in cells):
        raise BenchPageError(f"table {title!r}: a row's length is not the header's ({len(columns)})")
    return {"title": title, "columns": list(columns), "rows": cells, "text_columns": text_columns}


def render(record: dict[str, Any]) -> str:
    """The markdown page of a record: the command that made it, what it ran on, its tables."""
    try:
        command, env, tables = record["command"], record["environment"], record["tables"]
    except (KeyError, TypeError):
        raise BenchPageError("not a benchmark record (needs command, environment, tables)") from None
    parts = [GENERATED.format(command=command), f"Measured on: {environment_line(env)}"]
    for t in tables:
        parts.append(f"### {t['title']}\n\n"
                     + _markdown(t["columns"], t["rows"], t.get("text_columns", 1)).rstrip())
    notes = record.get("notes") or []
    if notes:
        parts.append("\n".join(f"- {n}" for n in notes))
    return "\n\n".join(parts) + "\n"


def save(bench: str, tables: list[dict[str, Any]], figures: dict[str, Any],
         notes: Sequence[str] = (), out_dir: Path = RESULTS, argv: list[str] | None = None,
         page: str | bool = True) -> Path:
    """Write `<out_dir>/<bench>.json` and the page rendered from it; returns the page's path.
    `page`: a bench's `--save` value: True for the bench's own name, or a name of its own for a
    second setting of one bench (`--save catch-up-int8`), so that one does not overwrite the
    other. The command recorded is the one this process was started with."""
    from simulation.environment import environment

    if isinstance(page, str):
        if not page or "/" in page or page.startswith("."):
            raise BenchPageError(f"--save {page!r}: a page name is a plain file name, e.g. {bench}-int8")
        bench = page.removesuffix(".json").removesuffix(".md")

    argv = sys.argv if argv is None else argv
    script = Path(argv[0])
    command = shlex.join(["python", f"bench/{script.name}", *argv[1:]])
    record = {"bench": bench, "command": command, "environment": environment(),
              "tables": tables, "notes": list(notes), "figures": figures}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{bench}.json").write_text(json.dumps(record, indent=1) + "\n")
    page = out_dir / f"{bench}.md"
    page.write_text(render(record))
    return page


def render_file(path: Path) -> Path:
    """Re-render the page beside a saved record (`X.json` -> `X.md`)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise BenchPageError(f"cannot read {str(path)!r}: {err}") from None
    page = Path(path).with_suffix(".md")
    page.write_text(render(record))
    return page


def main(argv: list[str] | None = None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: python -m simulation.benchpage docs/results/BENCH.json ...", file=sys.stderr)
        return 2
    try:
        for p in paths:
            print(render_file(Path(p)))
    except BenchPageError as err:
        print(f"benchpage: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
