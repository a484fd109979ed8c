"""The layout is a contract: layers (import-linter), no cycles, no private names across modules.

The layer contracts live in ``pyproject.toml`` (``[tool.importlinter]``) and ``lint-imports`` runs
in the test command; these tests show the contracts catch what they promise to (a simulator that
imports an adapter, a manifest module that imports the engine) on a copy of the package.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pipeline"
LINT = Path(sys.executable).parent / "lint-imports"


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the package under ``root`` (its own copy first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A copy of the package and its contracts, to break on purpose."""
    shutil.copytree(PACKAGE, tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_contracts_hold() -> None:
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        (
            "sim/venice/rules.py",
            "from pipeline.providers.venice import models as _adapter_table",
            "a simulator never imports an adapter",
        ),
        (
            "sim/newapi/app.py",
            "import pipeline.providers.newapi.codec",
            "a simulator never imports an adapter",
        ),
        ("manifest/expand.py", "from pipeline.engine import runner", "layers:"),
        ("providers/http.py", "from pipeline.journal import state", "layers:"),
        ("sim/relaydance/rules.py", "from pipeline.sim.venice import rules", "each simulator"),
    ],
)
def test_a_broken_contract_fails_the_lint(
    copy: Path, module: str, line: str, contract: str
) -> None:
    target = copy / "pipeline" / module
    text = target.read_text()
    head, sep, rest = text.partition("from __future__ import annotations\n")
    target.write_text(head + sep + line + "\n" + rest)
    done = _lint(copy)
    assert done.returncode != 0
    assert "BROKEN" in done.stdout
    broken = [ln for ln in done.stdout.splitlines() if ln.rstrip().endswith("BROKEN")]
    assert any(contract in ln for ln in broken), done.stdout


def _cycle(graph: grimp.ImportGraph) -> list[str] | None:
    """A module import cycle in ``graph`` (a list of modules, first == last), or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    for start in sorted(graph.modules):
        if state.get(start):
            continue
        stack: list[tuple[str, list[str]]] = [
            (start, sorted(graph.find_modules_directly_imported_by(start)))
        ]
        path = [start]
        state[start] = 1
        while stack:
            node, todo = stack[-1]
            if not todo:
                stack.pop()
                path.pop()
                state[node] = 2
                continue
            nxt = todo.pop()
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, sorted(graph.find_modules_directly_imported_by(nxt))))
    return None


def test_no_import_cycles() -> None:
    graph = grimp.build_graph("pipeline", cache_dir=None)
    # a package's __init__ importing its own submodules is not a cycle between modules
    for module in list(graph.modules):
        for child in graph.find_children(module):
            if graph.direct_import_exists(importer=module, imported=child):
                graph.remove_import(importer=module, imported=child)
    assert _cycle(graph) is None


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for name in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(name)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.c")
    assert _cycle(graph) is None
    graph.add_import(importer="p.c", imported="p.a")
    assert _cycle(graph) in (["p.a", "p.b", "p.c", "p.a"], ["p.b", "p.c", "p.a", "p.b"])


def _private_imports(path: Path) -> list[str]:
    """``from pipeline.x import _name`` in ``path``: a private name taken from another module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline"):
            found += [
                f"{node.module}.{a.name}"
                for a in node.names
                if a.name.startswith("_") and not a.name.startswith("__")
            ]
    return found


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_no_module_imports_a_private_name_of_another(path: Path) -> None:
    assert _private_imports(path) == []


def test_the_private_name_check_finds_one(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from pipeline.render.text import _secret, load_font\n")
    assert _private_imports(module) == ["pipeline.render.text._secret"]
