"""The distributed mode: runs in PostgreSQL, shots executed by any number of worker processes.

The only package that imports DBOS Transact (``dbos``); the embedded mode (one process, JSONL
checkpoint) never imports it. The CLI reaches it lazily, for ``run --store``, ``worker``.

- :mod:`.app`: DBOS's configuration, launch and shutdown in one process (one executor).
- :mod:`.liveness`: which executors are alive (a session advisory lock each holds) and the
  recovery of a dead one's workflows by the living.
- :mod:`.queues`: one DBOS queue per provider account (``concurrency`` = ``max_in_flight``,
  ``limiter`` = ``requests_per_minute``), their names and counts.
- :mod:`.intent`: the submit intent and the run's shared budget, committed before a paid call.
- :mod:`.tasks`: what a shot workflow is given (the shot, its settings, where outputs go).
- :mod:`.workflows`: the run and shot workflows (upload, submit, poll, fetch as DBOS steps).
- :mod:`.worker`: a worker process's loop; :mod:`.submitrun`: ``pipeline run --store``.

docs/scale.md is the user's guide.
"""
