"""Simulator of the Venice AI video API, served under :data:`BASE_PATH`.

After https://docs.venice.ai/api-reference/endpoint/video/queue (and the quote, retrieve and
complete pages next to it), https://docs.venice.ai/api-reference/endpoint/models/list and
https://docs.venice.ai/guides/media/video-generation .

Routes (fault-injection names in brackets)::

    POST /api/v1/video/quote     [quote]     {"quote": usd}; price = price_per_second x seconds x
                                             resolution factor (the queue charge equals it)
    POST /api/v1/video/queue     [submit]    {model, queue_id} (+ download_url for private models)
    POST /api/v1/video/retrieve  [poll]      JSON PROCESSING while running; video/mp4 bytes when
                                             done (normal models); JSON COMPLETED (private ones)
    POST /api/v1/video/complete  [complete]  {"success": true}; a later retrieve answers 404
    GET  /api/v1/models?type=video [models]  the listed models of the simulator's own table
                                             (:mod:`pipeline.sim.venice.models`) with their
                                             ``model_spec.constraints``; other types: 400
    GET  /v1/share/read/{token}  [fetch]     private download link: no auth, 410 after
                                             ``download_max_gets`` GETs, after DELETE or expiry
    DELETE /v1/share/read/{token} [delete]   revoke the link: 204

Normal models deliver their bytes on the *retrieve* route, so a fault on their download is
injected on ``poll``; ``fetch`` is the private download link.

Behaviour taken from the documentation: Bearer auth (no credentials -> 402 x402 body with a
``PAYMENT-REQUIRED`` header, wrong key -> 401), JSON-only bodies (400), 35 MB body cap (413),
per-model validation with DetailedError bodies, the 409 Seedance face-consent flow (media whose
URL or decoded bytes contain ``FACE``; attested bytes are not asked again), prompts containing
``SimConfig.fail_prompts`` failing on retrieve with 422 ``provider_content_policy`` and a
refund, per-key request limits with ``x-ratelimit-*-requests`` headers, and the error budget
(more than ``error_budget`` failed 4xx per key and model in 30 s -> every request 429 for 30 s).
Choices where the docs are silent are marked [inferred].

Request validation and error answers live in :mod:`pipeline.sim.venice.rules`; the state, limits
and guard middleware in :mod:`pipeline.sim.venice.state`.
"""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Any

import anyio
from aiohttp import web

from pipeline.sim.common import (
    CONFIG,
    LEDGER,
    SimConfig,
    Timeline,
    clip,
    fetch_media,
    new_app,
    origin,
)
from pipeline.sim.venice import rules
from pipeline.sim.venice.models import SIM_MODELS, SimModel
from pipeline.sim.venice.state import (
    BODY,
    STATE,
    Link,
    SimJob,
    VeniceSimOptions,
    VeniceState,
    guard,
)

__all__ = [
    "BASE_PATH",
    "BODY",
    "SHARE_PATH",
    "STATE",
    "Link",
    "SimJob",
    "VeniceSimOptions",
    "VeniceState",
    "make_app",
]

#: What the adapter's ``base_url`` ends with.
BASE_PATH = "/api/v1"
#: Path prefix of private download links (as ``private-share.venice.ai/v1/share/read/...``).
SHARE_PATH = "/v1/share/read"

_MEDIA_NOT_FOUND = "Media could not be found. Request may be invalid, expired, or deleted."


# ----- handlers ----------------------------------------------------------------------------


async def queue(request: web.Request) -> web.Response:
    """``POST /video/queue``: validate, run the consent flow, create and charge the job."""
    state, body = request.app[STATE], request[BODY]
    problem = rules.check_common(body)
    vm = SIM_MODELS.get(str(body.get("model")))
    if problem is None and vm is not None:
        problem = rules.check_params(body, vm, quote=False) or rules.check_media(body, vm)
    consents = body.get("consents")
    if consents == {}:  # attests nothing, as in the queue page's example
        consents = None
    if problem is None and consents is not None and not rules.valid_consents(consents):
        problem = ("consents", "Consent must confirm exactly the three seedance fields as true")
    if problem is not None or vm is None:
        return rules.invalid(*(problem or ("model", "unknown")))
    unusable = await fetch_media(rules.media_items(body))
    if unusable is not None:
        return rules.invalid("media", f"Could not use the media: {unusable}")
    digests, faces = await anyio.to_thread.run_sync(rules.scan, body)
    if vm.face_consent:
        pending = {d: role for d, role in faces.items() if d not in state.attested}
        if pending and consents is None:
            state.consent_requests += 1
            return rules.needs_consent(set(pending.values()))
        if consents is not None:
            state.attested.update(faces)
    return _accept(request, state, body, vm, digests)


