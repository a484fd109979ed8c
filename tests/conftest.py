"""Shared fixtures: asyncio only (aiohttp does not run on trio), retries without sleeping, and a
real S3 API on loopback (moto's server mode) for the upload stage."""

from __future__ import annotations

import json
import logging
import os
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import stamina

from tests.pgserver import pg_database, pg_server  # noqa: F401  (fixtures of the distributed mode)

#: Tests that take long whatever the machine (tens of seconds of waits on purpose) start first,
#: so that under ``-n 4`` none of them begins at the end of the run and leaves three workers idle.
LONG_MODULES = ("test_distributed_", "reliability/test_crash.py", "test_benchmarks_http.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the tests: ``slow`` ones first, then the long modules, then the rest as collected.

    A stable sort: within each group the collected order stays (every xdist worker computes
    the same order, as it must).
    """

    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("slow") is not None:
            return 0
        return 1 if any(part in item.nodeid for part in LONG_MODULES) else 2

    items.sort(key=rank)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True, scope="session")
def _no_user_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The developer's own ``~/.config/pipeline`` and ``PIPELINE_*`` never reach a test."""
    saved = dict(os.environ)
    for name in [n for n in os.environ if n.startswith("PIPELINE_")]:
        del os.environ[name]
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("config"))
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test has its own ``$XDG_CACHE_HOME``: the completion times the poll schedule learns
    from (``~/.cache/pipeline``) never carry from one test, or the developer, to another."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(autouse=True)
def _fast_retries() -> Iterator[None]:
    """Retries keep their attempt counts (capped at 5) but skip the backoff sleeps."""
    with stamina.set_testing(True, attempts=5, cap=True):
        yield


@dataclass
class S3:
    """One fresh bucket on the session's moto server, with a server-side request log."""

    endpoint: str
    bucket: str

    def storage_yaml(self, prefix: str = "media") -> str:
        return (
            f"storage: {{url: 's3://{self.bucket}/{prefix}', endpoint_url: '{self.endpoint}', "
            "region: us-east-1, presign_ttl: 2h}\n"
        )

    def _api(self, path: str, method: str = "GET") -> bytes:
        req = urllib.request.Request(f"{self.endpoint}/moto-api/recorder/{path}", method=method)
        with urllib.request.urlopen(req, timeout=10) as resp:
            body: bytes = resp.read()
            return body

    def requests(self, method: str) -> list[str]:
        """URLs of every ``method`` request the server received for this bucket."""
        out = []
        text = self._api("download-recording").decode()
        decoder = json.JSONDecoder()
        pos = 0
        while pos < len(text):  # moto's threads may write two records on one line
            if text[pos].isspace():
                pos += 1
                continue
            entry, pos = decoder.raw_decode(text, pos)
            url = str(entry.get("url", ""))
            if entry.get("method") == method and f"/{self.bucket}/" in url:
                out.append(url.split("?")[0])
        return out

    def keys(self) -> list[str]:
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")
        listing = client.list_objects_v2(Bucket=self.bucket)
        return sorted(obj["Key"] for obj in listing.get("Contents", []))


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    os.environ["MOTO_RECORDER_FILEPATH"] = str(tmp_path_factory.mktemp("moto") / "recording")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    urllib.request.urlopen(
        urllib.request.Request(f"{endpoint}/moto-api/recorder/start-recording", method="POST"),
        timeout=10,
    ).close()
    yield endpoint
    server.stop()


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3:
    import boto3

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    bucket = f"pipeline-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(
        Bucket=bucket
    )
    return S3(endpoint=moto_endpoint, bucket=bucket)


def tiny_png(
    path: Path, size: tuple[int, int] = (64, 36), color: tuple[int, int, int] = (200, 40, 40)
) -> Path:
    from PIL import Image

    Image.new("RGB", size, color).save(path)
    return path
