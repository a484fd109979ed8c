"""``status`` and ``validate`` start fast: they do not import what only other commands need.

Each command runs in a fresh interpreter; what matters is the set of modules it imported
(``sys.modules`` afterwards), not a timing: PyAV and Pillow (the renderer and the outputs), the
simulators (aiohttp's server side), the engine and, for ``status``, the manifest loader.
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import anyio
import pytest

import pipeline
from pipeline.cli import main as cli_main
from pipeline.engine import options
from pipeline.providers import KEY_VARIABLES, PROVIDERS

ROOT = Path(__file__).resolve().parent.parent

#: Runs the CLI in-process, then prints the modules it imported as the last line of stdout.
COMMAND = (
    "import json, sys\n"
    "from pipeline.cli.main import main\n"
    "code = main(sys.argv[1:])\n"
    "print(); print(json.dumps({'code': code, 'modules': sorted(sys.modules)}))\n"
)

#: What no ``status`` or ``validate`` needs: renderer, outputs and sims, and the engine.
HEAVY = (
    "av",
    "PIL",
    "pipeline.render",
    "pipeline.sim",
    "pipeline.engine",
    "pipeline.outputs.write",
)


def _imported(*args: str, cwd: Path = ROOT) -> tuple[int, set[str]]:
    """(exit code, modules imported) of ``pipeline ARGS`` run in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", COMMAND, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.stdout.strip(), done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["code"], set(result["modules"])


def _loaded(modules: set[str], *names: str) -> list[str]:
    """The modules of ``modules`` that are one of ``names`` or inside one of them."""
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def _manifest(tmp_path: Path, image: bool = False) -> Path:
    """A one-shot manifest for the offline ``local`` provider (with an image or none)."""
    frame = ""
    if image:
        frame = f"        image: {ROOT / 'samples' / 'media' / 'pier-dawn.jpg'}\n"
    path = tmp_path / "m.yaml"
    path.write_text(
        "version: 1\nname: imports\n"
        "defaults: {provider: local, duration: 1, aspect_ratio: '16:9'}\n"
        "providers:\n  local: {latency_s: 0}\n"
        "scenes:\n  - id: a\n    shots:\n      - id: s1\n        prompt: harbor at dawn\n" + frame
    )
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-shot run of the ``local`` provider (no outputs)."""
    tmp = tmp_path_factory.mktemp("run")
    manifest = pipeline.load_manifest(_manifest(tmp))
    result = anyio.run(partial(pipeline.run, manifest, tmp / "run", outputs=False))
    assert result.exit_code == 0
    return tmp / "run"


@pytest.mark.parametrize("flag", [[], ["--json"]])
def test_status_reads_the_journal_and_nothing_else(run_dir: Path, flag: list[str]) -> None:
    code, modules = _imported("status", str(run_dir), *flag)
    assert code == 0
    assert "pipeline.journal.snapshot" in modules  # it did read the run
    heavy = (*HEAVY, "aiohttp", "pipeline.manifest", "pipeline.providers.local")
    assert _loaded(modules, *heavy) == []


def test_validate_loads_the_manifest_checks_only(tmp_path: Path) -> None:
    code, modules = _imported("validate", str(_manifest(tmp_path)))
    assert code == 0
    assert "pipeline.manifest.loader" in modules
    assert _loaded(modules, *HEAVY, "pipeline.cli.commands") == []


def test_validate_of_an_image_loads_pillow_but_no_video_library(tmp_path: Path) -> None:
    code, modules = _imported("validate", str(_manifest(tmp_path, image=True)))
    assert code == 0
    assert "PIL.Image" in modules  # the image's size is checked
    assert _loaded(modules, *(n for n in HEAVY if n != "PIL")) == []


def test_validate_of_every_http_provider_loads_no_http_client(tmp_path: Path) -> None:
    # Each provider's offline facts (models, defaults, checks) are its ``spec`` module; the
    # adapter (aiohttp, about 0.3 s of start-up) is imported only when a run builds it.
    path = tmp_path / "http.yaml"
    shots = "".join(
        f"      - {{id: {name}, prompt: harbor at dawn, provider: {name}, duration: 5}}\n"
        for name in ("venice", "seedance2", "newapi", "relaydance")
    )
    path.write_text(
        "version: 1\nname: imports-http\n"
        "providers:\n  newapi: {base_url: 'https://gateway.example.com'}\n"
        "scenes:\n  - id: a\n    shots:\n" + shots
    )
    code, modules = _imported("validate", str(path), "--trust-endpoints")
    assert code == 0
    assert {f"pipeline.providers.{n}.spec" for n in ("venice", "newapi")} <= modules
    adapters = [
        m for m in modules if m.startswith("pipeline.providers.") and m.endswith(".adapter")
    ]
    assert adapters == []
    assert _loaded(modules, *HEAVY, "aiohttp", "pipeline.providers.http") == []


def test_the_registry_lists_providers_without_loading_adapters() -> None:
    code = (
        "import sys\n"
        "from pipeline.providers import KEY_VARIABLES, PROVIDERS\n"
        "assert 'local' in PROVIDERS and 'nope' not in PROVIDERS and len(PROVIDERS) == 5\n"
        "names = list(PROVIDERS)\n"
        "print(sorted(m for m in sys.modules if m.startswith('pipeline.providers.')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout.strip() == "[]"


def test_the_key_variables_are_the_adapters_defaults() -> None:
    assert list(KEY_VARIABLES) == list(PROVIDERS)
    for name, spec in PROVIDERS.items():
        assert spec.name == name
        assert KEY_VARIABLES[name] == spec.defaults.api_key_env, name
    assert PROVIDERS.get("nope") is None
    with pytest.raises(KeyError):
        PROVIDERS["nope"]


def test_the_cli_exit_codes_are_the_engines() -> None:
    names = ("EXIT_OK", "EXIT_ATTENTION", "EXIT_INPUT", "EXIT_CHECKPOINT", "EXIT_LOCKED")
    for name in (*names, "EXIT_INTERRUPTED"):
        assert getattr(cli_main, name) == getattr(options, name), name


def test_a_run_reaches_its_first_submit_without_outputs_simulators_or_retries() -> None:
    # `pipeline run`'s start-up is importing pipeline.cli.commands: the video library, the
    # outputs (templates, timeline), the simulators and the retry library come later, when a
    # video is checked, the outputs are written, --simulate is asked or a call first fails.
    code = "import json, sys, pipeline.cli.commands; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    modules = set(json.loads(done.stdout))
    assert "pipeline.engine.runner" in modules  # it did load the engine
    later = ("av", "PIL", "jinja2", "opentimelineio", "stamina", "pipeline.sim", "pipeline.render")
    assert _loaded(modules, *later, "pipeline.outputs.write") == []