def _accept(
    request: web.Request,
    state: VeniceState,
    body: dict[str, Any],
    vm: SimModel,
    digests: list[str],
) -> web.Response:
    seconds = int(str(body["duration"]).removesuffix("s"))
    cost = state.price(body["model"], seconds, body.get("resolution"))
    job = SimJob(
        queue_id=str(uuid.uuid4()),
        model=body["model"],
        prompt=body["prompt"],
        seconds=seconds,
        ratio=str(body.get("aspect_ratio") or "16:9"),
        created=time.time(),
        cost_usd=cost,
        private=vm.private,
    )
    state.jobs[job.queue_id] = job
    answer = {"model": job.model, "queue_id": job.queue_id}
    if vm.private:
        token = secrets.token_urlsafe(18)
        state.links[token] = Link(job.queue_id)
        answer["download_url"] = f"{origin(request)}{SHARE_PATH}/{token}"
    summary = {k: v for k, v in body.items() if k not in rules.FACE_FIELDS and "url" not in k}
    request.app[LEDGER].add(job.queue_id, job.model, {**summary, "media": digests}, cost_usd=cost)
    return web.json_response(answer)


def _job_of(
    state: VeniceState, body: dict[str, Any], extra: frozenset[str]
) -> web.Response | SimJob:
    unknown = sorted(set(body) - {"model", "queue_id"} - extra)
    if unknown:
        return rules.invalid(unknown[0], "Unrecognized key in object")
    if not isinstance(body.get("model"), str) or not isinstance(body.get("queue_id"), str):
        return rules.invalid("queue_id", "model and queue_id are required strings")
    job = state.jobs.get(body["queue_id"])
    if job is None or job.deleted or job.model != body["model"]:
        return rules.error(404, _MEDIA_NOT_FOUND)
    return job


async def retrieve(request: web.Request) -> web.Response:
    """``POST /video/retrieve``: PROCESSING JSON, then bytes / COMPLETED, or an error."""
    state, config = request.app[STATE], request.app[CONFIG]
    body = request[BODY]
    job = _job_of(state, body, frozenset({"delete_media_on_completion"}))
    if isinstance(job, web.Response):
        return job
    timeline = Timeline(job.created, config.latency_s)
    phase = timeline.phase()
    times = {
        "average_execution_time": int(config.latency_s * 1000),
        "execution_duration": int(max(0.0, time.time() - job.created) * 1000),
    }
    guide = state.options.guide_statuses
    if phase != "done":
        status = phase if guide else "PROCESSING"
        return web.json_response({"status": status, **times})
    if config.fail_prompts and config.fail_prompts in job.prompt:
        request.app[LEDGER].refund(job.queue_id)
        return rules.content_policy()
    if state.options.inference_fail_prompts and state.options.inference_fail_prompts in job.prompt:
        return rules.error(500, "Inference failed: the model could not generate this video")
    if job.private:
        return web.json_response({"status": "completed" if guide else "COMPLETED", **times})
    data = await anyio.to_thread.run_sync(clip, job.seconds, job.ratio)
    if body.get("delete_media_on_completion") is True:
        job.deleted = True
    return web.Response(body=data, content_type="video/mp4")


async def complete(request: web.Request) -> web.Response:
    """``POST /video/complete``: delete the job's media; later retrieves answer 404."""
    job = _job_of(request.app[STATE], request[BODY], frozenset())
    if isinstance(job, web.Response):
        return job
    job.deleted = True
    return web.json_response({"success": True})


async def quote(request: web.Request) -> web.Response:
    """``POST /video/quote``: the deterministic price; no job, no charge."""
    state, body = request.app[STATE], request[BODY]
    vm = SIM_MODELS.get(str(body.get("model")))
    if vm is None:
        return rules.invalid("model", f"Unknown or unsupported video model: {body.get('model')!r}")
    problem = rules.check_params(body, vm, quote=True)
    if problem is not None:
        return rules.invalid(*problem)
    seconds = int(str(body["duration"]).removesuffix("s"))
    return web.json_response({"quote": state.price(body["model"], seconds, body.get("resolution"))})


