"""The manifest (schema version 1): pydantic models of the YAML, loaded with file:line errors.

::

    load_manifest(path)            read YAML -> line map -> pydantic (extra="forbid", strict)
      -> expand(spec)              defaults -> scene defaults -> shot; vars; takes; media; caps
      -> Manifest(shots=...)       fully resolved, fingerprinted shots in manifest order

Every problem becomes a :class:`~pipeline.errors.ManifestIssue` naming the file, the line and the
field (``scenes[0].shots[2].duration``) and what is allowed; all of them are raised together in one
:class:`~pipeline.errors.ManifestError`. Nothing is submitted when loading fails.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from pipeline.errors import ManifestError, ManifestIssue
from pipeline.models import Shot
from pipeline.providers import PROVIDERS
from pipeline.providers.base import ProviderSpec
from pipeline.settings import BudgetSettings, DownloadSettings, ProviderSettings, StorageSettings

#: Scene, shot and run names: they become file names, so a safe alphabet and length.
Name = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", min_length=1, max_length=64)
]
VarName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
Loc = tuple[str | int, ...]


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


class SceneSpec(_Strict):
    """One ``scenes[]`` entry: an id, scene defaults and at least one shot."""

    id: Name
    defaults: ShotFields = Field(default_factory=ShotFields)
    shots: list[ShotSpec] = Field(min_length=1)


class ManifestSpec(_Strict):
    """The whole YAML document, as written."""

    version: Literal[1]
    name: Name
    defaults: ShotFields = Field(default_factory=ShotFields)
    vars: dict[VarName, str] = Field(default_factory=dict)
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    storage: StorageSettings | None = None
    downloads: DownloadSettings = Field(default_factory=DownloadSettings)
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    scenes: list[SceneSpec] = Field(min_length=1)


@dataclass(frozen=True)
class Manifest:
    """A loaded, validated and expanded manifest.

    Attributes:
        path: the manifest file (absolute).
        name: the run name (directory under ``jobs/``).
        shots: every expanded shot (takes included) in manifest order.
        scenes: scene ids in manifest order.
        providers: the manifest's per-provider settings (not merged with adapter defaults).
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


def field_path(loc: Loc) -> str:
    """``("scenes", 0, "shots", 2, "duration")`` -> ``"scenes[0].shots[2].duration"``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class LineMap:
    """1-based line of every node of a YAML document, by location tuple."""

    def __init__(self) -> None:
        self.lines: dict[Loc, int] = {}
        self.duplicates: list[tuple[Loc, int]] = []

    def walk(self, node: yaml.Node, loc: Loc = ()) -> None:
        """Record ``node`` and its children; note duplicate mapping keys."""
        self.lines.setdefault(loc, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value)
                child = (*loc, key)
                if key in seen:
                    self.duplicates.append((child, key_node.start_mark.line + 1))
                seen.add(key)
                self.lines[child] = key_node.start_mark.line + 1
                self.walk(value_node, child)
                self.lines[child] = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.walk(item, (*loc, i))

    def line(self, loc: Loc) -> int | None:
        """The line of ``loc``, or of its nearest recorded ancestor."""
        for end in range(len(loc), -1, -1):
            found = self.lines.get(loc[:end])
            if found is not None:
                return found
        return None


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
    if kind == "string_pattern_mismatch":
        return f"{value!r} is not allowed: use letters, digits, '_', '.' and '-' (not first)"
    shown = repr(value) if not isinstance(value, dict | list) else type(value).__name__
    return f"{err['msg']} (got {shown})"


def _issues_from(exc: ValidationError, file: str, lines: LineMap) -> list[ManifestIssue]:
    issues = []
    for err in exc.errors():
        loc: Loc = tuple(p for p in err["loc"] if isinstance(p, int | str))
        issues.append(ManifestIssue(file, lines.line(loc), field_path(loc), _message(err, loc)))
    return issues


#: libyaml's loader when PyYAML was built with it (about 10x faster on large manifests).
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _compose_and_construct(text: str) -> tuple[Any, Any]:
    """Parse ``text`` once: the node tree (for line numbers) and the Python data built from it.

    Raises:
        yaml.YAMLError: not valid YAML.
    """
    loader = _LOADER(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()
    return root, data


def parse_manifest(text: str, file: str) -> tuple[ManifestSpec, LineMap]:
    """Parse YAML text into the schema, keeping a line map for later checks.

    Raises:
        ManifestError: YAML syntax, duplicate keys, or schema violations (all of them).
    """
    try:
        root, data = _compose_and_construct(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ManifestError.single(file, line, "", f"not valid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ManifestError.single(file, None, "", f"not valid YAML: {exc}") from None
    if root is None or not isinstance(data, dict):
        raise ManifestError.single(file, 1, "", "the manifest must be a mapping (version, name...)")
    lines = LineMap()
    lines.walk(root)
    del root  # the node tree is the largest thing alive while a big manifest loads
    issues = [
        ManifestIssue(file, line, field_path(loc), "duplicate key (the same key appears twice)")
        for loc, line in lines.duplicates
    ]
    try:
        spec = ManifestSpec.model_validate(data)
    except ValidationError as exc:
        issues.extend(_issues_from(exc, file, lines))
        spec = None
    if issues or spec is None:
        raise ManifestError(sorted(issues, key=lambda i: (i.line or 0, i.field)))
    return spec, lines


def load_manifest(
    path: Path | str, *, registry: Mapping[str, ProviderSpec] = PROVIDERS
) -> Manifest:
    """Load, validate and expand the manifest at ``path``.

    Args:
        path: the YAML file; media paths inside it are relative to its directory.
        registry: provider specs by name (tests inject fakes).

    Returns:
        The expanded manifest.

    Raises:
        ManifestError: every problem found, each with file, line and field.
    """
    from pipeline.expand import expand
    from pipeline.upload import check_storage

    path = Path(path)
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError.single(file, None, "", "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError.single(file, None, "", f"cannot read: {exc}") from None
    spec, lines = parse_manifest(text, file)
    shots = expand(spec, lines, path.resolve(), file, registry)
    policies = {name: provider.media for name, provider in registry.items()}
    check_storage(shots, policies, spec.storage is not None, file)
    return Manifest(
        path=path.resolve(),
        name=spec.name,
        shots=tuple(shots),
        scenes=tuple(s.id for s in spec.scenes),
        providers=dict(spec.providers),
        storage=spec.storage,
        downloads=spec.downloads,
        budget=spec.budget,
    )
