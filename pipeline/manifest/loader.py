"""The manifest (schema version 1): pydantic models of the YAML, loaded with file:line errors.

::

    load_manifest(path)            read_yaml -> plain data + line map (PyYAML's safe loader)
      -> ManifestHead              the document but its shot entries (extra="forbid", strict)
      -> expand(head, entries)     per entry: ShotSpec, then defaults -> scene defaults -> shot;
                                   vars; takes; media; caps (the entry is dropped once expanded)
      -> Manifest(shots=...)       fully resolved, fingerprinted shots in manifest order

Every problem becomes a :class:`~pipeline.errors.ManifestIssue` naming the file, the line and the
field (``scenes[0].shots[2].duration``) and what is allowed; all of them are raised together in one
:class:`~pipeline.errors.ManifestError`. Nothing is submitted when loading fails.

The YAML itself is read by :mod:`pipeline.manifest.yaml_reader` (PyYAML's own safe loader, plus the
line
of every node from its marks); this module is the schema, its validation and
:func:`load_manifest`. No pydantic model per shot ever exists for the whole manifest at once
(``expand`` validates and drops the entries one by one). ``LineMap``, ``Loc`` and ``read_yaml``
are re-exported here.
"""

from __future__ import annotations

import copy
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from pipeline._util.gcutil import gc_paused
from pipeline.errors import ManifestError, ManifestIssue
from pipeline.manifest.expand import expand
from pipeline.manifest.schema import (
    ManifestHead,
    ManifestSpec,
    Problems,
    ShotEntries,
    field_path,
)
from pipeline.manifest.yaml_reader import LineMap as LineMap
from pipeline.manifest.yaml_reader import Loc as Loc
from pipeline.manifest.yaml_reader import decode
from pipeline.manifest.yaml_reader import read_yaml as read_yaml
from pipeline.models import Shot
from pipeline.providers import PROVIDERS
from pipeline.providers.base import MediaPolicy, ProviderSpec
from pipeline.settings import BudgetSettings, DownloadSettings, ProviderSettings, StorageSettings


@dataclass(frozen=True)
class Manifest:
    """A loaded, validated and expanded manifest.

    Attributes:
        path: the manifest file (absolute).
        name: the run name (directory under ``jobs/``).
        shots: every expanded shot (takes included) in manifest order.
        scenes: scene ids in manifest order.
        providers: the manifest's per-provider settings (not merged with adapter defaults).
        warnings: problems that do not stop a run (e.g. a model the built-in table does not
            know, so some checks were skipped), each naming file, line and field.
        setting_lines: line of each endpoint setting the manifest sets, by field path
            (``providers.relaydance.base_url``, ``storage.endpoint_url``...), for
            :mod:`pipeline.cli.endpoints` to point at.
    """

    path: Path
    name: str
    shots: tuple[Shot, ...]
    scenes: tuple[str, ...]
    providers: Mapping[str, ProviderSettings] = field(default_factory=dict)
    storage: StorageSettings | None = None
    downloads: DownloadSettings = field(default_factory=DownloadSettings)
    budget: BudgetSettings = field(default_factory=BudgetSettings)
    spec: ManifestSpec | None = None
    warnings: tuple[ManifestIssue, ...] = ()
    setting_lines: Mapping[str, int] = field(default_factory=dict)


def _setting_lines(head: ManifestHead, lines: LineMap) -> dict[str, int]:
    """Lines of the endpoint settings (base URLs, key variables, storage endpoint) in ``head``."""
    locs: list[Loc] = [("storage", "endpoint_url")]
    for name in head.providers:
        locs += [("providers", name, "base_url"), ("providers", name, "api_key_env")]
    found = {field_path(loc): lines.lines.get(loc) for loc in locs}
    return {path: line for path, line in found.items() if line is not None}


def print_warnings(manifest: Manifest, stream: TextIO | None = None) -> None:
    """Write each of ``manifest.warnings`` as ``warning: file:line: field: message``.

    Args:
        manifest: the loaded manifest.
        stream: where to write (default ``sys.stderr``).
    """
    out = stream or sys.stderr
    for issue in manifest.warnings:
        print(f"warning: {issue}", file=out)


_ASIDE = frozenset({"budget", "storage", "downloads", "providers", "version", "name"})


