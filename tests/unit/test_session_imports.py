"""The session package's modules import one another in one direction only.

Read statically, so imports under `TYPE_CHECKING` and inside functions count too: a cycle hidden there
still ties the modules into one knot that cannot be read, tested or replaced apart.
"""

from __future__ import annotations

import ast
from pathlib import Path

import voxgate.session

SESSION = Path(voxgate.session.__file__).parent


def import_graph(package_dir: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (anywhere in its source)."""
    modules = {f"{package}.{path.stem}" for path in package_dir.glob("*.py") if path.stem != "__init__"}
    graph: dict[str, set[str]] = {}
    for module in modules:
        tree = ast.parse((package_dir / f"{module.rsplit('.', 1)[1]}.py").read_text())
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = package if node.level else (node.module or "")
                if node.level and node.module:
                    base = f"{package}.{node.module}"
                targets.add(base)
                targets.update(f"{base}.{alias.name}" for alias in node.names)
        graph[module] = {t for t in targets if t in modules and t != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as the path that closes it), or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module):], module]
        if module in done:
            return None
        for target in sorted(graph[module]):
            cycle = visit(target, [*path, module])
            if cycle is not None:
                return cycle
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module, [])
        if cycle is not None:
            return cycle
    return None


def test_no_import_cycle_among_session_modules() -> None:
    graph = import_graph(SESSION, "voxgate.session")
    assert {"voxgate.session.session", "voxgate.session.listening", "voxgate.session.response"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_pieces_the_session_feeds_do_not_import_it() -> None:
    graph = import_graph(SESSION, "voxgate.session")
    assert graph["voxgate.session.recorder"] == set()  # fed ids, items and a summary
    assert graph["voxgate.session.keypad"] == set()  # engines read it: it must pull nothing in
    for module in ("listening", "response", "recorder", "keypad"):
        assert "voxgate.session.session" not in graph[f"voxgate.session.{module}"], module


def test_the_check_finds_a_cycle_hidden_under_type_checking(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("from pkg.b import B\n")
    (tmp_path / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import c\n")
    (tmp_path / "c.py").write_text("def f():\n    from .a import A\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph == {"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.c"}, "pkg.c": {"pkg.a"}}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    (tmp_path / "c.py").write_text("")
    assert find_cycle(import_graph(tmp_path, "pkg")) is None
