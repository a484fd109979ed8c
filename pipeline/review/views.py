"""What the review app sends: the page, and the updates its server-sent events carry.

Both are rendered from the same templates as the static page (``pipeline/templates/``): the
page is ``review.html.j2``; an update holds, for each shot whose takes changed, the HTML of its
group (``_board.html.j2``'s ``group`` macro) with its takes' ids, so the page can patch the cards
in place (a playing video keeps playing) or replace a group whose takes changed (a re-roll).
"""

from __future__ import annotations

from typing import Any

from markupsafe import Markup

from pipeline.manifest.takes import pick_key
from pipeline.models import ShotState
from pipeline.outputs.cards import Board, Group, board
from pipeline.outputs.pages import environment, render
from pipeline.review.session import Session
from pipeline.review.tail import Changes


def current(session: Session) -> Board:
    """The board of the run as it stands."""
    return board(session.run_dir, session.manifest, session.tail.state, session.picks())


def page(session: Session, token: str) -> str:
    """The review page (the session ``token`` embedded for its state-changing requests)."""
    return render(
        "review.html.j2",
        board=current(session),
        token=token,
        version=session.tail.version,
        states=[s.value for s in ShotState],
        budget=session.budget_line(),
    )


def _macros() -> Any:
    return environment().get_template("_board.html.j2").module


def group_html(group: Group) -> Markup:
    """One shot's group of take cards, as the app shows it."""
    html: Markup = _macros().group(group, True)
    return html


def update(session: Session, changes: Changes) -> dict[str, Any]:
    """The update for ``changes`` (shot ids; None: all), as JSON values.

    Returns:
        ``{"version", "stats" (HTML), "budget", "outputs", "outputs_error", "groups":
        [{"key", "takes": [ids], "html"}]}``.
    """
    view = current(session)
    keys: set[str] | None = None
    if changes is not None:
        by_id = {s.id: pick_key(s) for s in session.manifest.shots}
        keys = {by_id[sid] for sid in changes if sid in by_id}
    groups = [
        {"key": g.key, "takes": [c.id for c in g.cards], "html": str(group_html(g))}
        for scene in view.scenes
        for g in scene.groups
        if keys is None or g.key in keys
    ]
    return {
        "version": session.tail.version,
        "stats": str(_macros().stats(view)),
        "budget": session.budget_line(),
        "outputs": session.outputs,
        "outputs_error": session.outputs_error,
        "groups": groups,
    }


def state_json(session: Session) -> dict[str, Any]:
    """``GET /api/state``: every take's card as JSON values, the picks and the version."""
    view = current(session)
    return {
        "run": view.name,
        "version": session.tail.version,
        "outputs": session.outputs,
        "picks": session.picks(),
        "queued": len(session.pending()),
        "cards": [c.as_json() for c in view.cards],
    }
