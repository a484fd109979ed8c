"""Preflight through the CLI: no network or no storage credentials stop a run before any money."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

from tests.conftest import S3
from tests.test_cli import cli

ROOT = Path(__file__).resolve().parent.parent
TRUST = "--trust-endpoints"  # the manifests point the providers at loopback fakes


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: nothing listens there


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_API_KEY") and not k.startswith("AWS_")
    }
    return {**env, "AWS_EC2_METADATA_DISABLED": "true", **extra}


def test_an_unreachable_provider_stops_the_run_at_once_with_nothing_paid(tmp_path: Path) -> None:
    port = _dead_port()
    (tmp_path / "m.yaml").write_text(
        "version: 1\nname: offline\n"
        "defaults: {provider: venice, model: wan-2-7-text-to-video, duration: 5}\n"
        f"providers:\n  venice: {{base_url: 'http://127.0.0.1:{port}/api/v1'}}\n"
        "scenes:\n  - id: a\n    shots:\n      - {id: s1, prompt: harbor}\n"
    )
    env = _clean_env(VENICE_API_KEY="sk-canary-0123456789abcdef")
    began = time.monotonic()
    res = cli("run", "m.yaml", "--no-progress", TRUST, cwd=tmp_path, env=env)
    took = time.monotonic() - began
    assert res.returncode == 2, res.stderr
    assert "preflight: 1 problem, not starting" in res.stderr
    assert "venice (unreachable)" in res.stderr
    assert f"127.0.0.1:{port}" in res.stderr
    assert "--wait SECONDS" in res.stderr
    assert "Traceback" not in res.stderr
    assert "sk-canary" not in res.stderr + res.stdout
    assert not (tmp_path / "jobs" / "offline").exists()  # nothing written, nothing half-made
    print(f"unreachable provider: exit 2 after {took:.1f} s")

    waited = cli("run", "m.yaml", "--no-progress", "--wait", "1", TRUST, cwd=tmp_path, env=env)
    assert waited.returncode == 2
    assert "waiting for venice to answer" in waited.stderr


def test_missing_storage_credentials_are_named_by_validate_and_run(tmp_path: Path, s3: S3) -> None:
    shutil.copy(ROOT / "samples" / "media" / "storm.jpg", tmp_path / "storm.jpg")
    shots = "scenes:\n  - id: a\n    shots:\n      - {id: s1, prompt: storm, image: storm.jpg}\n"
    head = "version: 1\nname: nocreds\ndefaults: {provider: seedance2, duration: 5}\n"
    (tmp_path / "m.yaml").write_text(head + s3.storage_yaml() + shots)
    # A real run: the provider answers nowhere, the bucket is on AWS and no credential is set.
    real = f"providers:\n  seedance2: {{base_url: 'http://127.0.0.1:{_dead_port()}'}}\n"
    storage = "storage: {url: 's3://pipeline-nocreds/media', region: us-east-1}\n"
    (tmp_path / "real.yaml").write_text(head + real + storage + shots)
    env = _clean_env()
    assert cli("validate", "m.yaml", TRUST, cwd=tmp_path, env=env).returncode == 0  # offline: fine
    checked = cli("validate", "m.yaml", "--preflight", TRUST, cwd=tmp_path, env=env)
    assert checked.returncode == 2
    keyed = {**env, "SEEDANCE2_API_KEY": "sk-canary-0123456789abcdef"}
    for res in (
        checked,
        cli("run", "real.yaml", "--no-progress", TRUST, cwd=tmp_path, env=keyed),
    ):
        assert res.returncode == 2, res.stderr
        assert "storage (auth)" in res.stderr
        assert "AWS_ACCESS_KEY_ID" in res.stderr
        assert "AWS_SECRET_ACCESS_KEY" in res.stderr
        assert "Traceback" not in res.stderr
        assert "internal error" not in res.stderr.lower()
        assert "169.254" not in res.stderr
        assert "sk-canary" not in res.stderr + res.stdout
    assert not (tmp_path / "jobs" / "nocreds").exists()  # nothing written, nothing paid

    # A rehearsal needs no credentials: the store is simulated, the manifest's is not touched.
    puts = len(s3.requests("PUT"))
    rehearsal = cli("run", "m.yaml", "--simulate", "--no-progress", cwd=tmp_path, env=env)
    assert rehearsal.returncode == 0, rehearsal.stderr
    assert len(s3.requests("PUT")) == puts

    env = {**env, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    good = cli("validate", "m.yaml", "--preflight", TRUST, cwd=tmp_path, env=env)
    assert "storage" not in good.stderr  # only the provider's missing key is left
    assert "SEEDANCE2_API_KEY" in good.stderr