def _valid_part(data: Mapping[str, Any], exc: ValidationError) -> ManifestHead | None:
    """The head without its invalid parts, so that every shot is still checked in this round.

    An invalid setting the shots do not depend on (budget, storage, a provider's limits...) is
    dropped; an invalid default or var is dropped or emptied (a bad var becomes ``""``, so that
    no shot reports it as unknown too); an invalid key of a scene's head is dropped. The
    problems themselves were already recorded: this only decides what the shots are checked
    against. None when the scenes cannot be made valid (then only schema problems are shown).
    """
    doc = copy.deepcopy({k: v for k, v in data.items() if k != "scenes"})
    scenes = data.get("scenes")
    if isinstance(scenes, list):
        doc["scenes"] = [
            {k: v for k, v in sc.items()} if isinstance(sc, dict) else sc for sc in scenes
        ]
    for err in exc.errors():
        loc = err["loc"]
        top = loc[0] if loc else None
        if top in _ASIDE and top in doc:
            doc[top] = {} if top in ("providers", "downloads") else None
            if top in ("version", "name"):
                doc[top] = 1 if top == "version" else "invalid-name"
        elif top in ("defaults", "vars") and len(loc) > 1 and isinstance(doc.get(top), dict):
            doc[top] = dict(doc[top])
            if top == "vars":
                doc[top][loc[1]] = ""
            else:
                doc[top].pop(loc[1], None)
        elif top in ("defaults", "vars"):
            doc.pop(top, None)
        elif top == "scenes" and len(loc) > 2 and loc[2] not in ("shots", "id"):
            scene = doc["scenes"][loc[1]] if isinstance(loc[1], int) else None
            if isinstance(scene, dict):
                if (
                    loc[2] == "defaults"
                    and len(loc) > 3
                    and isinstance(scene.get("defaults"), dict)
                ):
                    scene["defaults"] = {k: v for k, v in scene["defaults"].items() if k != loc[3]}
                else:
                    scene.pop(loc[2], None)
    doc = {k: v for k, v in doc.items() if v is not None}
    try:
        return ManifestHead.model_validate(doc)
    except ValidationError:
        return None


def _warn_open_ports(head: ManifestHead, problems: Problems) -> None:
    """Warn once per ``downloads.allow_hosts`` entry without a port: every port is trusted."""
    for i, entry in enumerate(head.downloads.allow_hosts):
        if not re.search(r"(?::\d+|\]:\d+)$", entry) or entry.endswith("]"):
            problems.warn(
                ("downloads", "allow_hosts", i),
                f"{entry!r} trusts every port of that host; write {entry}:PORT to trust one",
            )


def _problems(file: str, lines: LineMap) -> Problems:
    problems = Problems(file, lines)
    for loc, line in lines.duplicates:
        problems.add(loc, "duplicate key (the same key appears twice)", line)
    return problems


def shot_entries(
    data: Mapping[str, Any], head: ManifestHead | None, lines: LineMap
) -> list[ShotEntries]:
    """Every ``shots`` list that validating the whole document would validate entry by entry."""
    out = []
    scenes = data.get("scenes")
    if isinstance(scenes, list):
        for si, scene in enumerate(scenes):
            raw = scene.get("shots") if isinstance(scene, dict) else None
            if isinstance(raw, list):
                items = head.scenes[si].shots if head is not None else list(raw)
                out.append(ShotEntries(si, items, None))
    return out


def load_manifest(
    path: Path | str, *, registry: Mapping[str, ProviderSpec] = PROVIDERS, strict: bool = False
) -> Manifest:
    """Load, validate and expand the manifest at ``path``.

    Args:
        path: the YAML file; media paths inside it are relative to its directory.
        registry: provider specs by name (tests inject fakes).
        strict: a model neither the built-in table nor the cached catalog
            (:mod:`pipeline.providers.catalog`) knows is an error, not a warning.

    Returns:
        The expanded manifest, with its warnings.

    Raises:
        ManifestError: every problem found, each with file, line and field.
    """
    path = Path(path)
    file = str(path)
    try:
        text = decode(path.read_bytes(), file)
    except FileNotFoundError:
        raise ManifestError.single(file, None, "", "no such file") from None
    except OSError as exc:
        raise ManifestError.single(file, None, "", f"cannot read: {exc}") from None
    with gc_paused():
        data, lines = read_yaml(text, file)
        del text
        problems = _problems(file, lines)
        head = None
        try:
            head = ManifestHead.model_validate(data)
        except ValidationError as exc:
            problems.add_validation(exc)
            head = _valid_part(data, exc)  # so the shots get all their checks in this round
        if head is not None:
            _warn_open_ports(head, problems)
        entries = shot_entries(data, head, lines)
        del data  # the entries are all that is left of the raw document
        shots = expand(head, entries, path.resolve(), registry, problems, strict=strict)
    assert head is not None  # expand() raises on any problem
    policies = {name: registry[name].media for name in {s.provider for s in shots}}
    _check_storage(shots, policies, head.storage is not None, file)
    return Manifest(
        path=path.resolve(),
        name=head.name,
        shots=tuple(shots),
        scenes=tuple(s.id for s in head.scenes),
        providers=dict(head.providers),
        storage=head.storage,
        downloads=head.downloads,
        budget=head.budget,
        warnings=problems.warnings(),
        setting_lines=_setting_lines(head, lines),
    )


def _check_storage(
    shots: Iterable[Shot], policies: Mapping[str, MediaPolicy], has: bool, file: str
) -> None:
    """Refuse a manifest whose shots need object storage when none is configured.

    Raises:
        ManifestError: naming each such shot's line.
    """
    if has:
        return
    issues = [
        ManifestIssue(
            file,
            shot.line,
            "storage",
            f"{shot.id}: {shot.provider} needs public URLs for local files (too large to "
            "inline or not accepted inline); add `storage: {url: s3://bucket/prefix}`",
        )
        for shot in shots
        if shot.provider in policies and policies[shot.provider].needs_storage(shot)
    ]
    if issues:
        raise ManifestError(issues)
