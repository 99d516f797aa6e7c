"""The house keeps its shape: no import cycles, no import against the flow, a package map that is current.

The imports of every module of ``verifier/`` are read from its source (all
of them: at the top, inside functions, under ``TYPE_CHECKING``). No module
may reach itself through them, except a package's ``__init__`` importing
its own submodules (a re-export). Every import between two top-level
units (a package such as ``cents/``, or a module such as ``run.py``) must
go down ``LAYERS``: a stage uses the shared modules and the stages before
it, never one after it. ``verifier/__init__.py`` names every unit. Pure
logic, no database.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable
from pathlib import Path

import pytest

import verifier

PACKAGE = Path(verifier.__file__).resolve().parent
# Bottom first. A unit imports only itself and the units of earlier layers (see verifier/__init__.py).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("verifier", "errors", "signals", "paths"),  # "verifier": the package root (its version)
    ("findings",),
    ("config",),
    ("run",),
    ("terminal",),
    ("files",),
    ("pg",),
    ("source",),
    ("scratch",),
    ("migrate",),
    ("demo",),
    ("cents",),
    ("ledger",),
    ("judge",),
    ("report",),
    ("jobs",),
    ("cli",),
    ("main",),
)
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def _module_name(path: Path) -> str:
    parts = ["verifier", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, modules: Iterable[str]) -> set[str]:
    """The modules of ``verifier`` that module ``name`` imports, anywhere in its source."""
    known = set(modules)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in found if m in known and m != name}


@functools.cache
def graph() -> dict[str, set[str]]:
    """Module -> the modules it imports; a package's imports of its own submodules left out."""
    modules = _modules()
    edges = {}
    for name, path in modules.items():
        imported = _imports(name, path, modules)
        if path.name == "__init__.py":
            imported = {m for m in imported if not m.startswith(name + ".")}
        edges[name] = imported
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_the_cycle_finder_finds_cycles() -> None:
    """The finder itself: a cycle through three modules is found, a chain is not."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycles() -> None:
    found = cycles(graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize("module", sorted(_modules()))
def test_no_import_against_the_flow(module: str) -> None:
    edges = graph()
    assert _unit(module) in RANK, f"{_unit(module)} is in no layer of LAYERS (and of verifier/__init__.py)"
    against = sorted(m for m in edges[module]
                     if _unit(m) != _unit(module) and RANK[_unit(m)] >= RANK[_unit(module)])
    assert not against, f"{module} imports {', '.join(against)}, which come after it in the flow"


def test_the_package_map_names_every_unit() -> None:
    doc = verifier.__doc__ or ""
    units = {_unit(m): p for m, p in _modules().items() if _unit(m) != "verifier"}
    for unit, path in sorted(units.items()):
        spelled = f"{unit}.py" if path.parent == PACKAGE and path.name != "__init__.py" else f"{unit}/"
        assert spelled in doc, f"verifier/__init__.py does not name {spelled}"
    assert set(units) | {"verifier"} == set(RANK), "LAYERS names a unit the package does not have"


@pytest.mark.parametrize("package", sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py")))
def test_every_package_map_names_its_modules(package: str) -> None:
    init = PACKAGE / package / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    for module in sorted(p.stem for p in (PACKAGE / package).glob("*.py") if p.name != "__init__.py"):
        named = f"``{module}``" in doc or f"{module}.py" in doc
        assert named, f"verifier/{package}/__init__.py omits {module}"
