"""R26: endpoints and key variables belong to the user; a manifest cannot send a key anywhere.

The "exfiltration host" is a small aiohttp app on loopback that records every request it gets
(with its Authorization header) and answers 500. A manifest someone else wrote points a
provider's ``base_url`` at it and names another key's variable; every command that could send
a request must stop before the first one (exit 2) and say which hosts and variables the
manifest asks for, unless the user confirmed them (``--trust-endpoints``, the same value in
the config file or in ``PIPELINE_<PROVIDER>_BASE_URL``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

VENICE_KEY = "venice-secret-5c1e7a"
RELAY_KEY = "relay-secret-93bd20"


@dataclass
class Collector:
    """The recording host: its base URL and every request as ``(method path, authorization)``."""

    url: str
    hits: list[tuple[str, str]] = field(default_factory=list)


@pytest.fixture
def collector() -> Iterator[Collector]:
    loop = asyncio.new_event_loop()
    found = Collector("")

    async def record(request: web.Request) -> web.Response:
        found.hits.append(
            (f"{request.method} {request.path}", request.headers.get("Authorization", ""))
        )
        return web.json_response({"error": {"message": "nope"}}, status=500)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    found.url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def _manifest(
    path: Path, base_url: str | None = None, key_env: str | None = None, storage: str = ""
) -> Path:
    settings = ", ".join(
        part
        for part in (
            f"base_url: '{base_url}'" if base_url else "",
            f"api_key_env: {key_env}" if key_env else "",
        )
        if part
    )
    provider = f"providers:\n  relaydance: {{{settings}}}\n" if settings else ""
    path.write_text(
        "version: 1\nname: hostile\n"
        "defaults: {provider: relaydance, model: doubao-seedance-2-0-720p, duration: 5}\n"
        + storage
        + provider
        + "scenes:\n  - id: a\n    shots:\n      - {id: s1, prompt: a harbor at dawn}\n"
    )
    return path


def _cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd,
        env={**base, "VENICE_API_KEY": VENICE_KEY, "RELAYDANCE_API_KEY": RELAY_KEY, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_r26_a_manifest_cannot_send_a_key_to_a_host_the_user_did_not_choose(
    tmp_path: Path, collector: Collector
) -> None:
    _manifest(tmp_path / "m.yaml", collector.url, "VENICE_API_KEY")
    host = collector.url.split("/")[2]
    for command in (
        ["run", "m.yaml", "--no-progress"],
        ["run", "m.yaml", "--no-progress", "--wait", "5"],
        ["plan", "m.yaml"],
        ["validate", "m.yaml"],
        ["validate", "m.yaml", "--preflight"],
    ):
        done = _cli(*command, cwd=tmp_path)
        assert done.returncode == 2, (command, done.stderr)
        err = done.stderr
        assert "m.yaml:5: providers.relaydance.base_url: asks to send requests" in err
        assert host in err
        assert (
            "m.yaml:5: providers.relaydance.api_key_env: asks to send the key in $VENICE_API_KEY"
            in err
        )
        assert "--trust-endpoints" in err
        assert "stopped before any request" in err
        assert VENICE_KEY not in done.stdout + err
    assert collector.hits == []
    assert not (tmp_path / "jobs").exists()  # nothing written either


def test_r26_a_secret_that_is_not_an_api_key_cannot_be_named(tmp_path: Path) -> None:
    _manifest(tmp_path / "m.yaml", None, "AWS_SECRET_ACCESS_KEY")
    done = _cli("validate", "m.yaml", "--trust-endpoints", cwd=tmp_path)
    assert done.returncode == 2
    assert "m.yaml:5: providers.relaydance.api_key_env" in done.stderr
    assert "ending in _API_KEY or _TOKEN" in done.stderr


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("http://example.com/v1", False),  # a key over plain http to the internet
        ("file:///etc/passwd", False),
        ("https://example.com/v1", True),
        ("http://gateway.lan:3000/v1", True),
        ("http://10.1.2.3/v1", True),
        ("http://localhost:8080/v1", True),
    ],
)
def test_r26_base_urls_are_https_or_a_private_host(tmp_path: Path, url: str, ok: bool) -> None:
    _manifest(tmp_path / "m.yaml", url)
    done = _cli("validate", "m.yaml", "--trust-endpoints", cwd=tmp_path)
    assert done.returncode == (0 if ok else 2), done.stderr
    if not ok:
        assert "m.yaml:5: providers.relaydance.base_url" in done.stderr


def test_r26_trust_endpoints_obeys_the_manifest(tmp_path: Path, collector: Collector) -> None:
    _manifest(tmp_path / "m.yaml", collector.url, "VENICE_API_KEY")
    done = _cli("run", "m.yaml", "--no-progress", "--trust-endpoints", cwd=tmp_path)
    assert done.returncode == 2  # the host answers 500 to the free preflight call
    assert collector.hits
    assert {auth for _, auth in collector.hits} == {f"Bearer {VENICE_KEY}"}


def test_r26_the_same_values_in_the_config_file_confirm_them(
    tmp_path: Path, collector: Collector
) -> None:
    _manifest(tmp_path / "m.yaml", collector.url + "/", "VENICE_API_KEY")
    config = tmp_path / "pipeline.toml"
    config.write_text(
        f'[providers.relaydance]\nbase_url = "{collector.url}"\napi_key_env = "VENICE_API_KEY"\n'
    )
    done = _cli("run", "m.yaml", "--no-progress", cwd=tmp_path, PIPELINE_CONFIG=str(config))
    assert "asks to send" not in done.stderr
    assert collector.hits
    assert {auth for _, auth in collector.hits} == {f"Bearer {VENICE_KEY}"}


def test_r26_each_request_needs_its_own_confirmation(tmp_path: Path, collector: Collector) -> None:
    _manifest(tmp_path / "m.yaml", collector.url, "VENICE_API_KEY")
    env = {"PIPELINE_RELAYDANCE_BASE_URL": collector.url}
    done = _cli("run", "m.yaml", "--no-progress", cwd=tmp_path, **env)
    assert done.returncode == 2
    assert "providers.relaydance.api_key_env" in done.stderr
    assert "providers.relaydance.base_url" not in done.stderr  # this one was confirmed
    assert collector.hits == []


def test_r26_the_users_endpoint_is_used_when_the_manifest_names_none(
    tmp_path: Path, collector: Collector
) -> None:
    _manifest(tmp_path / "m.yaml")
    done = _cli(
        "run", "m.yaml", "--no-progress", cwd=tmp_path, PIPELINE_RELAYDANCE_BASE_URL=collector.url
    )
    assert done.returncode == 2  # the preflight call got a 500
    assert collector.hits
    assert {auth for _, auth in collector.hits} == {f"Bearer {RELAY_KEY}"}


def test_r26_a_conflict_with_the_users_config_names_both(
    tmp_path: Path, collector: Collector
) -> None:
    _manifest(tmp_path / "m.yaml", collector.url)
    config = tmp_path / "pipeline.toml"
    config.write_text('[providers.relaydance]\nbase_url = "https://relay.example.com"\n')
    done = _cli("validate", "m.yaml", cwd=tmp_path, PIPELINE_CONFIG=str(config))
    assert done.returncode == 2
    assert "your config says https://relay.example.com" in done.stderr
    assert str(config) in done.stderr  # where to put the same value


def test_r26_an_unconfirmed_storage_endpoint_stops_the_run(
    tmp_path: Path, collector: Collector
) -> None:
    storage = f"storage: {{url: 's3://media/x', endpoint_url: '{collector.url}'}}\n"
    _manifest(tmp_path / "m.yaml", storage=storage)
    done = _cli("run", "m.yaml", "--no-progress", cwd=tmp_path)
    assert done.returncode == 2
    assert "m.yaml:4: storage.endpoint_url: asks to send requests" in done.stderr
    assert collector.hits == []
    # A rehearsal uses the simulated store: the manifest's endpoint is neither used nor asked for.
    rehearsal = _cli("run", "m.yaml", "--no-progress", "--simulate", cwd=tmp_path)
    assert rehearsal.returncode == 0, rehearsal.stderr
    assert collector.hits == []
    confirmed = _cli(
        "validate", "m.yaml", cwd=tmp_path, PIPELINE_STORAGE_ENDPOINT_URL=collector.url
    )
    assert confirmed.returncode == 0, confirmed.stderr


def test_r26_a_rehearsal_ignores_provider_endpoints(tmp_path: Path, collector: Collector) -> None:
    _manifest(tmp_path / "m.yaml", collector.url, "VENICE_API_KEY")
    done = _cli("run", "m.yaml", "--no-progress", "--simulate", cwd=tmp_path)
    assert done.returncode == 0, done.stderr  # the simulator stood in; no key of yours was used
    assert collector.hits == []


@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        ("[providers.relaydance\nbase_url = 1\n", ":", "not TOML"),
        ('[providers.nosuch]\nbase_url = "https://a.example"\n', ":1: providers.nosuch", "known:"),
        (
            '\n[providers.relaydance]\napi_key_env = "HOME"\n',
            ":3: providers.relaydance.api_key_env",
            "_TOKEN",
        ),
        (
            '[providers.relaydance]\nbase_url = "http://example.com"\n',
            ":2: providers.relaydance.base_url",
            "https://",
        ),
        ('[storage]\nbucket = "x"\n', ":2: storage.bucket", "Extra inputs"),
    ],
)
def test_r26_a_broken_config_file_is_named_with_its_line(
    tmp_path: Path, text: str, where: str, says: str
) -> None:
    _manifest(tmp_path / "m.yaml")
    config = tmp_path / "pipeline.toml"
    config.write_text(text)
    done = _cli("validate", "m.yaml", cwd=tmp_path, PIPELINE_CONFIG=str(config))
    assert done.returncode == 2
    assert f"{config}{where}" in done.stderr, done.stderr
    assert says in done.stderr


def test_r26_a_missing_named_config_file_is_an_error(tmp_path: Path) -> None:
    _manifest(tmp_path / "m.yaml")
    done = _cli("validate", "m.yaml", cwd=tmp_path, PIPELINE_CONFIG=str(tmp_path / "none.toml"))
    assert done.returncode == 2
    assert "none.toml: no such file" in done.stderr


def test_r26_models_refresh_asks_the_users_endpoint(tmp_path: Path, collector: Collector) -> None:
    env = {"PIPELINE_RELAYDANCE_BASE_URL": collector.url, "XDG_CACHE_HOME": str(tmp_path)}
    done = _cli("models", "relaydance", "--refresh", cwd=tmp_path, **env)
    assert done.returncode == 2  # the collector answers 500
    assert collector.hits == [("GET /v1/models", f"Bearer {RELAY_KEY}")]
    plain = _cli(
        "models", "relaydance", "--refresh", "--base-url", "http://example.com", cwd=tmp_path
    )
    assert plain.returncode == 2
    assert "must be https://" in plain.stderr
    assert len(collector.hits) == 1
