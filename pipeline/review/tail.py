"""Following a run's checkpoint as it grows: the review app's live state.

:class:`Tail` keeps the replayed state of ``RUN_DIR/checkpoint.jsonl`` and folds the records
appended since it last looked (read-only, no lock: what ``pipeline status`` does, from the byte
offset and ``seq`` it reached). A torn last line (a record being written) is left for the next
look; a log that shrank or was replaced (``pipeline repair``) is replayed again from the start.
Each look that folded something bumps :attr:`Tail.version` and wakes the subscribers (the
server-sent event streams), each with the shots the new records named.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

from pipeline.errors import CheckpointError
from pipeline.journal.checkpoint import FILE, Prefix, load
from pipeline.journal.snapshot import open_state
from pipeline.journal.state import RunState, folder
from pipeline.models import Event

log = logging.getLogger("pipeline")

#: A subscriber's queue holds sets of changed shot ids (None: everything changed).
Changes = set[str] | None


class Tail:
    """The live state of one run directory's checkpoint.

    Attributes:
        run_dir: the run directory.
        state: the replayed log up to :attr:`offset` bytes.
        version: bumped each time new records were folded (0 after the first load).
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / FILE
        self.state = RunState()
        self.version = 0
        self.offset = 0
        self._seq = 0
        self._lines = 0
        self._inode: int | None = None
        self._queues: set[asyncio.Queue[Changes]] = set()
        self.closed = False

    def load(self) -> None:
        """Replay the whole log (from its snapshot when usable).

        Raises:
            CheckpointError: the log cannot be read, or is corrupt before its end.
        """
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError as exc:
            raise CheckpointError(f"{self.run_dir} has no {FILE}") from exc
        state, loaded = open_state(self.path)
        self.state, self.offset, self._seq = state, loaded.good_bytes, loaded.last_seq
        self._lines, self._inode = 0, inode

    def poll(self) -> Changes:
        """Fold what was appended since the last look.

        Returns:
            The shot ids the new records named (empty: nothing new), or None when the log was
            replaced and replayed again. A log that cannot be read now is logged and tried
            again at the next look (empty set).
        """
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return set()
        if st.st_ino != self._inode or st.st_size < self.offset:
            try:
                self.load()
            except CheckpointError as exc:
                log.warning("review: cannot read %s: %s", self.path, exc)
                return set()
            self._bump(None)
            return None
        if st.st_size == self.offset:
            return set()
        changed: set[str] = set()
        fold = folder(self.state)

        def tracking(
            seq: int, ts: str, ev: Event, shot: str | None, data: Mapping[str, Any]
        ) -> None:
            fold(seq, ts, ev, shot, data)
            if shot is not None:
                changed.add(shot)
            self._lines += 1

        def start(fh: BinaryIO) -> Prefix:
            return Prefix(offset=self.offset, seq=self._seq, lines=self._lines)

        before = self.offset
        try:
            loaded = load(self.path, repair=False, fold=tracking, prefix=start)
        except CheckpointError as exc:  # corrupt after our offset: replay it all next time
            log.warning("review: cannot read %s: %s", self.path, exc)
            self._inode = None
            return set()
        self.offset, self._seq = loaded.good_bytes, loaded.last_seq
        if self.offset != before:
            self._bump(changed)
        return changed

    def _bump(self, changed: Changes) -> None:
        self.version += 1
        for queue in self._queues:
            queue.put_nowait(None if changed is None else set(changed))

    def bump_outputs(self) -> None:
        """Tell the subscribers that the outputs were rebuilt (an empty change)."""
        self._bump(set())

    def subscribe(self) -> asyncio.Queue[Changes]:
        """A queue that receives the changes of every later look that folded something."""
        queue: asyncio.Queue[Changes] = asyncio.Queue()
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Changes]) -> None:
        """Stop sending changes to ``queue``."""
        self._queues.discard(queue)

    def close(self) -> None:
        """Wake every subscriber with ``None`` one last time (the app is stopping)."""
        self.closed = True
        for queue in self._queues:
            queue.put_nowait(None)
