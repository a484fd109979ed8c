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
import difflib
import re
import sys
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from pipeline._util.gcutil import gc_paused
from pipeline.errors import ManifestError, ManifestIssue
from pipeline.manifest.yaml_reader import LineMap as LineMap
from pipeline.manifest.yaml_reader import Loc as Loc
from pipeline.manifest.yaml_reader import decode
from pipeline.manifest.yaml_reader import read_yaml as read_yaml
from pipeline.models import Shot
from pipeline.providers import PROVIDERS
from pipeline.providers.base import ProviderSpec
from pipeline.settings import BudgetSettings, DownloadSettings, ProviderSettings, StorageSettings

#: Problems reported at most; the others are counted (``... and N more problems``).
MAX_PROBLEMS = 1000

#: Scene, shot and run names: they become file names, so a safe alphabet and length.
Name = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", min_length=1, max_length=64)
]
VarName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class ShotFields(_Strict):
    """Fields a shot may set and scenes or the manifest may default (all optional here)."""

    provider: str | None = None
    model: str | None = None
    duration: int | None = Field(default=None, ge=1, le=600)
    aspect_ratio: str | None = None
    resolution: str | None = None
    audio: bool | None = None
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    consent: Literal["seedance"] | None = None
    extra: dict[str, Any] | None = None


class ShotSpec(ShotFields):
    """One ``scenes[].shots[]`` entry."""

    id: Name
    prompt: str = Field(min_length=1)
    image: str | None = None
    end_image: str | None = None
    references: list[str] = Field(default_factory=list)
    takes: int = Field(default=1, ge=1, le=50)


class _SceneFields(_Strict):
    id: Name
    defaults: ShotFields = Field(default_factory=ShotFields)


class SceneSpec(_SceneFields):
    """One ``scenes[]`` entry: an id, scene defaults and at least one shot."""

    shots: list[ShotSpec] = Field(min_length=1)


class _Head:
    """Namespace: the model below has the schema's name, which errors show ("instance of ...")."""

    class SceneSpec(_SceneFields):
        """A scene whose shot entries are not validated yet (``expand`` does it entry by entry)."""

        shots: list[Any] = Field(min_length=1)


SceneHead = _Head.SceneSpec


class _ManifestFields(_Strict):
    version: Literal[1]
    name: Name
    defaults: ShotFields = Field(default_factory=ShotFields)
    vars: dict[VarName, str] = Field(default_factory=dict)
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    storage: StorageSettings | None = None
    downloads: DownloadSettings = Field(default_factory=DownloadSettings)
    budget: BudgetSettings = Field(default_factory=BudgetSettings)


class ManifestSpec(_ManifestFields):
    """The whole YAML document, as written."""

    scenes: list[SceneSpec] = Field(min_length=1)


class ManifestHead(_ManifestFields):
    """The document with its scenes' shot entries not validated yet (see :class:`SceneHead`).

    Validating entries one by one reports the same problems as :class:`ManifestSpec` does for the
    whole document, without holding a model per shot.
    """

    scenes: list[SceneHead] = Field(min_length=1)


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


def field_path(loc: Loc) -> str:
    """``("scenes", 0, "shots", 2, "duration")`` -> ``"scenes[0].shots[2].duration"``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at ``loc`` (for 'allowed fields' hints)."""
    current: Any = ManifestSpec
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(str(part))
            if info is None:
                return None
            current = info.annotation
        else:
            args = [a for a in typing.get_args(current) if a is not type(None)]
            current = args[-1] if args else None
        while typing.get_origin(current) in (typing.Union, types.UnionType):
            current = next(a for a in typing.get_args(current) if a is not type(None))
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _message(err: Mapping[str, Any], loc: Loc) -> str:
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        allowed = sorted(model.model_fields) if model else []
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        parts = ["unknown field"]
        if hint:
            parts.append(f"did you mean {hint[0]!r}?")
        if allowed:
            parts.append(f"allowed: {', '.join(allowed)}")
        return "; ".join(parts)
    if kind == "missing":
        return "required field is missing"
    if loc and loc[-1] == "aspect_ratio" and isinstance(value, int):
        return 'write the ratio in quotes, e.g. "16:9" (YAML reads 16:9 unquoted as a number)'
    if kind == "string_pattern_mismatch" and loc and loc[-1] == "presign_ttl":
        return f"{value!r} is not a duration: use a number and s, m, h or d, e.g. 24h or 90m"
    if kind == "string_pattern_mismatch":
        return f"{value!r} is not allowed: use letters, digits, '_', '.' and '-' (not first)"
    shown = repr(value) if not isinstance(value, dict | list) else type(value).__name__
    return f"{err['msg']} (got {shown})"


