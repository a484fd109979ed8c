"""The engine: runs the shots of a manifest through upload, submit, poll and fetch.

:mod:`.runner` plans a run and holds its task group; :mod:`.stages` is one shot's stage machine;
:mod:`.guarded`, :mod:`.limits` and :mod:`.retry` wrap provider calls in gates, rate limits,
retries and a circuit breaker; :mod:`.budget` and :mod:`.pricing` guard spend; :mod:`.plan`,
:mod:`.preflight` and :mod:`.repair` act before a run; :mod:`.progress` shows it.
"""
