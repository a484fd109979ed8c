"""``pipeline review RUN_DIR``: a local web app to review a run as it stands and while it runs.

Scenes in order, one card per take (poster, player, prompt, provider/model, duration, state,
cost, error); takes of a shot side by side with linked play, pause and scrubbing; per take a
pick, a rejection and notes (checkpoint records ``take_picked``, ``take_rejected``,
``note_added``), and re-rolls (``reroll_requested``: a new, paid take the running or next
``pipeline run``/``resume`` submits); live updates from the checkpoint's tail. It binds to
loopback, answers only its own address, and every state-changing request needs the page's
session token (:mod:`pipeline.review.security`).

Modules: ``app`` (the server, :func:`pipeline.review.app.serve`), ``routes`` (HTTP), ``session``
(verdicts, re-rolls, output rebuilds), ``tail`` (following the log), ``views`` (pages and
updates from the templates), ``security``.
"""