async def models(request: web.Request) -> web.Response:
    """``GET /models?type=video``: the listed video models (auth optional); other types 400."""
    kind = request.query.get("type", "video")
    if kind != "video":
        return rules.invalid("type", f"Invalid enum value {kind!r}; expected 'video'")
    data = [model_entry(ident, vm) for ident, vm in SIM_MODELS.items() if vm.listed]
    return web.json_response({"object": "list", "type": "video", "data": data})


def model_entry(ident: str, vm: SimModel) -> dict[str, Any]:
    """One ``/models`` entry: id, owner and ``model_spec`` with its ``constraints``."""
    constraints: dict[str, Any] = {
        "model_type": vm.model_type,
        "aspect_ratios": list(vm.aspect_ratios),
        "resolutions": list(vm.resolutions),
        "durations": list(vm.durations),
        "audio": vm.audio,
        "audio_configurable": vm.audio_configurable,
        "prompt_character_limit": vm.prompt_limit,
        "audio_input": "audio_url" in vm.media or vm.ref_audio > 0,
        "per_reference_audio": vm.ref_audio > 0,
        "video_input": "video_url" in vm.media or vm.ref_videos > 0,
    }
    if vm.ref_images or vm.ref_videos or vm.ref_audio:
        constraints["max_reference_images"] = vm.ref_images  # [inferred] key name
        constraints["max_reference_videos"] = vm.ref_videos  # [inferred] key name
        constraints["max_reference_audio"] = vm.ref_audio  # [inferred] key name
    if vm.image_limits:  # face and reference images: short side >= 300 px, aspect 0.4-2.5
        constraints["reference_image_min_short_side_pixels"] = 300
        constraints["reference_image_min_aspect_ratio"] = 0.4
        constraints["reference_image_max_aspect_ratio"] = 2.5
    spec = {
        "name": vm.name,
        "privacy": "private" if vm.private else "anonymized",
        "offline": False,
        "traits": [],
        "model_sets": ["audio"] if vm.audio else [],
        "constraints": constraints,
    }
    return {
        "id": ident,
        "type": "video",
        "object": "model",
        "owned_by": "venice.ai",
        "created": 1773964800,
        "model_spec": spec,
    }


async def download(request: web.Request) -> web.Response:
    """``GET <download_url>``: no auth; 410 once used up, revoked or expired."""
    state, config = request.app[STATE], request.app[CONFIG]
    link = state.links.get(request.match_info["token"])
    job = state.jobs.get(link.queue_id) if link is not None else None
    if link is None or job is None:
        return rules.error(404, "Not found")
    done_at = job.created + config.latency_s
    if time.time() < done_at:
        return rules.error(404, "Not ready")  # [inferred]
    if link.revoked or link.gets >= state.options.download_max_gets:
        return rules.error(410, "This link has expired, been used up or been revoked")
    if time.time() > done_at + config.url_ttl_s:
        return rules.error(410, "This link has expired, been used up or been revoked")
    link.gets += 1
    data = await anyio.to_thread.run_sync(clip, job.seconds, job.ratio)
    return web.Response(body=data, content_type="video/mp4")


async def revoke(request: web.Request) -> web.Response:
    """``DELETE <download_url>``: revoke the link; 204 [inferred] (the answer is not documented)."""
    link = request.app[STATE].links.get(request.match_info["token"])
    if link is None:
        return rules.error(404, "Not found")
    link.revoked = True
    return web.Response(status=204)


def make_app(config: SimConfig, **options: Any) -> web.Application:
    """The Venice simulator application.

    Args:
        config: shared simulator settings (key, latency, fail prompts, URL lifetime).
        **options: fields of :class:`VeniceSimOptions` (``queue_per_minute``,
            ``retrieve_per_minute``, ``error_budget``, ``download_max_gets``,
            ``price_per_second``, ``max_body_bytes``, ``guide_statuses``...).

    Raises:
        TypeError: an unknown option.
    """
    app = new_app(config, rules.error_body)
    app.middlewares.append(guard)
    app[STATE] = VeniceState(VeniceSimOptions(**options))
    app.router.add_post(f"{BASE_PATH}/video/quote", quote, name="quote")
    app.router.add_post(f"{BASE_PATH}/video/queue", queue, name="submit")
    app.router.add_post(f"{BASE_PATH}/video/retrieve", retrieve, name="poll")
    app.router.add_post(f"{BASE_PATH}/video/complete", complete, name="complete")
    app.router.add_get(f"{BASE_PATH}/models", models, name="models")
    app.router.add_get(f"{SHARE_PATH}/{{token}}", download, name="fetch")
    app.router.add_delete(f"{SHARE_PATH}/{{token}}", revoke, name="delete")
    return app
