"""Outputs are their own witness: a damaged or lost checkpoint never pays for a video again.

Every final video ``shots/<id>.mp4`` has a sidecar ``shots/<id>.json`` (written and fsynced
before the video's rename, see :func:`pipeline.transfer.download.write_verified`): the shot, its
fingerprint, provider, model, job id, sha256 and size. Two uses:

- :func:`check_outputs`, at the start of ``run``/``resume`` (after the lock, before any paid
  call): a verified video of the shot the manifest asks for that the log does not have as done
  means the log was truncated or replaced; the run stops (exit 3) instead of paying again.
- :func:`repair` (``pipeline repair RUN_DIR``) appends to the log the records that make each such
  shot done (``shot_planned`` when needed, ``submitted`` and ``fetched`` marked ``repaired``)
  without any call to a provider. A sidecar whose video is missing or does not match is left alone.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from pipeline.engine.context import output_path
from pipeline.errors import CheckpointError
from pipeline.journal import snapshot
from pipeline.journal.checkpoint import FILE as CHECKPOINT_FILE
from pipeline.journal.checkpoint import Checkpoint
from pipeline.journal.state import RunState, folder
from pipeline.manifest.loader import Manifest
from pipeline.models import Event, Shot, ShotState
from pipeline.transfer.download import SIDECAR_SUFFIX, file_sha256

#: How many shot ids a message names before "...".
_NAMED = 5


@dataclass(frozen=True)
class Sidecar:
    """What a sidecar says about its video (written by ``transfer.download.write_verified``)."""

    shot: str
    fingerprint: str
    provider: str
    model: str
    job: str
    sha256: str
    size: int
    run: str | None = None
    simulated: bool | None = None


@dataclass
class RepairReport:
    """Outcome of :func:`repair`.

    Attributes:
        restored: shots recorded as done from their verified videos.
        known: shots the log already had as done with the same video.
        skipped: ``(sidecar file name, why)`` for every sidecar left alone.
    """

    restored: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def read_sidecar(path: Path) -> Sidecar:
    """Read one sidecar.

    Raises:
        ValueError: unreadable, not JSON, or a field is missing or of the wrong type.
    """
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"unreadable ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise ValueError("not JSON") from exc
    if not isinstance(doc, dict):
        raise ValueError("not a sidecar")
    text = ("shot", "fingerprint", "provider", "model", "job", "sha256")
    if any(not isinstance(doc.get(k), str) for k in text) or type(doc.get("bytes")) is not int:
        raise ValueError("not a sidecar (a field is missing)")
    run, simulated = doc.get("run"), doc.get("simulated")
    return Sidecar(
        shot=doc["shot"],
        fingerprint=doc["fingerprint"],
        provider=doc["provider"],
        model=doc["model"],
        job=doc["job"],
        sha256=doc["sha256"],
        size=int(doc["bytes"]),
        run=run if isinstance(run, str) else None,
        simulated=simulated if isinstance(simulated, bool) else None,
    )


async def _video_problem(run_dir: Path, side: Sidecar) -> str | None:
    """Why the sidecar's video does not verify (missing, size, sha256), or None when it does."""
    video = output_path(run_dir, side.shot)
    try:
        if video.is_symlink() or not video.is_file():
            return f"its video {video.name} is missing"
        if video.stat().st_size != side.size:
            return f"its video {video.name} is not the recorded size"
        if await file_sha256(video) != side.sha256:
            return f"its video {video.name} does not match the recorded sha256"
    except OSError as exc:
        return f"its video {video.name} cannot be read ({exc.strerror})"
    return None


def _sidecar_names(run_dir: Path) -> set[str]:
    try:
        with os.scandir(run_dir / "shots") as entries:
            return {e.name for e in entries if e.name.endswith(SIDECAR_SUFFIX) and e.is_file()}
    except (FileNotFoundError, NotADirectoryError):
        return set()


async def unknown_videos(run_dir: Path, state: RunState, manifest: Manifest) -> list[str]:
    """Shots of ``manifest`` with a verified video the log (``state``) does not have as done.

    Only shots the log does not have as done are looked at (a done shot is never paid for
    again), and only a sidecar of the shot as the manifest asks for it (the same fingerprint: an
    earlier version's video is superseded, not lost). Its video must exist and match.
    """
    names = _sidecar_names(run_dir)
    found = []
    for shot in manifest.shots:
        rec = state.shots.get(shot.id)
        if f"{shot.id}{SIDECAR_SUFFIX}" not in names or (rec and rec.state == ShotState.DONE):
            continue
        try:
            side = read_sidecar(output_path(run_dir, shot.id).with_suffix(SIDECAR_SUFFIX))
        except ValueError:
            continue
        same = side.shot == shot.id and side.fingerprint == shot.fingerprint
        if same and await _video_problem(run_dir, side) is None:
            found.append(shot.id)
    return found


