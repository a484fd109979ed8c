"""Pure codec of the seedance2.ink Open API (seedance2.md §2): capabilities and request bodies.

No I/O here. The I/O shell (:mod:`pipeline.providers.seedance2.adapter`) sends what
:func:`build_submit` builds and feeds the JSON it receives to
:mod:`pipeline.providers.seedance2.answers` (``parse_submit``, ``parse_status``,
``parse_error``); these raise :class:`~pipeline.providers.codec_errors.ProviderRefused` for a
``success: false`` envelope (the envelope is checked before anything else,
docs/providers/seedance2.md §2.6 quirk 4) and
:class:`~pipeline.providers.codec_errors.MalformedAnswer` for anything that is not the
documented shape.

Wire shapes (camelCase, docs/providers/seedance2.md §2.1/§2.3/§2.4 [documented])::

    POST /api/open/v1/video/generations
      {"model", "prompt", "mediaUrls"?, "aspectRatio"?, "duration"? (int), "resolution"?,
       "webhookUrl"?, "metadata"?}
      -> {"success": true, "requestId": "req_…", "status": "queued", "creditsCharged": 40}
    GET /api/open/v1/video/generations/{requestId}
      -> {"success": true, "requestId", "status", "model", "prompt", "duration", "aspectRatio",
          "output": {"type": "video", "url": "https://pub-….r2.dev/…mp4"} | null,
          "error": {"code", "message"} | null}
    errors: {"success": false, "error": {"code": "unauthorized", "message": "Invalid API key"}}

Provider facts cite ``[<provider>.md §n]``, a section of ``docs/providers/<provider>.md``
(its heading says whether the provider documents it or it was seen in real code);
``[inferred]`` marks a choice no source confirms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, urlsplit

from pipeline._util.redaction import redact_provider_text as redact
from pipeline.models import MediaRef, MediaRole, ModelCaps, Shot

NAME = "seedance2"
#: Default base URL; the documented paths live under :data:`API_PREFIX` [seedance2.md §2.1].
DEFAULT_BASE_URL = "https://www.seedance2.ink"
API_PREFIX = "/api/open/v1"
SUBMIT_PATH = "video/generations"
#: ``mediaUrls`` takes 1-5 URLs [seedance2.md §2.3].
MAX_MEDIA_URLS = 5


# ----- capabilities -----------------------------------------------------------------------------

_RATIOS = ("16:9", "9:16", "1:1")  # [seedance2.md §2.3 aspectRatio]
_RESOLUTIONS = ("480p", "720p", "1080p")  # [seedance2.md §2.3 resolution: all three models]


def _caps(durations: tuple[int, ...]) -> ModelCaps:
    return ModelCaps(
        durations=durations,
        aspect_ratios=_RATIOS,
        resolutions=_RESOLUTIONS,
        max_prompt_chars=2000,  # [inferred] length limit not documented (§2.3); a conservative pick
        first_frame=True,  # [seedance2.md §2.3 image-to-video page: 1 image -> first frame]
        end_frame=True,  # [seedance2.md §2.3: 2 images -> first + last frame]
        # mediaUrls holds 1-5 items of any documented type [seedance2.md §2.3]; the total (frames
        # included)
        # is enforced by check() below, since ModelCaps counts each kind on its own.
        max_reference_images=MAX_MEDIA_URLS,
        # [seedance2.md §2.3 video .mp4/.mov/.m4v: motion/shot]
        max_reference_videos=MAX_MEDIA_URLS,
        max_reference_audio=MAX_MEDIA_URLS,  # [seedance2.md §2.3 audio .mp3/.wav: rhythm]
        requires_image=False,  # [seedance2.md §2.2: T2V = same POST without mediaUrls]
        audio=False,  # [inferred] no audio switch is documented
    )


#: Capability table per model id [seedance2.md §2.3 model/duration rows; §2.6 quirk 3].
MODELS: Mapping[str, ModelCaps] = MappingProxyType(
    {
        "seedance-2.0": _caps(tuple(range(4, 16))),  # 4-15 s [seedance2.md §2.3]
        "seedance-2.0-fast": _caps(tuple(range(4, 16))),  # 4-15 s [seedance2.md §2.3]
        "seedance-1.5-pro": _caps((5, 10)),  # 5 or 10 s only [seedance2.md §2.3, §2.6 quirk 3]
    }
)
DEFAULT_MODEL = "seedance-2.0"


def check(shot: Shot, caps: ModelCaps) -> list[tuple[str, str]]:
    """Offline rules :class:`ModelCaps` cannot express (a ``ShotCheck``, see providers/base.py).

    - first frame + end frame + references together are at most 5 ``mediaUrls`` [seedance2.md §2.3];
    - an end frame needs a first frame: the mode is inferred from the order of the media, so a
      lone end frame would be taken as a first frame [seedance2.md §2.3 image-to-video page];
    - ``data:`` URLs are refused [seedance2.md §2.6 quirk 2].

    Returns:
        ``(field, message)`` pairs; empty when the shot is fine.
    """
    issues: list[tuple[str, str]] = []
    count = len(shot.assets)
    if count > MAX_MEDIA_URLS:
        issues.append(
            (
                "references",
                f"seedance2.ink takes at most {MAX_MEDIA_URLS} mediaUrls (first frame + end "
                f"frame + references); this shot has {count}",
            )
        )
    if shot.end_image is not None and shot.image is None:
        issues.append(
            ("end_image", "seedance2.ink needs a first frame (`image`) before an end frame")
        )
    for asset in shot.assets:
        if asset.url is not None and asset.url.lower().startswith("data:"):
            issues.append(("references", "seedance2.ink refuses data: URLs; use https URLs"))
            break
    return issues


def media_url_problem(url: str, *, allow_http: bool = False) -> str | None:
    """Why ``url`` cannot go into ``mediaUrls`` (None: it can).

    Only public https URLs are accepted and ``data:`` URLs are refused [seedance2.md §2.3, §2.6
    quirk 2]; ``allow_http`` admits plain http (the loopback simulators in ``--simulate`` mode).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "data":
        return "seedance2.ink takes no data: URLs in mediaUrls (seedance2.md §2.6); use https"
    if parts.hostname and (scheme == "https" or (scheme == "http" and allow_http)):
        return None
    return f"seedance2.ink takes only public https URLs in mediaUrls (§2.3): {redact(url)}"


