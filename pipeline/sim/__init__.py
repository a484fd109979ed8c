"""Protocol-faithful simulators of the provider APIs (aiohttp applications on 127.0.0.1).

Each module ``pipeline/sim/<provider>.py`` exposes ``make_app(config) -> web.Application`` and
``BASE_PATH`` (what the adapter's ``base_url`` ends with). Shared machinery (ledger, faults,
timing, clips, serving) lives in :mod:`pipeline.sim.common`.
"""
