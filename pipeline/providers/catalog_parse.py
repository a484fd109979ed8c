"""Parsing the providers' model lists (Venice, seedance2.ink, OpenAI-style gateways)."""

from __future__ import annotations

from typing import Any

from pipeline.errors import PipelineError
from pipeline.providers.venice.models import DEFAULT_PROMPT_LIMIT

#: One model as a models endpoint described it: capability fields found (None: ids only).
Found = dict[str, Any] | None


class CatalogError(PipelineError):
    """A catalog could not be fetched, parsed or cached; the message is one line, key-free."""


def _entries(payload: Any) -> list[Any]:
    data = payload.get("data") if isinstance(payload, dict) else payload
    if not isinstance(data, list):
        raise CatalogError("unexpected answer: no list of models in 'data'")
    return data


def _strings(value: Any) -> list[str] | None:
    return [str(v) for v in value if isinstance(v, str | int)] if isinstance(value, list) else None


def _durations(value: Any) -> list[int] | None:
    """Whole seconds from ``[5, "10s", "auto"]`` (values without a length are dropped)."""
    if not isinstance(value, list):
        return None
    out = []
    for item in value:
        text = str(item).strip().lower().removesuffix("s")
        if not isinstance(item, bool) and text.isdigit() and int(text) > 0:
            out.append(int(text))
    return out


def parse_venice(payload: Any) -> dict[str, Found]:
    """Venice ``GET /models?type=video`` -> ``{id: fields}``.

    Fields (when the constraints have them): ``durations`` (seconds), ``aspect_ratios``,
    ``resolutions``, ``audio``, ``audio_configurable``, ``model_type`` and ``max_prompt_chars``
    (``prompt_character_limit``, 2500 when absent). A model without constraints maps to None.
    https://docs.venice.ai/api-reference/endpoint/models/list

    Raises:
        CatalogError: the answer has no ``data`` list.
    """
    out: dict[str, Found] = {}
    for entry in _entries(payload):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            continue
        spec = entry.get("model_spec")
        cons = spec.get("constraints") if isinstance(spec, dict) else None
        if not isinstance(cons, dict) or not cons:
            out[entry["id"]] = None
            continue
        fields: dict[str, Any] = {}
        for key, value in (
            ("durations", _durations(cons.get("durations"))),
            ("aspect_ratios", _strings(cons.get("aspect_ratios"))),
            ("resolutions", _strings(cons.get("resolutions"))),
        ):
            if value is not None:
                fields[key] = value
        for key in ("audio", "audio_configurable"):
            if isinstance(cons.get(key), bool):
                fields[key] = cons[key]
        if isinstance(cons.get("model_type"), str):
            fields["model_type"] = cons["model_type"]
        limit = cons.get("prompt_character_limit")
        ok = isinstance(limit, int) and not isinstance(limit, bool) and limit > 0
        fields["max_prompt_chars"] = limit if ok else DEFAULT_PROMPT_LIMIT
        out[entry["id"]] = fields
    return out


def parse_seedance2(payload: Any) -> dict[str, Found]:
    """seedance2.ink ``GET /api/open/v1/models`` -> ``{id: fields}`` (durations, ratios...).

    Raises:
        CatalogError: ``success`` is false, or there is no ``data`` list.
    """
    if isinstance(payload, dict) and payload.get("success") is False:
        error = payload.get("error")
        said = error.get("message") if isinstance(error, dict) else error
        raise CatalogError(f"the provider refused: {str(said or 'success: false')[:200]}")
    out: dict[str, Found] = {}
    for entry in _entries(payload):
        ident = entry.get("id") or entry.get("model") if isinstance(entry, dict) else entry
        if not isinstance(ident, str) or not ident:
            continue
        fields: dict[str, Any] = {}
        if isinstance(entry, dict):
            for key, value in (
                ("durations", _durations(entry.get("durations"))),
                ("aspect_ratios", _strings(entry.get("aspectRatios", entry.get("aspect_ratios")))),
                ("resolutions", _strings(entry.get("resolutions"))),
            ):
                if value is not None:
                    fields[key] = value
        out[ident] = fields or None
    return out


def parse_openai_list(payload: Any) -> dict[str, Found]:
    """An OpenAI model list ``{"object": "list", "data": [{"id"}]}`` -> ``{id: None}`` (ids only).

    Raises:
        CatalogError: there is no ``data`` list.
    """
    out: dict[str, Found] = {}
    for entry in _entries(payload):
        ident = entry.get("id") if isinstance(entry, dict) else entry
        if isinstance(ident, str) and ident:
            out[ident] = None
    return out