# ----- requests ---------------------------------------------------------------------------------

_ROLE_RANK = {MediaRole.IMAGE: 0, MediaRole.END_IMAGE: 1}


def api_base(base_url: str) -> str:
    """The URL the documented paths are appended to: ``base_url`` + ``/api/open/v1``.

    A ``base_url`` that already ends with ``/api/open/v1`` is used as is.
    """
    base = base_url.rstrip("/")
    return base if base.endswith(API_PREFIX) else base + API_PREFIX


def task_path(request_id: str) -> str:
    """Path of a task's status resource (``requestId`` percent-encoded) [seedance2.md §2.2]."""
    return f"{SUBMIT_PATH}/{quote(request_id, safe='')}"


def cancel_path(request_id: str) -> str:
    """Path of a task's cancel action [seedance2.md §2.2]."""
    return f"{task_path(request_id)}/cancel"


def order_media(media: Sequence[MediaRef]) -> list[MediaRef]:
    """First frame, then end frame, then references in their given order [seedance2.md §2.3]."""
    return sorted(media, key=lambda ref: _ROLE_RANK.get(ref.role, 2))


def build_submit(
    shot: Shot, media: Sequence[MediaRef], *, key: str | None = None
) -> dict[str, Any]:
    """The JSON body of ``POST /api/open/v1/video/generations`` [seedance2.md §2.3].

    ``duration`` is an integer (§2.6 quirk 1); ``mediaUrls`` is present only with media (T2V vs
    I2V is decided by its presence, quirk 2); ``key`` goes into ``metadata.client_ref`` (metadata
    is stored and echoed [documented]). ``shot.extra`` is merged last and verbatim (e.g.
    ``webhookUrl``);
    a ``metadata`` mapping in it is merged with the client reference. ``shot.seed`` and
    ``shot.audio`` have no documented field and are not sent.

    Returns:
        A JSON-serialisable dict (camelCase keys).
    """
    body: dict[str, Any] = {
        "model": shot.model,
        "prompt": shot.prompt,
        "aspectRatio": shot.aspect_ratio,
        "duration": int(shot.duration),
    }
    if shot.resolution:
        body["resolution"] = shot.resolution
    urls = [ref.url for ref in order_media(media)]
    if urls:
        body["mediaUrls"] = urls
    extra = dict(shot.extra)
    metadata: dict[str, Any] = {}
    extra_meta = extra.pop("metadata", None)
    if isinstance(extra_meta, Mapping):
        metadata.update(extra_meta)
    if key:
        metadata["client_ref"] = key
    body.update(extra)
    if metadata:
        body["metadata"] = metadata
    return body


# ----- responses --------------------------------------------------------------------------------


#: Credits per second of video per model: seedance-2.0's 8/s is the documented price (40 credits
#: for text-to-video 5 s 720p, 64 with media) [seedance2.md §2.3]; the other two rates are
#: [inferred].
CREDITS_PER_SECOND: Mapping[str, float] = {
    "seedance-2.0": 8.0,
    "seedance-2.0-fast": 5.0,
    "seedance-1.5-pro": 6.0,
}
#: Price factor per resolution [inferred] and with media (image-to-video: 64 / 40 = 1.6)
#: [seedance2.md §2.3].
RESOLUTION_FACTOR: Mapping[str, float] = {"480p": 0.6, "720p": 1.0, "1080p": 1.5}
MEDIA_FACTOR = 1.6


def credits_for(model: str, duration: int, resolution: str, with_media: bool) -> int:
    """Credits a task costs, e.g. 40 for seedance-2.0 text-to-video 5 s 720p [seedance2.md §2.3].

    Raises:
        KeyError: unknown model or resolution.
    """
    amount = CREDITS_PER_SECOND[model] * duration * RESOLUTION_FACTOR[resolution]
    return math.ceil(amount * (MEDIA_FACTOR if with_media else 1.0) - 1e-9)


def estimate_credits(shot: Shot) -> float | None:
    """The credits ``shot`` will be charged at submit (None for a model without a price)."""
    try:
        return float(
            credits_for(shot.model, shot.duration, shot.resolution or "720p", bool(shot.assets))
        )
    except KeyError:
        return None
