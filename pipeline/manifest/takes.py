"""Takes of a shot beyond the manifest's own: re-rolls asked for in review, as shots to run.

A ``reroll_requested`` record (:mod:`pipeline.journal.inbox`) names a new take
``<scene>-<shot>-t<N>``; :func:`with_rerolls` adds it to the manifest's shots (right after the
other takes of its shot) so that the runner plans and submits it and the storyboard outputs show
it; :func:`resolve` gives a re-roll request its new take when it is appended.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from pipeline.journal.inbox import Request, Resolve
from pipeline.journal.state import RunState
from pipeline.manifest.expand import take_of
from pipeline.manifest.loader import Manifest
from pipeline.models import Event, Shot


def pick_key(shot: Shot) -> str:
    """The shot a take belongs to: ``"<scene>-<shot name>"`` (e.g. ``dawn-s02``)."""
    return f"{shot.scene}-{shot.name}"


def takes_of(shots: Sequence[Shot], key: str) -> list[Shot]:
    """The takes of shot ``key`` among ``shots``, in order (one for a shot without takes)."""
    return [s for s in shots if pick_key(s) == key]


def _reroll_shots(manifest: Manifest, rerolls: Mapping[str, Mapping[str, Any]]) -> list[Shot]:
    known = {s.id for s in manifest.shots}
    by_id = {s.id: s for s in manifest.shots}
    out: list[Shot] = []
    for sid, info in rerolls.items():
        if sid in known:
            continue  # the manifest has this take now (takes raised): the same shot
        key, take = str(info.get("key")), info.get("take")
        template = by_id.get(str(info.get("from")))
        if template is None or pick_key(template) != key:
            first = takes_of(manifest.shots, key)
            template = first[0] if first else None
        if template is None or not isinstance(take, int):
            continue  # the shot is gone from the manifest: its take is an orphan
        shot = take_of(template, take, manifest.name)
        if shot.id == sid:
            out.append(shot)
            known.add(sid)
    return out


def with_rerolls(manifest: Manifest, state: RunState) -> Manifest:
    """``manifest`` with the re-rolled takes ``state`` records, each after its shot's takes.

    Takes whose shot the manifest no longer has are left out (like any shot removed from it).
    """
    extra = _reroll_shots(manifest, state.rerolls)
    if not extra:
        return manifest
    after: dict[str, list[Shot]] = {}
    for shot in extra:
        after.setdefault(pick_key(shot), []).append(shot)
    for group in after.values():
        group.sort(key=lambda s: s.take or 0)
    last = {pick_key(s): s.id for s in manifest.shots}
    shots: list[Shot] = []
    for shot in manifest.shots:
        shots.append(shot)
        key = pick_key(shot)
        if last[key] == shot.id:
            shots.extend(after.pop(key, []))
    return replace(manifest, shots=tuple(shots))


def next_take(manifest: Manifest, state: RunState, key: str) -> int:
    """The number a new take of shot ``key`` gets: one more than any take it has."""
    numbers = [s.take or 1 for s in takes_of(manifest.shots, key)]
    numbers += [int(r["take"]) for r in state.rerolls.values() if r.get("key") == key]
    return max(numbers, default=0) + 1


def resolver(manifest: Manifest) -> Resolve:
    """A :data:`pipeline.journal.inbox.Resolve` for ``manifest``'s run (see :func:`resolve`)."""

    def bound(request: Request, state: RunState) -> Request | None:
        return resolve(manifest, request, state)

    return bound


def resolve(manifest: Manifest, request: Request, state: RunState) -> Request | None:
    """The record to append for ``request``, given the log's ``state`` so far.

    A ``reroll_requested`` about any take of a shot becomes one about its new take (the next
    number: :func:`next_take`), copying the take it was asked from (``from``), with its provider
    and model. Other requests pass as they are. None when the shot is not in the manifest.
    """
    shots = with_rerolls(manifest, state).shots
    source = next((s for s in shots if s.id == request.shot), None)
    if source is None:
        return None
    if request.ev != Event.REROLL_REQUESTED:
        return request
    key = pick_key(source)
    take = next_take(manifest, state, key)
    template = source if source.id in {s.id for s in manifest.shots} else takes_of(shots, key)[0]
    new = take_of(template, take, manifest.name)
    data = {
        **request.data,
        "key": key,
        "take": take,
        "from": template.id,
        "prov": new.provider,
        "model": new.model,
    }
    return replace(request, shot=new.id, data=data)
