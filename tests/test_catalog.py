"""Open model catalogs: unknown models warn (``--strict``: error), ``pipeline models`` fetches,
caches and shows each provider's list, and validation uses the cache."""

from __future__ import annotations

import json
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.cli.main import main
from pipeline.manifest.loader import load_manifest
from pipeline.providers import PROVIDERS, catalog

KEY = "sk-test-secret-123456"


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own cache directory: the real home is never touched."""
    root = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(root))
    for name in ("VENICE_API_KEY", "SEEDANCE2_API_KEY", "NEWAPI_API_KEY", "RELAYDANCE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return root / "pipeline" / "models"


def manifest(tmp_path: Path, shot: str) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(f"version: 1\nname: t\nscenes:\n  - id: a\n    shots:\n      - id: s1\n{shot}")
    return path


UNKNOWN = "        prompt: hi\n        provider: venice\n        model: kling-9-text-to-video\n"


def test_unknown_model_is_accepted_with_a_warning_naming_the_skipped_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = manifest(tmp_path, UNKNOWN)
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "ok: 1 shot(s)" in out
    (line,) = err.splitlines()
    assert line.startswith(f"warning: {path}:9: scenes[0].shots[0].model: unknown model ")
    for check in ("durations", "aspect ratios", "resolutions", "first/last-frame", "reference"):
        assert check in line
    loaded = load_manifest(path)
    assert [w.line for w in loaded.warnings] == [9]
    assert loaded.shots[0].model == "kling-9-text-to-video"


def test_unknown_model_warns_once_per_model(tmp_path: Path) -> None:
    two = UNKNOWN + "      - id: s2\n" + UNKNOWN
    assert len(load_manifest(manifest(tmp_path, two)).warnings) == 1


@pytest.mark.parametrize("command", ["validate", "plan", "run"])
def test_strict_makes_an_unknown_model_an_error(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = manifest(tmp_path, UNKNOWN)
    extra = ["--jobs-dir", str(tmp_path / "jobs")] if command != "validate" else []
    assert main([command, "--strict", str(path), *extra]) == 2
    err = capsys.readouterr().err
    assert f"{path}:9: scenes[0].shots[0].model: unknown model 'kling-9-text-to-video'" in err
    assert not (tmp_path / "jobs").exists()


def test_unset_audio_keeps_the_fingerprints_of_earlier_runs(tmp_path: Path) -> None:
    """Unset audio hashes as ``false`` did before it could be unset: upgrading never makes a
    finished shot look edited (and paid for again); ``true`` is a different request."""
    base = "        prompt: hi\n        provider: venice\n"
    unset, false, true = (
        load_manifest(manifest(tmp_path, base + extra)).shots[0]
        for extra in ("", "        audio: false\n", "        audio: true\n")
    )
    assert (unset.audio, false.audio, true.audio) == (None, False, True)
    assert unset.fingerprint == false.fingerprint
    assert true.fingerprint != false.fingerprint


def test_local_renderer_takes_a_shot_without_audio(tmp_path: Path) -> None:
    shot = load_manifest(manifest(tmp_path, "        prompt: hi\n")).shots[0]
    assert (shot.provider, shot.audio) == ("local", None)


# ----- pipeline models ---------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["venice", "seedance2", "newapi", "relaydance"])
def test_refresh_from_the_simulator_writes_the_cache(
    provider: str, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", provider, "--refresh", "--simulate", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["provider"] == provider
    assert doc["fetched_at"].endswith("Z")
    ids = {m["id"] for m in doc["models"]}
    assert set(PROVIDERS[provider].models) <= ids
    path = cache / f"{provider}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    cached = json.loads(path.read_text())
    assert cached["fetched_at"] == doc["fetched_at"]
    # Without --refresh the cache is shown, with its date.
    assert main(["models", provider]) == 0
    assert f"cached list of {doc['fetched_at']}" in capsys.readouterr().out


def test_without_a_cache_the_built_in_table_is_shown(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "relaydance"]) == 0
    out = capsys.readouterr().out
    assert "built-in table" in out
    assert "seedance-1-5-pro-with-audio" in out


def test_validation_uses_cached_constraints_of_a_model_the_table_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "venice", "--refresh", "--simulate"]) == 0
    capsys.readouterr()
    extra = "grok-imagine-video-to-video-private"  # the simulator lists it; the table does not
    assert extra not in PROVIDERS["venice"].models
    shot = f"        prompt: hi\n        provider: venice\n        model: {extra}\n"
    assert (
        main(["validate", "--strict", str(manifest(tmp_path, shot + "        duration: 5\n"))]) == 0
    )
    err = capsys.readouterr().err
    assert "in its model list (cached" in err
    assert "reference counts" in err
    bad = manifest(tmp_path, shot + "        duration: 40\n")
    assert main(["validate", str(bad)]) == 2
    assert f"{bad}:10: scenes[0].shots[0].duration: 40 s is not allowed" in capsys.readouterr().err


# ----- a gateway answering what the test says ------------------------------------------------


@pytest.fixture
def gateway() -> Iterator[tuple[str, list[tuple[int, bytes]], list[str]]]:
    """A loopback server answering each GET with the next queued (status, body)."""
    answers: list[tuple[int, bytes]] = []
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(f"{self.path} {self.headers.get('Authorization')}")
            status, body = answers.pop(0)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", answers, seen
    server.shutdown()
    server.server_close()


def test_a_gateway_listed_model_is_known_with_unknown_capabilities(
    tmp_path: Path,
    gateway: tuple[str, list[tuple[int, bytes]], list[str]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, answers, seen = gateway
    monkeypatch.setenv("RELAYDANCE_API_KEY", KEY)
    listing = {
        "object": "list",
        "data": [{"id": "seedance-nsfw"}, {"id": "seedance-1-5-pro-no-audio"}],
    }
    answers.append((200, json.dumps(listing).encode()))
    assert main(["models", "relaydance", "--refresh", "--base-url", f"{url}/v1"]) == 0
    out = capsys.readouterr().out
    assert seen == [f"/v1/models Bearer {KEY}"]
    assert "NOT listed by the provider" in out  # e.g. doubao-seedance-2-0-720p
    assert KEY not in out
    shot = "        prompt: hi\n        provider: relaydance\n        model: seedance-nsfw\n"
    path = manifest(tmp_path, shot)
    assert main(["validate", "--strict", str(path)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {path}:9: scenes[0].shots[0].model: model 'seedance-nsfw'" in err
    assert "skipped checks: durations, aspect ratios" in err


@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (401, b'{"error": {"message": "invalid token"}}', "HTTP 401: the API key was refused"),
        (500, b"oops", "answered HTTP 500"),
        (200, b"<html>not json</html>", "did not answer JSON"),
        (200, b'{"object": "list"}', "no list of models"),
    ],
)
def test_a_bad_answer_is_one_clear_line_and_exit_2(
    gateway: tuple[str, list[tuple[int, bytes]], list[str]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cache: Path,
    status: int,
    body: bytes,
    words: str,
) -> None:
    url, answers, _ = gateway
    monkeypatch.setenv("NEWAPI_API_KEY", KEY)
    answers.append((status, body))
    assert main(["models", "newapi", "--refresh", "--base-url", url]) == 2
    out, err = capsys.readouterr()
    (line,) = err.splitlines()
    assert line.startswith("error: newapi: "), line
    assert words in line, line
    assert KEY not in out + err
    assert "Traceback" not in err
    assert not (cache / "newapi.json").exists()


def test_network_failure_and_missing_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "newapi", "--refresh"]) == 2
    assert "no default base URL: pass --base-url" in capsys.readouterr().err
    assert main(["models", "relaydance", "--refresh"]) == 2
    assert "no API key: set RELAYDANCE_API_KEY" in capsys.readouterr().err
    monkeypatch.setenv("RELAYDANCE_API_KEY", KEY)
    assert main(["models", "relaydance", "--refresh", "--base-url", "http://127.0.0.1:9/v1"]) == 2
    err = capsys.readouterr().err
    assert "could not fetch http://127.0.0.1:9/v1/models" in err
    assert KEY not in err
    assert main(["models", "local", "--refresh"]) == 2
    assert "no models endpoint" in capsys.readouterr().err
    assert main(["models", "sora9"]) == 2


def test_parsers_are_defensive() -> None:
    venice = catalog.parse_venice(
        {
            "data": [
                {"id": "a", "model_spec": {"constraints": {"durations": ["5s", "auto", 7]}}},
                {"id": "b"},
                {"no": "id"},
                {"id": "c", "model_spec": {"constraints": {"aspect_ratios": [], "audio": "yes"}}},
            ]
        }
    )
    assert venice == {
        "a": {"durations": [5, 7], "max_prompt_chars": 2500},
        "b": None,
        "c": {"aspect_ratios": [], "max_prompt_chars": 2500},
    }
    with pytest.raises(catalog.CatalogError, match="refused: nope"):
        catalog.parse_seedance2({"success": False, "error": {"message": "nope"}})
    assert catalog.parse_seedance2({"success": True, "data": [{"id": "x"}, "y"]}) == {
        "x": None,
        "y": None,
    }
    merged = catalog.merge(PROVIDERS["venice"], venice)
    assert merged["c"].checked == {"aspect_ratios", "prompt"}
    assert merged["c"].caps.aspect_ratios == ()  # empty list: the model takes no ratio


def test_a_corrupt_cache_is_ignored(cache: Path, tmp_path: Path) -> None:
    cache.mkdir(parents=True)
    (cache / "venice.json").write_text("{not json")
    assert catalog.load(PROVIDERS["venice"]).fetched_at is None
    assert load_manifest(manifest(tmp_path, "        prompt: hi\n        provider: venice\n"))


def test_default_cache_dir_is_under_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert catalog.cache_path("venice") == tmp_path / ".cache/pipeline/models/venice.json"
