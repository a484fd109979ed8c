"""The outputs' cache: rebuilding a run's outputs costs time in proportion to what changed.

Everything slow to make from a video (its poster, its contact-sheet tile, its animatic segment)
is kept under ``RUN_DIR/.cache/outputs/`` by a **key**: a hash of the video's content (the sha256
the checkpoint verified when it was fetched) and of every parameter that changes the product
(size, frame rate, slate text, this module's :data:`VERSION`, the PyAV and Pillow versions)::

    RUN_DIR/.cache/outputs/index.json                what the outputs were last built from
    RUN_DIR/.cache/outputs/<kind>/<key>-<tag>.<ext>  one entry (kind: poster, tile, segment)

Nothing in the cache is trusted blindly:

- an entry's ``tag`` is the sha256 of its key and its bytes, checked on every read: a damaged
  entry, or one renamed or copied in from elsewhere, is deleted and built again;
- a video's identity is the checkpoint's sha256 only for a file of the recorded size not seen
  before (or fetched again since); a file whose size or mtime changed since the index last saw it
  is hashed again;
- the index (``index.json``) says which key each output (``animatic.mp4``, ``contact-sheet.png``,
  ``posters/<id>.jpg``) was built from and the size and mtime it had then; an output is skipped
  only if both still match. A damaged or foreign index is ignored (everything is checked again).

Entries are written to a temporary file and renamed (not fsynced: a cache entry lost in a crash
is only built again). The cache can be deleted at any time. Synchronous: call from a worker
thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import PIL

from pipeline.journal.state import ShotRecord

log = logging.getLogger("pipeline")

#: Directory of the outputs' cache inside a run directory.
CACHE = Path(".cache") / "outputs"
#: Bump when what is drawn or encoded changes: every key changes with it.
VERSION = 1
_INDEX = "index.json"
_READ = 1 << 20
_STALE_S = 600.0


@dataclass
class CacheStats:
    """What one rebuild did, by kind (``poster``, ``tile``, ``segment``, and the outputs).

    Attributes:
        made: entries built (cache misses: a decode and an encode each).
        reused: entries read from the cache.
        copied: videos used as they are, with no entry (a previs clip already in the animatic's
            format is joined into it by stream copy).
        rejected: entries found damaged or foreign (deleted, then built again).
        kept: outputs already up to date (not written at all).
        written: outputs written.
    """

    made: Counter[str] = field(default_factory=Counter)
    reused: Counter[str] = field(default_factory=Counter)
    copied: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    kept: Counter[str] = field(default_factory=Counter)
    written: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, dict[str, int]]:
        """The counts as plain dicts: ``{"made": {kind: n}, "reused": ..., "written": ...}``."""
        return {
            name: dict(sorted(getattr(self, name).items()))
            for name in ("made", "reused", "copied", "rejected", "kept", "written")
        }

    def summary(self) -> str:
        """One line for the log, e.g. ``made segment 2; reused segment 58; kept sheet 1``."""
        parts = []
        for name, counts in self.as_dict().items():
            if counts:
                parts.append(f"{name} " + ", ".join(f"{k} {n}" for k, n in counts.items()))
        return "; ".join(parts) or "nothing to do"


def entry_key(product: str, /, **params: Any) -> str:
    """The key of a product (``"poster"``, ``"segment"``...): 40 hex digits.

    A hash of its name, its ``params`` (JSON-able values) and the code's versions
    (:data:`VERSION`, PyAV, Pillow).
    """
    doc = {"product": product, "v": VERSION, "av": av.__version__, "pil": PIL.__version__}
    text = json.dumps([doc, params], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def _tag(key: str, data: bytes) -> str:
    digest = hashlib.sha256(key.encode())
    digest.update(b"\0")
    digest.update(data)
    return digest.hexdigest()[:32]


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (hex). Raises OSError when it cannot be read."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_READ):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomic(dest: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``dest`` through a temporary file and a rename (no fsync)."""
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(name, mode)
        os.replace(name, dest)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


