"""``pipeline pull RUN --store URL``: a run of the store as a local run directory.

The store's run is a real local run's records (``pg_database``) whose ``fetched`` records name
objects put in a real S3 API (moto's server, the ``s3`` fixture) holding the run's videos, as
the distributed mode's workers leave them. Checked: the pulled directory is a run directory
every local command works on (``status`` equal to the store's, ``storyboard``, ``pick``); each
video matches its recorded sha256; pulling again downloads only what is missing; bytes that do
not match are refused and not kept; verdicts given locally reach the store on the next pull.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from pipeline.cli.main import main
from pipeline.journal.checkpoint import FILE, load
from pipeline.journal.lines import Record
from pipeline.journal.pgjournal import PgJournal
from pipeline.models import Event
from tests.conftest import S3
from tests.local_runs import Run, finished_run, two_shot_manifest

MANIFEST = two_shot_manifest("dock")
RUN = "dock-7f3a"


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return finished_run(tmp_path_factory.mktemp("pull"), MANIFEST, "dock")


@dataclass
class Stored:
    dsn: str
    s3: S3
    local: Run
    videos: dict[str, str]  # relative path -> sha256
    keys: dict[str, str]  # relative path -> object key

    def put(self, rel: str, data: bytes) -> None:
        client = boto3.client("s3", endpoint_url=self.s3.endpoint, region_name="us-east-1")
        client.put_object(Bucket=self.s3.bucket, Key=self.keys[rel], Body=data)

    def pull_argv(self, dest: Path) -> tuple[str, ...]:
        """``pipeline pull`` of the run into ``dest``, the manifest's endpoint trusted."""
        return ("pull", RUN, "--store", self.dsn, "-o", str(dest), "--trust-endpoints")

    def with_media(self, dest: Path) -> Path:
        """``dest``, made, with the manifest's first frame ``pier.png`` put beside it."""
        dest.mkdir(exist_ok=True)
        frame = self.local.run_dir.parent.parent / "pier.png"
        (dest / "pier.png").write_bytes(frame.read_bytes())
        return dest


