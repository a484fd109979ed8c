"""Review records from outside the runner: written under the run lock, or queued for its holder.

The checkpoint has one writer: whoever holds ``checkpoint.lock`` (README, "Run directory"). A
reviewer (``pipeline review``, ``pipeline pick``) records ``take_picked``, ``take_rejected``,
``note_added`` and ``reroll_requested`` with :func:`record`:

- when no runner holds the lock, :func:`record` takes it (the same ``flock`` a runner takes, as
  :meth:`Checkpoint.open <pipeline.journal.checkpoint.Checkpoint.open>` does), appends the
  requests, fsyncs and lets go: a runner starting in those milliseconds exits 4 as for any
  other holder;
- when a runner holds it, each request is queued as one file ``RUN_DIR/inbox/<ns>-<id>.json``
  (written to a temporary name, fsynced, renamed: never seen half written) and the holder
  appends it: the runner looks every second while it runs and once before it ends
  (:func:`drain`), the next ``run``/``resume``/``pick``/``review`` when they start.

Nothing but these four events is ever taken from the inbox (a file naming another event is
moved to ``inbox/bad/``). A request's file is removed only after its record is durable (the
checkpoint's ``then``), and every request carries an id that the fold remembers
(:attr:`RunState.requests <pipeline.journal.state.RunState>`): one drained twice (a crash
between the fsync and the removal) is recorded once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline._util.fsutil import fsync_dir
from pipeline.errors import CheckpointError, LockedError
from pipeline.journal import snapshot
from pipeline.journal.checkpoint import FILE, Checkpoint, Record
from pipeline.journal.state import REVIEW_EVENTS, RunState, apply, folder
from pipeline.models import Event

log = logging.getLogger("pipeline")

INBOX = "inbox"
_BAD = "bad"


@dataclass(frozen=True, slots=True)
class Request:
    """One review record to append.

    Attributes:
        ev: one of the review events (:data:`pipeline.journal.state.REVIEW_EVENTS`).
        shot: the take it is about (for ``reroll_requested``: the take it asks a new one of,
            until :data:`Resolve` names the new take).
        data: the record's fields (JSON values: ``key``, ``take``, ``text``, ``rejected``...).
        req: its unique id (also written to the record as ``req``).
        path: its file in the inbox, when it was queued.
    """

    ev: Event
    shot: str
    data: dict[str, Any] = field(default_factory=dict)
    req: str = field(default_factory=lambda: uuid.uuid4().hex)
    path: Path | None = None


#: Turns a request into the record to append, given the state so far (e.g. gives a re-roll its
#: new take's id and number); None drops it (the shot is gone from the manifest).
Resolve = Callable[[Request, RunState], Request | None]
#: ``Checkpoint.append``, or the runner's own append (which also updates its live state).
Append = Callable[..., Awaitable[Record]]


def queue(run_dir: Path, request: Request) -> Path:
    """Write ``request`` into ``RUN_DIR/inbox`` (atomic, fsynced); returns its file.

    Raises:
        OSError: the file cannot be written.
    """
    folder_ = run_dir / INBOX
    folder_.mkdir(mode=0o700, exist_ok=True)
    name = f"{time.time_ns():020d}-{request.req}.json"
    body = {"ev": request.ev.value, "shot": request.shot, "data": request.data, "req": request.req}
    tmp = folder_ / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(body).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    dest = folder_ / name
    os.replace(tmp, dest)
    fsync_dir(folder_)
    return dest


def _parse(path: Path) -> Request:
    """The request in ``path``. Raises ValueError (or OSError) for anything else."""
    body = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    ev, shot, data, req = body.get("ev"), body.get("shot"), body.get("data"), body.get("req")
    if ev not in {e.value for e in REVIEW_EVENTS}:
        raise ValueError(f"event {ev!r} is not a review event")
    if not isinstance(shot, str) or not isinstance(data, dict) or not isinstance(req, str):
        raise ValueError("shot, data or req missing")
    return Request(Event(ev), shot, data, req, path)


def pending(run_dir: Path) -> list[Request]:
    """The queued requests in the order they were queued; bad files go to ``inbox/bad/``."""
    where = run_dir / INBOX
    try:
        names = sorted(n for n in os.listdir(where) if n.endswith(".json") and n[0] != ".")
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for name in names:
        path = where / name
        try:
            out.append(_parse(path))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            log.warning("%s: not a review request (%s); moved to %s/%s", path, exc, INBOX, _BAD)
            with contextlib.suppress(OSError):
                (where / _BAD).mkdir(mode=0o700, exist_ok=True)
                os.replace(path, where / _BAD / name)
    return out


def _remover(path: Path | None) -> Callable[[], None] | None:
    if path is None:
        return None

    def remove() -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    return remove


async def drain(
    append: Append, state: RunState, requests: Iterable[Request], resolve: Resolve
) -> list[Record]:
    """Append every request not yet recorded, in order, through ``append``.

    ``state`` must be the state of the log so far and kept up to date by ``append`` (the
    runner's append does) or here: each record is folded into it before the next request is
    resolved. A queued request's file is removed once its record is durable.

    Raises:
        CheckpointError: an append failed (fail-stop).
    """
    written = []
    for request in requests:
        remove = _remover(request.path)
        if request.req in state.requests:  # recorded already: only its file was left
            if remove is not None:
                remove()
            continue
        resolved = resolve(request, state)
        if resolved is None:
            log.warning("%s: %s of a shot the manifest no longer has", request.shot, request.ev)
            if remove is not None:
                remove()
            continue
        fields = {**resolved.data, "req": request.req}
        record = await append(resolved.ev, resolved.shot, then=remove, **fields)
        if request.req not in state.requests:  # a plain Checkpoint.append folds nothing
            apply(state, record)
        written.append(record)
    return written


async def record(run_dir: Path, requests: list[Request], resolve: Resolve) -> tuple[bool, RunState]:
    """Append ``requests`` now if no runner holds the run, else queue them for the one that does.

    Returns:
        ``(True, state)`` when they were recorded (with anything left in the inbox first), or
        ``(False, state)`` when they were queued; ``state`` is the log's state then (with the
        requests folded in when recorded; as read without the lock when queued).

    Raises:
        CheckpointError: ``run_dir`` has no checkpoint, or it cannot be read or written.
        OSError: a queued request cannot be written.
    """
    path = run_dir / FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a run directory (no {FILE})")
    state = RunState()
    try:
        ckpt = await Checkpoint.open(
            run_dir, fold=folder(state), prefix=snapshot.prefix_into(state, path)
        )
    except LockedError:
        for request in requests:
            queue(run_dir, request)
        return False, snapshot.load_state(path)
    try:
        await drain(ckpt.append, state, [*pending(run_dir), *requests], resolve)
        await ckpt.sync()
    finally:
        await ckpt.close()
    return True, state


async def flush(run_dir: Path, resolve: Resolve) -> bool:
    """Append what the inbox holds when no runner holds the run (nothing to do: no lock taken).

    Returns:
        True when the inbox is empty afterwards (or was), False when a runner holds the run.

    Raises:
        CheckpointError: as :func:`record`.
    """
    if not pending(run_dir):
        return True
    return (await record(run_dir, [], resolve))[0]