class OutputCache:
    """The cache of one run directory's outputs (see the module docstring).

    Use one per rebuild: look entries up with :meth:`read` / :meth:`path`, add them with
    :meth:`store`, skip outputs with :meth:`current` and :meth:`record`, then :meth:`save`.
    ``stats`` counts what was made, reused, kept and written.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.root = run_dir / CACHE
        self.stats = CacheStats()
        self._listing: dict[str, dict[str, list[str]]] = {}
        self._videos: dict[str, list[Any]] = {}
        self._outputs: dict[str, list[Any]] = {}
        self._dirty = False
        self._load_index()

    # ----- the index ---------------------------------------------------------------------

    def _load_index(self) -> None:
        try:
            doc = json.loads((self.root / _INDEX).read_text())
        except (OSError, ValueError):
            return
        if not isinstance(doc, dict) or doc.get("version") != VERSION:
            return
        for name, target, width in (("videos", self._videos, 4), ("outputs", self._outputs, 3)):
            table = doc.get(name)
            if not isinstance(table, dict):
                continue
            for path, row in table.items():
                if isinstance(row, list) and len(row) == width:
                    target[str(path)] = row

    def save(self) -> None:
        """Write the index if this rebuild changed it. Never raises: the index is only a hint."""
        if not self._dirty:
            return
        doc = {"version": VERSION, "videos": self._videos, "outputs": self._outputs}
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            write_atomic(self.root / _INDEX, json.dumps(doc, sort_keys=True).encode(), 0o600)
            self._dirty = False
        except OSError as exc:
            log.warning("could not write the outputs' cache index: %s", exc)

    # ----- videos --------------------------------------------------------------------------

    def video_id(self, rec: ShotRecord) -> str | None:
        """The content identity (``sha256:<hex>``) of a done shot's video, or None if it is gone.

        The checkpoint's sha256 while the file has the recorded size and has not changed since
        the index saw it; otherwise the file is hashed (and the index remembers it).

        Raises:
            OSError: the video exists but cannot be read.
        """
        if not rec.output:
            return None
        path = self.run_dir / rec.output
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        seen = self._videos.get(rec.output)
        if seen is not None and seen[:2] == [st.st_size, st.st_mtime_ns]:
            return f"sha256:{seen[2]}"
        # The log's sha256 is only taken for a file never seen, or fetched again since (the log
        # names another video than when it was last seen): anything else changed the file.
        fetched = seen is None or seen[3] != rec.sha256
        trusted = rec.sha256 if rec.size == st.st_size and fetched else None
        sha = trusted or file_sha256(path)  # the log's: verified when it was fetched
        self._videos[rec.output] = [st.st_size, st.st_mtime_ns, sha, rec.sha256]
        self._dirty = True
        return f"sha256:{sha}"

    # ----- entries -------------------------------------------------------------------------

    def _names(self, kind: str) -> dict[str, list[str]]:
        listing = self._listing.get(kind)
        if listing is None:
            listing = {}
            try:
                with os.scandir(self.root / kind) as entries:
                    for entry in entries:
                        key, dash, _ = entry.name.partition("-")
                        if entry.name.startswith("."):
                            _sweep(entry)
                        elif dash:
                            listing.setdefault(key, []).append(entry.name)
            except (FileNotFoundError, NotADirectoryError):
                pass
            self._listing[kind] = listing
        return listing

    def read(self, kind: str, key: str, *, count: bool = True) -> bytes | None:
        """The bytes of the entry ``key`` of ``kind``, verified; None (a miss) otherwise.

        An entry whose bytes do not match its tag is deleted and counted as ``rejected``.
        ``count=False``: not counted as ``reused`` (a remembered answer, not a product).
        """
        found = self._verified(kind, key, count)
        return found[1] if found is not None else None

    def path(self, kind: str, key: str) -> Path | None:
        """Like :meth:`read`, but the verified entry's path (for files read by PyAV)."""
        found = self._verified(kind, key, True)
        return found[0] if found is not None else None

    def _verified(self, kind: str, key: str, count: bool) -> tuple[Path, bytes] | None:
        names = self._names(kind).get(key, [])
        for name in list(names):
            path = self.root / kind / name
            try:
                data = path.read_bytes()
            except OSError:
                names.remove(name)
                continue
            tag = name.partition("-")[2].partition(".")[0]
            if tag == _tag(key, data):
                if count:
                    self.stats.reused[kind] += 1
                return path, data
            log.info("outputs cache: %s/%s is damaged or foreign; building it again", kind, name)
            self.stats.rejected[kind] += 1
            names.remove(name)
            path.unlink(missing_ok=True)
        return None

    def store(self, kind: str, key: str, suffix: str, data: bytes, *, count: bool = True) -> Path:
        """Add ``data`` as the entry ``key`` of ``kind`` (``suffix`` like ``.png``); its path.

        ``count=False``: not counted as ``made`` (a remembered answer, not a product).

        Raises:
            OSError: the cache directory cannot be written.
        """
        folder = self.root / kind
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{key}-{_tag(key, data)}{suffix}"
        write_atomic(folder / name, data, 0o600)
        self._names(kind).setdefault(key, []).insert(0, name)
        if count:
            self.stats.made[kind] += 1
        return folder / name

    def store_file(self, kind: str, key: str, suffix: str, src: Path) -> Path:
        """Add the file ``src`` (in the cache's ``kind`` folder) as the entry ``key``; its path.

        ``src`` is hashed and renamed, not copied.

        Raises:
            OSError: ``src`` cannot be read or renamed.
        """
        name = f"{key}-{_tag(key, src.read_bytes())}{suffix}"
        src.chmod(0o600)
        os.replace(src, self.root / kind / name)
        self._names(kind).setdefault(key, []).insert(0, name)
        self.stats.made[kind] += 1
        return self.root / kind / name

    def evict(self, kind: str, key: str) -> None:
        """Delete every entry of ``key`` (an entry that read well but proved unusable)."""
        for name in self._names(kind).pop(key, []):
            (self.root / kind / name).unlink(missing_ok=True)
        self.stats.rejected[kind] += 1

    # ----- outputs -------------------------------------------------------------------------

    def current(self, output: Path, key: str) -> bool:
        """True when ``output`` was built from ``key`` and is as it was then (size, mtime)."""
        row = self._outputs.get(self._rel(output))
        if row is None or row[0] != key:
            return False
        try:
            st = output.stat()
        except OSError:
            return False
        return bool(row[1:] == [st.st_size, st.st_mtime_ns])

    def record(self, output: Path, key: str) -> None:
        """Remember that ``output`` (just written) was built from ``key``."""
        try:
            st = output.stat()
        except OSError:
            return
        self._outputs[self._rel(output)] = [key, st.st_size, st.st_mtime_ns]
        self._dirty = True

    def forget(self, output: Path) -> None:
        """Forget ``output`` (it could not be made)."""
        if self._outputs.pop(self._rel(output), None) is not None:
            self._dirty = True

    def _rel(self, output: Path) -> str:
        try:
            return output.relative_to(self.run_dir).as_posix()
        except ValueError:
            return str(output)


def _sweep(entry: os.DirEntry[str]) -> None:
    """Remove a temporary file an interrupted rebuild left (untouched for 10 minutes)."""
    try:
        if entry.stat().st_mtime < time.time() - _STALE_S:
            os.unlink(entry.path)
    except OSError:
        pass  # gone already, or another rebuild's: never a reason to stop


def own_cache(run_dir: Path, cache: OutputCache | None) -> tuple[OutputCache, bool]:
    """``(cache, owned)``: the caller's cache, or a new one the callee must :meth:`save`."""
    return (cache, False) if cache is not None else (OutputCache(run_dir), True)
