"""The shape of the code: imports point one way (supernets <- search_spaces <- nas <- scripts), no import
cycle
anywhere, the engine never imports a command module, and nas/ stays a few rooms rather than a hall of modules.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("supernets", "search_spaces", "nas", "scripts")
FORBIDDEN = {
    "supernets": {"search_spaces", "nas", "scripts", "optuna", "numba", "wandb", "tensorboard"},
    "search_spaces": {"nas", "scripts", "optuna", "numba", "wandb", "tensorboard"},
    "nas": {"scripts"},
}
MAX_TOP_LEVEL_MODULES = 12  # nas/*.py; everything else lives in a package that says what it is for


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(f): f for pkg in PACKAGES for f in sorted((ROOT / pkg).rglob("*.py"))}


def _top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _project_imports(name: str, path: Path) -> set[str]:
    """The project modules ``name`` imports anywhere in its file (inside functions too: a lazy import still
    ties modules)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                hit = next(
                    (".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in MODULES),
                    None,
                )
                if hit:
                    out.add(hit)
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join([*package[: len(package) - node.level + 1], node.module])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in MODULES:
                    out.add(full)
                elif base in MODULES:
                    out.add(base)
    out.discard(name)
    return out


GRAPH = {name: _project_imports(name, path) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_lower_layers(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    for f in files:
        bad = _top_level_imports(f) & FORBIDDEN[package]
        assert not bad, f"{f.relative_to(ROOT)} imports {sorted(bad)}"


def test_there_is_no_import_cycle_anywhere():
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_cycle():
    """The check above could not fail if the finder were broken: it must see a -> b -> c -> a and leave d
    alone."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_engine_never_imports_a_command_module():
    engine = [m for m in GRAPH if m.startswith("nas") and not m.startswith("nas.commands") and m != "nas.cli"]
    offenders = {m: sorted(t for t in GRAPH[m] if t.startswith("nas.commands")) for m in engine}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_nas_has_few_top_level_modules():
    top = sorted(p.name for p in (ROOT / "nas").glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_ruff_check_passes():
    """The lint rules in pyproject.toml hold for the whole tree (ruff is in the dev extra: CI runs it)."""
    res = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-1000:]
