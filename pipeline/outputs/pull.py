"""``pipeline pull``: a run of the store (PostgreSQL) as a local run directory.

Workers of the distributed mode share no disk: their videos go to the manifest's object storage
and their records to the store. :func:`pull` writes, into ``DEST``:

- ``checkpoint.jsonl``: every record of the run, in the JSONL writer's format (the store's
  ``seq`` kept), so every local command works on the directory (``status``, ``storyboard``,
  ``export``, ``review``, ``pick``); ``run_started`` names the manifest below;
- ``manifest.yaml``: the manifest's text as the run was started from it (its media paths are
  relative to it: put the media beside it for the outputs that show them);
- ``shots/<id>.mp4``: the video of every done shot, downloaded from the object its
  ``fetched`` record names (``url``: ``s3://bucket/prefix/key`` under the manifest's
  ``storage.url``, a name under it, or an ``https://`` URL), checked against the recorded size
  and sha256 (a mismatch is reported and nothing is kept) and renamed into place only when
  whole;
- ``.pull.json``: what was pulled (run, last seq, the number of records, the verified videos).

Pulling again is incremental: a video already verified is not downloaded again, only new or
missing ones are. Verdicts recorded locally since the last pull (``pipeline pick``, ``pipeline
review``: ``take_picked``, ``take_rejected``, ``note_added``, ``reroll_requested``) are first
appended to the store, so they are shared with every other reader, then the checkpoint is
rewritten from the store. A re-roll sent so is a pending take of the store's run: the next
``pipeline run --store`` of the manifest submits it (once: its id and fingerprint are the
ones the manifest's own take would have).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import urllib.request
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import obstore
import yaml
from obstore.exceptions import BaseError as ObstoreError
from pydantic import ValidationError

from pipeline._util.fsutil import fsync_dir
from pipeline.errors import LockedError, UsageError
from pipeline.journal.checkpoint import FILE, LOCK, Record, encode, load
from pipeline.journal.pgconn import check_run_id
from pipeline.journal.pgjournal import PgJournal
from pipeline.journal.state import RunState, folder
from pipeline.models import Event, ShotState
from pipeline.settings import StorageSettings
from pipeline.transfer.storage import ObjectStorage

PULL_FILE = ".pull.json"
MANIFEST_FILE = "manifest.yaml"
#: Local records a pull shares with the store: a reviewer's verdicts.
VERDICTS = frozenset({Event.TAKE_PICKED, Event.TAKE_REJECTED, Event.NOTE_ADDED})
#: Local records a pull sends to the store: the verdicts, and re-rolls (the store's run grows
#: the take; the next ``pipeline run --store`` of the manifest submits it).
SHARED = VERDICTS | {Event.REROLL_REQUESTED}
_CHUNK = 1 << 20
#: Videos downloaded at once by :func:`pull` (the object store, hash and fsync overlap).
PULL_THREADS = 4


@dataclass
class PullResult:
    """What a pull did.

    Attributes:
        run_dir: the local run directory.
        records: records in its checkpoint; new: how many were not there before.
        downloaded: relative paths of the videos downloaded now; kept: videos already verified.
        pushed: local verdicts and re-rolls appended to the store; rerolls: the takes of the
            re-rolls among them.
        problems: ``(path or record, why)`` for every video not pulled and record not pushed.
        state: the run's state, folded while the checkpoint was written.
    """

    run_dir: Path
    records: int = 0
    new: int = 0
    downloaded: list[str] = field(default_factory=list)
    kept: int = 0
    pushed: int = 0
    rerolls: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    state: RunState = field(default_factory=RunState)


def storage_of(manifest_text: str, run_id: str) -> StorageSettings | None:
    """The ``storage`` section of a manifest's text (None when it has none).

    Raises:
        UsageError: the text is not YAML or its ``storage`` is not valid.
    """
    try:
        data = yaml.safe_load(manifest_text)
        section = data.get("storage") if isinstance(data, dict) else None
        return None if section is None else StorageSettings.model_validate(section)
    except (yaml.YAMLError, ValidationError) as exc:
        first = str(exc).splitlines()[0]
        raise UsageError(
            f"run {run_id}: the stored manifest's storage is not usable: {first}"
        ) from None


class _Meta:
    """``.pull.json``: the run, the number of records pulled, the videos verified."""

    def __init__(self, run_dir: Path, run_id: str) -> None:
        self.path = run_dir / PULL_FILE
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            data = None
        except (OSError, ValueError):
            data = []  # not a pull record: refused below
        if data is None and (run_dir / FILE).exists():
            raise UsageError(
                f"{run_dir} holds a run that was not pulled from a store; pull into another "
                "directory (-o DIR)"
            )
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise UsageError(
                f"{self.path} is damaged: what was pulled and what was added here is unknown; "
                "pull into another directory (-o DIR)"
            )
        if data.get("run", run_id) != run_id:
            raise UsageError(f"{run_dir} holds run {data['run']!r}, not {run_id!r}")
        self.lines = int(data.get("lines", 0))
        videos = data.get("videos")
        self.videos: dict[str, str] = dict(videos) if isinstance(videos, dict) else {}
        self.run_id = run_id

    def save(self, seq: int) -> None:
        body = {"run": self.run_id, "seq": seq, "lines": self.lines, "videos": self.videos}
        _write_atomic(self.path, json.dumps(body, indent=1, sort_keys=True).encode())


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _lock(run_dir: Path) -> int:
    """The run directory's lock (the one runners and ``pick`` take), or :class:`LockedError`."""
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LockedError(f"another runner holds {run_dir}; stop it, then pull again") from None
    return fd


