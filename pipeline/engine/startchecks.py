"""What must hold before a run's first paid call: keys and base URLs, https media, preflight.

:func:`check_keys` is instant and offline; :func:`wait_for_preflight` makes the free calls of
:mod:`pipeline.engine.preflight`, waiting up to ``--wait`` for what is unreachable.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import anyio

from pipeline.engine.options import PREFLIGHT_RETRY_S, RunOptions, provider_settings
from pipeline.engine.preflight import preflight, render_problems
from pipeline.errors import ManifestError, UsageError
from pipeline.manifest.loader import Manifest

log = logging.getLogger("pipeline")


async def wait_for_preflight(manifest: Manifest, options: RunOptions, run_dir: Path) -> None:
    """Check every service the run needs before the first paid call (pipeline.engine.preflight).

    Waits up to ``options.wait_s`` for what is unreachable (saying so every
    :data:`PREFLIGHT_RETRY_S`), never for a refused key or a wrong setting.

    Raises:
        UsageError: the problems that remain, as text naming each service and what was tried.
    """
    until = time.monotonic() + options.wait_s
    while True:
        problems = await preflight(
            manifest,
            api_keys=options.api_keys,
            base_urls=options.base_urls,
            registry=options.registry,
            simulate=options.simulate,
            run_dir=run_dir,
            storage_access=options.storage_access,
        )
        if not problems:
            return
        left = until - time.monotonic()
        if left <= 0 or any(p.kind != "unreachable" for p in problems):
            hint = "" if options.wait_s else "\n(--wait SECONDS waits for what is unreachable)"
            raise UsageError(render_problems(problems) + hint)
        names = ", ".join(p.subject for p in problems)
        log.warning("waiting for %s to answer (up to %.0f s more): %s", names, left, problems[0])
        await anyio.sleep(min(PREFLIGHT_RETRY_S, left))


def check_keys(manifest: Manifest, options: RunOptions) -> None:
    """Refuse to start when a provider in use has no API key or no base URL.

    Raises:
        ManifestError: naming each missing key variable / ``providers.<name>.base_url``.
    """
    missing = []
    for name in sorted({s.provider for s in manifest.shots}):
        spec = options.registry[name]
        settings = provider_settings(manifest, name, options.base_urls.get(name), options.registry)
        if spec.needs_api_key and not options.api_keys.get(name):
            env = settings.api_key_env or "?"
            missing.append(f"{name}: set the environment variable {env} (or run with --simulate)")
        if spec.needs_api_key and not settings.base_url:
            missing.append(f"{name}: set providers.{name}.base_url to your gateway's URL")
    if not options.simulate:
        missing.extend(plain_http_media(manifest))
    if missing:
        raise ManifestError.single(
            str(manifest.path), None, "providers", "cannot start: " + "; ".join(missing)
        )


def plain_http_media(manifest: Manifest) -> list[str]:
    """Real providers fetch media over https only; plain http is for ``--simulate`` rehearsals."""
    out = []
    storage = manifest.storage
    if storage is not None and (storage.endpoint_url or "").startswith("http://"):
        uses = any(s.provider != "local" and any(a.path for a in s.assets) for s in manifest.shots)
        if uses:
            out.append(
                f"storage.endpoint_url {storage.endpoint_url} is plain http: providers could not "
                "fetch its presigned URLs (use an https endpoint, or --simulate)"
            )
    for shot in manifest.shots:
        for asset in shot.assets:
            if asset.url is not None and asset.url.startswith("http://"):
                out.append(f"{shot.id}: {asset.url.split('?')[0]} is plain http (https only)")
    return out