@pytest.fixture
def stored(pg_database: str, s3: S3, local_run: Run) -> Stored:
    """The local run as a worker leaves it: records in the store, videos in the bucket."""
    text = MANIFEST + s3.storage_yaml("media")
    videos, keys, records = {}, {}, []
    for r in load(local_run.run_dir / FILE, repair=False).records:
        if r.ev == Event.FETCHED:
            rel = str(r.data["path"])
            keys[rel] = f"media/runs/{RUN}/{rel}"
            videos[rel] = str(r.data["sha256"])
            obj = f"s3://{s3.bucket}/{keys[rel]}"
            r = Record(r.seq, r.ts, r.ev, r.shot, {**r.data, "url": obj})
        records.append(r)
    with PgJournal(pg_database) as j:
        j.ensure_schema()
        j.create_run(RUN, manifest_name="dock", manifest_text=text, budget_usd=None)
        j.import_records(RUN, records)
    found = Stored(pg_database, s3, local_run, videos, keys)
    for rel in videos:
        found.put(rel, (local_run.run_dir / rel).read_bytes())
    return found


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_pulled_run_is_a_run_directory_every_local_command_works_on(
    stored: Stored, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "pulled"
    code, out, err = cli(capsys, *stored.pull_argv(dest))
    # The manifest's first frame (pier.png) is not in the store: the outputs wait for it.
    assert code == 1
    assert "3 video(s) downloaded, 0 already here" in out
    assert "outputs not built" in err
    assert "pier.png" in err
    assert len(stored.videos) == 3
    for rel, digest in stored.videos.items():
        assert sha(dest / rel) == digest
    assert (dest / "manifest.yaml").read_text() == MANIFEST + stored.s3.storage_yaml("media")
    assert not list(dest.rglob("*.part"))

    _, remote, _ = cli(capsys, "status", "--store", stored.dsn, RUN, "--json")
    code, local, _ = cli(capsys, "status", str(dest), "--json")
    assert code == 0
    want = json.loads(remote)
    for key in ("store", "queues", "run"):
        want.pop(key)
    got = json.loads(local)
    got.pop("run")
    assert got == want

    stored.with_media(dest)
    code, out, _ = cli(capsys, "storyboard", str(dest))
    assert code == 0
    assert "storyboard.html" in out
    assert (dest / "storyboard.html").is_file()
    assert (dest / "animatic.mp4").is_file()


def test_pulling_again_downloads_only_what_is_missing(
    stored: Stored, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = stored.with_media(tmp_path / "pulled")
    argv = stored.pull_argv(dest)
    code, out, _ = cli(capsys, *argv)
    assert code == 0
    assert "3 video(s) downloaded" in out
    gets = len(stored.s3.requests("GET"))
    code, out, _ = cli(capsys, *argv)
    assert code == 0
    assert "(0 new), 0 video(s) downloaded, 3 already here" in out
    assert len(stored.s3.requests("GET")) == gets  # nothing fetched from the bucket
    gone = sorted(stored.videos)[0]
    (dest / gone).unlink()
    code, out, _ = cli(capsys, *argv)
    assert code == 0
    assert "1 video(s) downloaded, 2 already here" in out
    fetched = stored.s3.requests("GET")[gets:]
    assert [u.rsplit("/", 1)[1] for u in fetched] == [gone.rsplit("/", 1)[1]]
    assert sha(dest / gone) == stored.videos[gone]


def test_bytes_that_do_not_match_the_record_are_refused_and_not_kept(
    stored: Stored, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = sorted(stored.videos)[1]
    stored.put(bad, b"\x00\x00\x00\x18ftypmp42" + b"not the provider's bytes" * 100)
    dest = tmp_path / "pulled"
    code, out, err = cli(capsys, *stored.pull_argv(dest))
    assert code == 1
    assert "2 video(s) downloaded" in out
    assert f"{bad}: the object's bytes do not match the record" in err
    assert not (dest / bad).exists()
    assert not list(dest.rglob("*.part"))


def test_the_manifests_storage_endpoint_must_be_yours_or_trusted(
    stored: Stored,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dest = tmp_path / "pulled"
    code, _, err = cli(capsys, "pull", RUN, "--store", stored.dsn, "-o", str(dest))
    assert code == 2
    assert f"asks for the object storage endpoint {stored.s3.endpoint}" in err
    assert not (dest / FILE).exists()
    monkeypatch.setenv("PIPELINE_STORAGE_ENDPOINT_URL", stored.s3.endpoint)
    monkeypatch.setenv("PIPELINE_STORE", stored.dsn)
    code, out, _ = cli(capsys, "pull", RUN, "-o", str(dest))
    assert "3 video(s) downloaded" in out


def test_a_directory_of_another_run_or_a_local_run_is_refused(
    stored: Stored, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, "pull", RUN, "--store", stored.dsn, "-o",
                       str(stored.local.run_dir), "--trust-endpoints")  # fmt: skip
    assert code == 2
    assert "holds a run that was not pulled from a store" in err
    dest = tmp_path / "pulled"
    argv = stored.pull_argv(dest)
    cli(capsys, *argv)
    (dest / ".pull.json").write_text("{not json")
    code, _, err = cli(capsys, *argv)
    assert code == 2
    assert ".pull.json is damaged" in err


def test_verdicts_given_on_a_pulled_run_reach_the_store_on_the_next_pull(
    stored: Stored, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = stored.with_media(tmp_path / "pulled")
    argv = stored.pull_argv(dest)
    assert cli(capsys, *argv)[0] == 0
    code, out, _ = cli(capsys, "pick", str(dest), "one-b", "2")
    assert code == 0
    assert "one-b: take 2 chosen" in out
    code, out, _ = cli(capsys, *argv)
    assert code == 0
    assert "1 local verdict(s) sent to the store" in out
    _, remote, _ = cli(capsys, "status", "--store", stored.dsn, RUN, "--json")
    assert json.loads(remote)["picks"] == {"one-b": 2}
    code, out, _ = cli(capsys, *argv)  # sent once only
    assert "sent to the store" not in out
    with PgJournal(stored.dsn) as j:
        picks = [r for r in j.records(RUN) if r.ev == Event.TAKE_PICKED]
    assert len(picks) == 1


def test_storyboard_and_export_with_a_store_pull_first(
    stored: Stored, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = stored.with_media(tmp_path / "board")
    store = ("--store", stored.dsn, "--into", str(dest), "--trust-endpoints")
    code, out, _ = cli(capsys, "storyboard", RUN, *store)
    assert code == 0
    assert "3 video(s) downloaded" in out
    assert (dest / "storyboard.html").is_file()
    edl = tmp_path / "cut.edl"
    code, out, _ = cli(capsys, "export", RUN, *store, "--format", "edl", "-o", str(edl))
    assert code == 0
    assert "0 video(s) downloaded, 3 already here" in out
    assert f"written: {edl}" in out
    assert "TITLE:" in edl.read_text()
