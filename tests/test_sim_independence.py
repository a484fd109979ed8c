"""The simulators must not share the adapters' tables: no module under pipeline/sim/ imports
``pipeline.providers`` (a simulator built from the adapter's own facts cannot catch its bugs)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SIM_DIR = Path(__file__).resolve().parent.parent / "pipeline" / "sim"
FORBIDDEN = "pipeline.providers"


def _is_forbidden(name: str) -> bool:
    return name == FORBIDDEN or name.startswith(FORBIDDEN + ".")


def _resolve(module: str | None, level: int, path: Path) -> str:
    """The absolute module name of a ``from <module> import ...`` in ``path``."""
    if level == 0:
        return module or ""
    package = ["pipeline", *path.relative_to(SIM_DIR.parent).parent.parts]
    base = package[: len(package) - (level - 1)]
    return ".".join([*base, *([module] if module else [])])


def provider_imports(source: str, path: Path) -> list[str]:
    """Every import in ``source`` (the module at ``path``) that reaches ``pipeline.providers``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if _is_forbidden(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(node.module, node.level, path)
            if _is_forbidden(module):
                found.append(module)
            found += [
                f"{module}.{alias.name}"
                for alias in node.names
                if _is_forbidden(f"{module}.{alias.name}")
            ]
    return found


def test_sim_modules_exist() -> None:
    names = {p.name for p in SIM_DIR.iterdir() if (p / "app.py").is_file()}
    assert {"venice", "seedance2", "newapi", "relaydance"} <= names


@pytest.mark.parametrize("path", sorted(SIM_DIR.rglob("*.py")), ids=lambda p: p.name)
def test_no_sim_module_imports_the_adapters(path: Path) -> None:
    assert provider_imports(path.read_text(encoding="utf-8"), path) == []


@pytest.mark.parametrize(
    "source",
    [
        "from pipeline.providers.venice.codec import VENICE_MODELS",
        "import pipeline.providers.newapi.codec",
        "import pipeline.providers as p",
        "from pipeline import providers",
        "from pipeline.providers import venice_models",
        "from ..providers import seedance2_codec",
        "from .. import providers",
        "def f():\n    from pipeline.providers.relaydance.adapter import SPEC\n",
    ],
)
def test_the_check_catches_every_import_form(source: str) -> None:
    assert provider_imports(source, SIM_DIR / "venice.py") != []


@pytest.mark.parametrize(
    "source",
    [
        "from pipeline.sim.common import serve",
        "from pipeline import sim",
        "from . import common",
        "import pipeline.providers_docs",
        "from pipeline.manifest.media import sniff",
    ],
)
def test_the_check_allows_other_imports(source: str) -> None:
    assert provider_imports(source, SIM_DIR / "venice.py") == []
