"""``newapi``'s offline facts: models, defaults and checks (``pipeline validate``).

They live apart from the adapter (:mod:`pipeline.providers.newapi.adapter`) so that validating
a manifest imports no HTTP client; the spec's factory imports the adapter when a run builds it.
"""

from __future__ import annotations

from pipeline.models import ModelCaps, Shot
from pipeline.providers.base import MediaPolicy, Provider, ProviderContext, ProviderSpec
from pipeline.providers.newapi.codec import MODELS, NAME, OFFPEAK_SUFFIX
from pipeline.settings import ProviderSettings

#: Largest local image sent inline as a ``data:`` URL [inferred] (object-storage uploads come
#: later).
DATA_URL_MAX_BYTES = 10 * 1024**2
#: Image types sent inline [I: Vidu upstream accepts Base64 PNG/JPEG/WebP images].
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp"})


def _factory(ctx: ProviderContext) -> Provider:
    """The adapter for a run (imports it: aiohttp and the I/O shell)."""
    from pipeline.providers.newapi.adapter import NewApiProvider

    return NewApiProvider(ctx)


def _model_for(model: str, resolution: str) -> str:
    for res in ("540p", "720p", "1080p"):
        candidate = model.replace(f"-{res}", f"-{resolution}")
        if candidate != model and candidate in MODELS:
            return candidate
    same = sorted(m for m, caps in MODELS.items() if resolution in caps.resolutions)
    return " or ".join(same) or "a model that supports it"


def check(shot: Shot, caps: ModelCaps) -> list[tuple[str, str]]:
    """Rules :class:`ModelCaps` cannot express (``pipeline validate``).

    - the resolution is chosen by the model id (§3.5.6): a different ``resolution`` names the
      model to use instead;
    - ``-offpeak`` models refuse an explicit ``audio: false`` (off-peak is unavailable without
      audio); unset audio is the gateway's default, as in its documented off-peak example;
    - an end frame needs a first frame (Vidu start-end2video takes both) [inferred].
    """
    issues: list[tuple[str, str]] = []
    fixed = caps.resolutions[0] if caps.resolutions else None
    if shot.resolution and fixed and shot.resolution != fixed:
        issues.append(
            (
                "resolution",
                f"resolution is set by the model id: use {_model_for(shot.model, shot.resolution)}"
                f" for {shot.resolution}",
            )
        )
    if shot.model.endswith(OFFPEAK_SUFFIX) and shot.audio is False:
        issues.append(("audio", "off-peak models need audio (leave it unset or true)"))
    if shot.end_image is not None and shot.image is None:
        issues.append(("end_image", "an end frame needs a first frame (image) as well"))
    for name, asset in (("image", shot.image), ("end_image", shot.end_image)):
        if asset is not None and asset.mime is not None and asset.mime not in IMAGE_TYPES:
            issues.append((name, f"{asset.mime} is not accepted: Vidu takes PNG, JPEG or WebP"))
    if any(a.mime is not None and a.mime not in IMAGE_TYPES for a in shot.references):
        issues.append(("references", "Vidu takes PNG, JPEG or WebP reference images only"))
    return issues


SPEC = ProviderSpec(
    name=NAME,
    factory=_factory,
    models=MODELS,
    defaults=ProviderSettings(
        base_url=None,  # every gateway has its own host: the user must set it
        api_key_env="NEWAPI_API_KEY",
        max_in_flight=4,  # [inferred] admin-configurable per gateway (§3.4)
        requests_per_minute=30.0,  # [inferred] §3.4: limits exist, values are per gateway
        polls_per_minute=120.0,  # [inferred]
        poll_min_s=5.0,  # [inferred] Vidu Q3 jobs take minutes
        poll_max_s=30.0,  # [inferred]
        poll_deadline_s=3600.0,  # [inferred]
    ),
    # Local images inline as data URLs [I: Vidu upstream accepts Base64 images]; larger
    # requests go through object storage as presigned https URLs.
    media=MediaPolicy(data_urls=True, max_inline_bytes=DATA_URL_MAX_BYTES, inline_kinds=("image",)),
    needs_api_key=True,
    check=check,
    default_model="viduq3p-720p",
)
