"""The HTML pages' templates and assets: Jinja2 templates and CSS/JS files shipped as package data.

``pipeline/templates/*.html.j2`` are rendered with autoescaping on (every text a page shows is
escaped; prompts and notes are user input) and undefined names are errors. The CSS and JS are
real files in ``pipeline/assets/``: the static storyboard page inlines its CSS (it stays one
file), the review app serves them (:mod:`pipeline.review`).
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup

from pipeline.outputs.cards import money

#: The assets a page may use (the review app serves exactly these).
ASSETS = frozenset({"storyboard.css", "review.css", "review.js"})


@functools.cache
def environment() -> jinja2.Environment:
    """The templates' environment (autoescaping, strict undefined names, ``money`` filter)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pipeline", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = money
    return env


def asset(name: str) -> str:
    """The text of ``pipeline/assets/<name>``.

    Raises:
        KeyError: ``name`` is not one of :data:`ASSETS`.
    """
    if name not in ASSETS:
        raise KeyError(name)
    return (resources.files("pipeline") / "assets" / name).read_text(encoding="utf-8")


def inline(name: str) -> Markup:
    """An asset to put inside a ``<style>``/``<script>`` element of a page as it is.

    Raises:
        KeyError: as :func:`asset`.
        ValueError: the text would end its element early.
    """
    text = asset(name)
    if "</" in text:
        raise ValueError(f"{name} contains '</' and cannot be inlined")
    return Markup(text)


def render(template: str, **context: Any) -> str:
    """Render ``pipeline/templates/<template>`` with ``context``.

    Raises:
        jinja2.TemplateError: the template is missing or uses an undefined name (a bug).
    """
    return environment().get_template(template).render(**context)