async def check_outputs(run_dir: Path, state: RunState, manifest: Manifest) -> None:
    """Refuse to start a run whose log does not know verified videos in ``shots/``.

    Raises:
        CheckpointError: naming how many and which shots, and the ``pipeline repair`` command.
    """
    missing = await unknown_videos(run_dir, state, manifest)
    if not missing:
        return
    named = ", ".join(missing[:_NAMED]) + (", ..." if len(missing) > _NAMED else "")
    flag = "" if state.manifest else f" --manifest {manifest.path}"
    raise CheckpointError(
        f"{CHECKPOINT_FILE} does not know {len(missing)} verified video(s) in shots/ "
        f"({named}): the log was truncated or replaced; run `pipeline repair {run_dir}{flag}` "
        "to rebuild it from the videos, nothing will be paid again"
    )


def lost_log_message(run_dir: Path) -> str | None:
    """For a run directory whose log is missing or names no manifest: what to do, or None.

    None when ``shots/`` holds no sidecar (nothing was ever fetched there).
    """
    count = len(_sidecar_names(run_dir))
    if not count:
        return None
    return (
        f"{run_dir / CHECKPOINT_FILE} is missing or empty but shots/ holds {count} verified "
        f"video sidecar(s): the log was truncated or replaced; run `pipeline repair {run_dir} "
        "--manifest MANIFEST` to rebuild it from the videos, nothing will be paid again"
    )


async def _classify(
    run_dir: Path, state: RunState, manifest: Manifest, report: RepairReport
) -> list[tuple[Sidecar, Shot]]:
    """Sort every sidecar into restorable / already known / skipped (with why)."""
    shots = {s.id: s for s in manifest.shots}
    todo = []
    for name in sorted(_sidecar_names(run_dir)):
        try:
            side = read_sidecar(run_dir / "shots" / name)
        except ValueError as exc:
            report.skipped.append((name, str(exc)))
            continue
        shot = shots.get(side.shot)
        rec = state.shots.get(side.shot)
        if shot is None or name != f"{side.shot}{SIDECAR_SUFFIX}":
            report.skipped.append((name, "its shot is not in the manifest"))
            continue
        why = None
        if side.fingerprint != shot.fingerprint:
            why = "the manifest's shot has changed since (another fingerprint)"
        elif rec is not None and rec.state == ShotState.DONE:
            if rec.sha256 == side.sha256:
                report.known.append(side.shot)
                continue
            why = "the log has this shot done with another video"
        else:
            why = await _video_problem(run_dir, side)
        if why is not None:
            report.skipped.append((name, why))
        else:
            todo.append((side, shot))
    return todo


async def repair(run_dir: Path, manifest: Manifest) -> RepairReport:
    """Rebuild ``run_dir``'s log from its verified videos: no call to any provider.

    Takes the run directory's lock, loads the (possibly truncated or empty) log, and for each
    sidecar whose video verifies and whose fingerprint is the manifest shot's, appends the
    records that make the shot done: ``run_started`` first when the log has none (keeping the
    sidecars' run id), ``shot_planned`` when the log does not plan this fingerprint,
    ``submitted`` (the sidecar's job, ``repaired``) unless the log has that job, ``fetched``.

    Raises:
        LockedError: another runner holds the run directory.
        CheckpointError: the log cannot be read or written.
    """
    state = RunState()
    prefix = snapshot.prefix_into(state, run_dir / CHECKPOINT_FILE)
    ckpt = await Checkpoint.open(run_dir, fold=folder(state), prefix=prefix)
    report = RepairReport()
    try:
        todo = await _classify(run_dir, state, manifest, report)
        if todo and state.run_id is None:
            runs = Counter(side.run for side, _ in todo if side.run)
            modes = Counter(side.simulated for side, _ in todo if side.simulated is not None)
            await ckpt.append(
                Event.RUN_STARTED,
                None,
                run=runs.most_common(1)[0][0] if runs else uuid.uuid4().hex[:16],
                manifest=str(manifest.path),
                simulate=modes.most_common(1)[0][0] if modes else False,
                repaired=True,
            )
        for side, shot in todo:
            rec = state.shots.get(shot.id)
            replanned = rec is None or rec.fingerprint != shot.fingerprint
            if replanned:
                fields = {"fp": shot.fingerprint, "prov": shot.provider, "model": shot.model}
                ckpt.append_many([(Event.SHOT_PLANNED, shot.id, fields)])
            if replanned or rec is None or rec.job is None or rec.job.job_id != side.job:
                await ckpt.append(
                    Event.SUBMITTED,
                    shot.id,
                    job=side.job,
                    prov=side.provider,
                    model=side.model,
                    repaired=True,
                )
            path = output_path(run_dir, shot.id).relative_to(run_dir).as_posix()
            await ckpt.append(
                Event.FETCHED,
                shot.id,
                path=path,
                bytes=side.size,
                sha256=side.sha256,
                repaired=True,
            )
            report.restored.append(shot.id)
    finally:
        with anyio.CancelScope(shield=True):
            await ckpt.close()
    return report
