"""Rules of the layout: which package may import which, and no import cycles."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("prge", "clients", "strategies", "simulation", "fedprge")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = path
    return mods


def _imports(path: Path, mods: dict[str, Path]) -> set[str]:
    """Our modules that `path` imports anywhere, in a function body too (a deferred import still
    ties the two modules together)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # `from pkg import module` names a module; `from module import name` does not
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        found |= {n for n in names if n in mods}
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, done = [], set()

    def visit(node: str, path: list[str]) -> None:
        for dep in sorted(graph[node]):
            if dep in path:
                found.append(path[path.index(dep):] + [dep])
            elif dep not in done:
                visit(dep, [*path, dep])
        done.add(node)

    for node in sorted(graph):
        if node not in done:
            visit(node, [node])
    return found


def test_no_module_imports_itself_through_others():
    mods = _modules()
    graph = {name: _imports(path, mods) - {name} for name, path in mods.items()}
    assert _cycles(graph) == []


def test_the_cycle_check_can_fail():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def _pulled_in(packages: tuple[str, ...], forbidden: tuple[str, ...]) -> subprocess.CompletedProcess:
    """Import every module of `packages` in a fresh interpreter; it exits 1 and prints the
    modules of the `forbidden` top-level packages that came along, if any."""
    code = ("import sys, pkgutil, importlib\n"
            "packages, forbidden = sys.argv[1].split(','), sys.argv[2].split(',')\n"
            "for name in packages:\n"
            "    pkg = importlib.import_module(name)\n"
            "    for m in pkgutil.walk_packages(pkg.__path__, name + '.'):\n"
            "        importlib.import_module(m.name)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in forbidden)\n"
            "print(bad); sys.exit(1 if bad else 0)")
    return subprocess.run([sys.executable, "-c", code, ",".join(packages), ",".join(forbidden)],
                          capture_output=True, text=True)


def test_clients_and_strategies_never_import_the_simulator():
    """A client or a strategy must be deployable without simulation/ (the server, runner, CLI):
    no module of clients/ or strategies/ imports it, directly or through another."""
    proc = _pulled_in(("clients", "strategies"), ("simulation",))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]


def test_prge_never_imports_flower_or_ray():
    """The algorithm runs without the federation: no module of prge/ pulls in flwr or ray."""
    proc = _pulled_in(("prge",), ("flwr", "ray"))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
