"""The manifest's schema (version 1): pydantic models of the YAML and the problem collector.

:class:`ManifestSpec` is the whole document as written; :class:`ManifestHead` is everything but
the shot entries, which :mod:`pipeline.manifest.expand` validates one by one
(:class:`ShotSpec`). :class:`Problems` gathers every problem with its location and turns it into
one :class:`~pipeline.errors.ManifestError` naming file, line and field.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from pipeline.errors import ManifestError, ManifestIssue
from pipeline.manifest.yaml_reader import LineMap as LineMap
from pipeline.manifest.yaml_reader import Loc as Loc
from pipeline.manifest.yaml_reader import read_yaml as read_yaml
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