def _push(journal: PgJournal, run_id: str, run_dir: Path, meta: _Meta, out: PullResult) -> None:
    """Append the verdicts and re-rolls recorded locally since the last pull to the store."""
    local = load(run_dir / FILE, repair=False).records[meta.lines :]
    if not local:
        return
    known = journal.state(run_id).requests  # a verdict pushed before a crash is not sent twice
    verdicts: list[Record] = []
    for r in local:
        if r.ev not in SHARED:
            out.problems.append((f"{r.ev.value} {r.shot}", "recorded locally; not shared"))
        elif r.data.get("req") is None or r.data.get("req") not in known:
            verdicts.append(r)
    if verdicts:
        journal.import_records(run_id, verdicts)
    out.pushed = len(verdicts)
    out.rerolls = [r.shot for r in verdicts if r.ev == Event.REROLL_REQUESTED and r.shot]


def write_checkpoint(
    journal: PgJournal, run_id: str, run_dir: Path, out: PullResult
) -> tuple[int, dict[str, Mapping[str, Any]]]:
    """Write the run's records as ``run_dir/checkpoint.jsonl`` (atomically, mode 0600).

    ``run_started`` records name ``run_dir/manifest.yaml``; ``out.state`` receives the fold and
    ``out.records`` the count.

    Returns:
        ``(seq of the last record, {shot: data of its last fetched record})``.

    Raises:
        StoreError / StoreDamaged: the store is unreachable or damaged.
        OSError: the file cannot be written.
    """
    manifest = str((run_dir / MANIFEST_FILE).resolve())
    fold = folder(out.state)
    fetched: dict[str, Mapping[str, Any]] = {}
    path = run_dir / FILE
    tmp = path.with_name(f".{FILE}.part")
    last = 0
    with tmp.open("wb") as fh:
        os.chmod(tmp, 0o600)
        for r in journal.records(run_id):
            data = r.data
            if r.ev == Event.RUN_STARTED and "manifest" in data:
                data = {**data, "manifest": manifest}
            if r.ev == Event.FETCHED and r.shot is not None:
                fetched[r.shot] = data
            fold(r.seq, r.ts, r.ev, r.shot, data)
            fh.write(encode(Record(r.seq, r.ts, r.ev, r.shot, data)))
            out.records += 1
            last = r.seq
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(run_dir)
    return last, fetched


def _target(run_dir: Path, rel: object) -> Path | None:
    """``run_dir / rel`` when ``rel`` is a relative path that stays inside ``run_dir``."""
    if not isinstance(rel, str) or not rel or os.path.isabs(rel):
        return None
    target = (run_dir / rel).resolve()
    return target if target.is_relative_to(run_dir.resolve()) else None


def _chunks(obj: str, storage: ObjectStorage | None) -> Iterator[bytes]:
    """The bytes of the object ``obj`` (a store URL or name, or an http(s) URL), in chunks.

    Raises:
        OSError / ObstoreError: the download failed. UsageError: no storage to read it from.
    """
    if obj.startswith(("https://", "http://")):
        with urllib.request.urlopen(obj, timeout=60) as resp:
            while chunk := resp.read(_CHUNK):
                yield chunk
        return
    if storage is None:
        raise UsageError("the stored manifest has no storage section to download from")
    prefix = storage.url.rstrip("/") + "/"
    if "://" in obj and not obj.startswith(prefix):
        raise UsageError(f"{obj.split('?')[0]} is not under the manifest's storage {storage.url}")
    name = obj[len(prefix) :] if obj.startswith(prefix) else obj
    yield from obstore.get(storage.store, name).stream(min_chunk_size=_CHUNK)