@dataclass
class Problems:
    """Problems found while loading, each with its location; lines are looked up at the end.

    The first :data:`MAX_PROBLEMS` distinct problems are kept (a problem every shot inherits
    from the same place is one, counted); any other is only counted, so that a manifest with
    a million bad shots is reported in bounded memory.

    Attributes:
        file: the manifest path as given by the user.
        lines: where to look the lines up.
        found: (location, line or None to look up, message) -> times found, in the order found.
        more: problems found beyond the kept ones.
        warned: warnings as (location, message): they never make the manifest invalid.
    """

    file: str
    lines: LineMap
    found: dict[tuple[Loc, int | None, str], int] = field(default_factory=dict)
    more: int = 0
    warned: list[tuple[Loc, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.found)

    def add(self, loc: Loc, message: str, line: int | None = None) -> None:
        """Record a problem at ``loc`` (``line``: when known better than the map's)."""
        key = (loc, line, message)
        count = self.found.get(key)
        if count is not None:
            self.found[key] = count + 1
        elif len(self.found) < MAX_PROBLEMS:
            self.found[key] = 1
        else:
            self.more += 1

    def warn(self, loc: Loc, message: str) -> None:
        """Record a warning at ``loc`` (reported, but the manifest stays valid)."""
        self.warned.append((loc, message))

    def warnings(self) -> tuple[ManifestIssue, ...]:
        """The warnings as issues, sorted by line and field."""
        issues = _merged(
            (ManifestIssue(self.file, self.lines.line(loc), field_path(loc), message), 1)
            for loc, message in self.warned
        )
        return tuple(sorted(issues, key=lambda i: (i.line or 0, i.field)))

    def add_validation(self, exc: ValidationError, prefix: Loc = ()) -> None:
        """Record every error of a pydantic validation of the data found at ``prefix``."""
        for err in exc.errors(include_url=False, include_context=False, include_input=True):
            loc: Loc = prefix + tuple(p for p in err["loc"] if isinstance(p, int | str))
            self.add(loc, _message(err, loc))

    def error(self) -> ManifestError:
        """All the problems as one error, sorted by line and field (then how many more)."""
        issues = _merged(
            (
                ManifestIssue(
                    self.file,
                    self.lines.line(loc) if line is None else line,
                    field_path(loc),
                    message,
                ),
                count,
            )
            for (loc, line, message), count in self.found.items()
        )
        issues.sort(key=lambda i: (i.line or 0, i.field))
        if self.more:
            issues.append(ManifestIssue(self.file, None, "", f"... and {self.more} more problems"))
        return ManifestError(issues)


def _merged(issues: Iterable[tuple[ManifestIssue, int]]) -> list[ManifestIssue]:
    """One line for a problem every shot inherits from the same place (``(for N shots)``)."""
    counted: dict[ManifestIssue, int] = {}
    for issue, n in issues:
        counted[issue] = counted.get(issue, 0) + n
    return [
        replace(i, message=f"{i.message} (for {n} shots)") if n > 1 else i
        for i, n in counted.items()
    ]


#: Keys of the document the shots do not depend on: dropped when invalid (see _valid_part).
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


@dataclass
class ShotEntries:
    """The ``shots`` list of one scene as read; ``manifest.expand.expand`` consumes it.

    Attributes:
        scene: index of the scene.
        items: the raw entries (``expand`` drops each one once it is expanded).
        lines: start line of each entry, or None (ask the :class:`LineMap`).
    """

    scene: int
    items: list[Any]
    lines: Sequence[int] | None


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
    from pipeline.manifest.expand import expand
    from pipeline.transfer.upload import check_storage

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
    policies = {name: provider.media for name, provider in registry.items()}
    check_storage(shots, policies, head.storage is not None, file)
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
