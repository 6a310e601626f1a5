"""Module seams: no import circles, every module importable on its own."""

from __future__ import annotations

import ast
import subprocess
import sys

import streamjobs
from tests.helpers import ROOT

PACKAGE = ROOT / "engine"


def _module_name(path) -> str:  # type: ignore[no-untyped-def]
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(["streamjobs", *parts])


def _runtime_imports(tree: ast.Module, modules: set[str]) -> set[str]:
    """streamjobs modules imported when the module runs (not under TYPE_CHECKING).
    ``from pkg import sub`` imports the submodule; a package's own __init__ running first
    is how Python imports any submodule, so it is not counted as an edge."""
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("streamjobs"):
                subs = {f"{node.module}.{a.name}" for a in node.names} & modules
                found.update(subs or {node.module})
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("streamjobs"))
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    visit([child])

    visit(tree.body)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    names = set(files)
    return {name: {m for m in _runtime_imports(ast.parse(path.read_text()), names)
                   if m in files and m != name}
            for name, path in files.items()}


def test_no_import_cycles() -> None:
    graph = _graph()
    # The package's __init__ re-exports the public API; submodules never import it.
    assert not any("streamjobs" in deps for name, deps in graph.items() if name != "streamjobs")
    done: set[str] = set()

    def walk(node: str, path: list[str]) -> None:
        if node in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(node):], node]))
        if node in done:
            return
        for dep in sorted(graph[node]):
            walk(dep, [*path, node])
        done.add(node)

    for name in sorted(graph):
        walk(name, [])


def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    names = sorted(n for n in _graph() if not n.endswith("__main__"))
    probe = ("import importlib, sys\n"
             "for name in sys.argv[1:]:\n"
             "    for m in [m for m in sys.modules if m.startswith('streamjobs')]:\n"
             "        del sys.modules[m]\n"
             "    importlib.import_module(name)\n")
    proc = subprocess.run([sys.executable, "-c", probe, *names], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_public_api_is_all() -> None:
    assert sorted(streamjobs.__all__) == sorted(
        n for n in vars(streamjobs) if not n.startswith("_") and n not in _SUBMODULES)
    for name in streamjobs.__all__:
        assert getattr(streamjobs, name).__module__.startswith("streamjobs.")


_SUBMODULES = {p.stem for p in PACKAGE.glob("*.py")} | {
    p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}  # api, ui