def _fetch_video(target: Path, doc: Mapping[str, Any], storage: ObjectStorage | None) -> str | None:
    """Download ``doc``'s object to ``target``, verified; returns None or what went wrong."""
    obj, sha, size = doc.get("url") or doc.get("object"), doc.get("sha256"), doc.get("bytes")
    if not isinstance(obj, str) or not obj:
        return "its fetched record names no object to download (a video of a local run?)"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part")
    digest, got = hashlib.sha256(), 0
    try:
        with tmp.open("wb") as fh:
            for chunk in _chunks(obj, storage):
                digest.update(chunk)
                got += len(chunk)
                if isinstance(size, int) and got > size:
                    break
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
    except (OSError, ObstoreError, UsageError) as exc:
        tmp.unlink(missing_ok=True)
        return f"download failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    if (isinstance(size, int) and got != size) or digest.hexdigest() != sha:
        tmp.unlink(missing_ok=True)
        return (
            f"the object's bytes do not match the record ({got} bytes, sha256 "
            f"{digest.hexdigest()[:12]}...; recorded {size} bytes, {str(sha)[:12]}...): not kept"
        )
    os.replace(tmp, target)
    fsync_dir(target.parent)
    return None


def pull(
    journal: PgJournal, run_id: str, dest: Path, *, storage: StorageSettings | None
) -> PullResult:
    """Pull run ``run_id`` of ``journal``'s store into the run directory ``dest``.

    Args:
        journal: the store.
        run_id: the run.
        dest: the local run directory (created; a directory pulled before is brought up to date).
        storage: where the videos are (the stored manifest's ``storage``, its endpoint as the
            user confirmed it), or None when the manifest has none.

    Returns:
        What was pulled; ``problems`` lists the videos that could not be (the rest is written).

    Raises:
        UsageError: no such run, or ``dest`` holds another run or a local run.
        LockedError: a runner (or ``pipeline review``) holds ``dest``.
        StoreError / StoreDamaged: the store is unreachable or damaged.
        ManifestError: the stored manifest's ``storage.url`` is not usable.
    """
    check_run_id(run_id)
    info = journal.require(run_id)
    dest.mkdir(parents=True, exist_ok=True)
    out = PullResult(dest)
    fd = _lock(dest)
    try:
        meta = _Meta(dest, run_id)
        if (dest / FILE).exists():
            _push(journal, run_id, dest, meta, out)
        previous = meta.lines
        manifest_path = dest / MANIFEST_FILE
        text = info.manifest_text.encode()
        if not manifest_path.is_file() or manifest_path.read_bytes() != text:
            _write_atomic(manifest_path, text)
        last, fetched = write_checkpoint(journal, run_id, dest, out)
        out.new = max(0, out.records - previous)
        meta.lines = out.records
        meta.save(last)  # the checkpoint is the store's now, whatever the videos do below
        store = ObjectStorage(storage, file=f"run {run_id}") if storage is not None else None
        wanted: list[tuple[str, Path, Mapping[str, Any]]] = []
        for shot, rec in out.state.shots.items():
            doc = fetched.get(shot)
            if rec.state != ShotState.DONE or doc is None:
                continue
            rel = doc.get("path")
            target = _target(dest, rel)
            if target is None:
                out.problems.append((str(rel), "not a path inside the run directory"))
                continue
            sha, size = doc.get("sha256"), doc.get("bytes")
            if (
                meta.videos.get(str(rel)) == sha
                and target.is_file()
                and target.stat().st_size == size
            ):
                out.kept += 1
                continue
            wanted.append((str(rel), target, doc))
        with ThreadPoolExecutor(PULL_THREADS, thread_name_prefix="pull") as pool:
            whys = pool.map(lambda w: _fetch_video(w[1], w[2], store), wanted)
            for (rel, _, doc), why in zip(wanted, whys, strict=True):
                if why is not None:
                    out.problems.append((rel, why))
                    continue
                meta.videos[rel] = str(doc.get("sha256"))
                out.downloaded.append(rel)
        meta.save(last)
    finally:
        os.close(fd)
    return out
