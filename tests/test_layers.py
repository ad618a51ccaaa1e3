"""The import graph of goproxy/, computed from the source: no cycles, and lower layers never
reach up (function-level and TYPE_CHECKING imports count)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.helpers import ROOT

PACKAGE = ROOT / "goproxy"

# Each group may not import any module of the groups named after it.
FORBIDDEN = {
    "goproxy.net": ("goproxy.server", "goproxy.service", "goproxy.app", "goproxy.cli", "goproxy.storage",
                    "goproxy.sumdb", "goproxy.upstream", "goproxy.config"),
    "goproxy.sumdb": ("goproxy.server", "goproxy.service", "goproxy.app", "goproxy.cli"),
    "goproxy.storage": ("goproxy.server", "goproxy.service", "goproxy.app", "goproxy.cli", "goproxy.sumdb",
                        "goproxy.upstream", "goproxy.net"),
    "goproxy.app": ("goproxy.cli",),
    "goproxy.errors": ("goproxy.",),
    "goproxy.values": ("goproxy.",),
}


def modules() -> dict[str, Path]:
    """Return every module of the package by dotted name."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Return the package's modules that module name imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def resolve(dotted: str) -> str | None:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            if t.startswith("goproxy"):
                r = resolve(t)
                if r and r != name:
                    out.add(r)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """Return one import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(g.get(v, ())):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state:
                found = visit(w)
                if found:
                    return found
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(g):
        if v not in state:
            found = visit(v)
            if found:
                return found
    return None


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle or [])


@pytest.mark.parametrize("group", sorted(FORBIDDEN))
def test_lower_layers_do_not_import_higher_ones(group: str) -> None:
    bad = sorted(f"{m} imports {t}" for m, targets in graph().items()
                 if m == group or m.startswith(group + ".")
                 for t in targets if any(t == f or t.startswith(f) for f in FORBIDDEN[group]))
    assert bad == []


def test_the_checker_sees_function_level_and_type_checking_imports(tmp_path: Path) -> None:
    src = tmp_path / "goproxy"
    (src / "sub").mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "sub" / "__init__.py").write_text("")
    (src / "a.py").write_text("def f():\n    from .sub import b\n")
    (src / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .. import a\n")
    known = {"goproxy": src / "__init__.py", "goproxy.sub": src / "sub" / "__init__.py",
             "goproxy.a": src / "a.py", "goproxy.sub.b": src / "sub" / "b.py"}
    g = {name: imports(name, path, known) for name, path in known.items()}
    assert g["goproxy.a"] == {"goproxy.sub", "goproxy.sub.b"}
    assert "goproxy.a" in g["goproxy.sub.b"]
    assert find_cycle(g) is not None
