"""``RUN_DIR/storyboard.html``: the run as one self-contained page a director can open anywhere.

``write_storyboard(run_dir, manifest, state, picks=...)`` renders, in manifest order, every scene
as a section and every shot id as a card: its poster frame (click it to reveal the player), the
take, prompt, provider/model, duration, a colour-coded state badge, cost, attempts and the error
if any. Takes of one shot sit side by side in one frame; the picked take is marked. A header
gives the run name, the number of shots in each state and the total cost.

The page has no script and no network reference: the CSS is inline, fonts are the system's, and
the only links are relative (``shots/<id>.mp4``, ``posters/<id>.jpg``), so the run directory can
be zipped, copied or served as it is. Every piece of text is escaped (prompts are user input).
Call :func:`pipeline.outputs.posters.ensure_posters` first for the poster frames.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from pipeline._util.fsutil import replacing
from pipeline._util.redaction import redact
from pipeline.journal.state import RunState, ShotRecord
from pipeline.manifest.loader import Manifest
from pipeline.models import Shot, ShotState
from pipeline.outputs.posters import POSTERS

#: The page's file name inside the run directory.
PAGE = "storyboard.html"

_CSS = """
:root{--bg:#0b0c0f;--panel:#14161b;--panel2:#1b1e25;--line:#272b34;--text:#e8e6e1;
--muted:#8d929c;--accent:#f2b544;--done:#3ecf8e;--fail:#ff5d5d;--warn:#f59e0b;--run:#5aa9ff;
--idle:#7c8392;--mono:ui-monospace,"SF Mono",Menlo,Consolas,"DejaVu Sans Mono",monospace}
*{box-sizing:border-box}
html{background:var(--bg);color:var(--text);-webkit-text-size-adjust:100%}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,
sans-serif}
.wrap{max-width:1600px;margin:0 auto;padding:0 clamp(14px,3vw,40px) 64px}
header.top{border-bottom:1px solid var(--line);background:linear-gradient(180deg,#15171d,
var(--bg));margin-bottom:8px}
header.top .wrap{padding-top:28px;padding-bottom:24px}
.eyebrow{font:600 11px/1 var(--mono);letter-spacing:.22em;text-transform:uppercase;
color:var(--accent)}
h1{margin:8px 0 6px;font-size:clamp(26px,4vw,40px);font-weight:700;letter-spacing:-.02em;
overflow-wrap:anywhere}
.sub{color:var(--muted);font-size:13px}
.stats{display:flex;flex-wrap:wrap;gap:8px;margin-top:18px}
.stat{display:flex;align-items:baseline;gap:8px;padding:8px 14px;border:1px solid var(--line);
border-radius:10px;background:var(--panel)}
.stat b{font:700 20px/1 var(--mono)}
.stat span{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.08em}
.stat.cost{margin-left:auto;border-color:#3a3322}
.stat.cost b{color:var(--accent)}
section.scene{margin-top:40px}
.scene-head{display:flex;align-items:center;gap:14px;margin-bottom:16px}
.slate{font:700 12px/1 var(--mono);letter-spacing:.12em;padding:7px 10px;border-radius:6px;
background:var(--text);color:var(--bg)}
.scene-head h2{margin:0;font-size:20px;font-weight:650;overflow-wrap:anywhere}
.scene-head .rule{flex:1;height:1px;background:var(--line)}
.scene-head .n{color:var(--muted);font-size:13px;white-space:nowrap}
.grid{display:grid;gap:18px;grid-template-columns:repeat(auto-fill,minmax(300px,1fr))}
.group{display:flex;flex-direction:column;gap:10px;min-width:0}
.group.takes{padding:12px;border:1px dashed #3a3f4a;border-radius:14px;background:#101217}
.group-head{display:flex;justify-content:space-between;font:600 12px/1.2 var(--mono);
color:var(--muted);letter-spacing:.06em;text-transform:uppercase}
.takes-row{display:grid;gap:12px;grid-template-columns:repeat(auto-fit,minmax(260px,1fr))}
@media (min-width:700px){.span2{grid-column:span 2}}
@media (min-width:1020px){.span3{grid-column:span 3}}
@media (min-width:700px) and (max-width:1019px){.span3{grid-column:span 2}}
.card{display:flex;flex-direction:column;min-width:0;background:var(--panel);
border:1px solid var(--line);border-radius:12px;overflow:hidden}
.card.picked{border-color:var(--accent);box-shadow:0 0 0 1px var(--accent),
0 8px 30px rgba(242,181,68,.12)}
.frame{position:relative;aspect-ratio:16/9;background:#000;display:flex;align-items:center;
justify-content:center;overflow:hidden}
.frame img,.frame video{width:100%;height:100%;object-fit:contain;display:block}
details.player,details.player>summary{display:block;height:100%;width:100%}
details.player>summary{cursor:pointer;list-style:none;position:relative}
details.player>summary::-webkit-details-marker{display:none}
details.player[open]>summary{display:none}
.play{position:absolute;left:50%;top:50%;width:54px;height:54px;margin:-27px 0 0 -27px;
border-radius:50%;background:rgba(10,11,14,.62);border:1px solid rgba(255,255,255,.35);
transition:transform .15s,background .15s}
.play::after{content:"";position:absolute;left:21px;top:16px;border-style:solid;
border-width:11px 0 11px 18px;border-color:transparent transparent transparent #fff}
summary:hover .play{transform:scale(1.08);background:rgba(242,181,68,.85)}
.tag{position:absolute;font:600 11px/1 var(--mono);padding:5px 7px;border-radius:5px;
background:rgba(8,9,12,.75);color:#fff;letter-spacing:.04em}
.tag.tl{left:8px;top:8px}.tag.tr{right:8px;top:8px}.tag.br{right:8px;bottom:8px}
.tag.pick{background:var(--accent);color:#1a1407}
.empty{width:100%;height:100%;display:flex;flex-direction:column;align-items:center;
justify-content:center;gap:6px;color:var(--muted);font:600 12px/1 var(--mono);
letter-spacing:.14em;text-transform:uppercase;background:repeating-linear-gradient(135deg,
#121419 0 14px,#171a20 14px 28px)}
.empty.failed{color:var(--fail);background:repeating-linear-gradient(135deg,#1a1012 0 14px,
#211316 14px 28px)}
.body{padding:12px 14px 14px;display:flex;flex-direction:column;gap:9px;flex:1}
.rehearsal{color:#f5b342;font-weight:600}
.title{display:flex;align-items:center;gap:8px;flex-wrap:wrap}
.id{font:700 14px/1.2 var(--mono);overflow-wrap:anywhere;flex:1;min-width:0}
.badge{font:700 10.5px/1 var(--mono);letter-spacing:.08em;text-transform:uppercase;
padding:5px 8px;border-radius:999px;border:1px solid currentColor;white-space:nowrap}
.s-done{color:var(--done);background:rgba(62,207,142,.1)}
.s-failed{color:var(--fail);background:rgba(255,93,93,.1)}
.s-needs_reconcile{color:var(--warn);background:rgba(245,158,11,.1)}
.s-uploading,.s-submitting,.s-polling,.s-fetching{color:var(--run);background:rgba(90,169,255,.1)}
.s-pending,.s-cancelled{color:var(--idle);background:rgba(124,131,146,.1)}
.prompt{margin:0;color:#cfccc5;font-size:14px;line-height:1.5;overflow-wrap:anywhere}
.meta{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:6px 12px;margin:auto 0 0;
padding-top:10px;border-top:1px solid var(--line);font-size:12.5px}
.meta div{min-width:0}
.meta .wide{grid-column:1/-1}
.meta .wide dd{color:var(--muted)}
.meta dt{color:var(--muted);font-size:10.5px;text-transform:uppercase;letter-spacing:.1em}
.meta dd{margin:1px 0 0;font-family:var(--mono);overflow-wrap:anywhere}
.meta dd.unknown{color:var(--muted);font-style:italic}
.error{margin:0;padding:8px 10px;border-radius:8px;background:rgba(255,93,93,.08);
border:1px solid rgba(255,93,93,.35);color:#ffb4b4;font:12px/1.45 var(--mono);
overflow-wrap:anywhere;white-space:pre-wrap}
footer{margin-top:48px;color:var(--muted);font-size:12px;text-align:center}
@media (max-width:520px){body{font-size:14px}.stat.cost{margin-left:0}
.grid{grid-template-columns:minmax(0,1fr)}.takes-row{grid-template-columns:minmax(0,1fr)}
.group.takes{padding:10px}}
"""


@dataclass(frozen=True, slots=True)
class _Card:
    shot: Shot
    rec: ShotRecord | None
    state: ShotState
    poster: str | None
    video: str | None
    picked: bool


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _money(usd: float) -> str:
    return f"${usd:,.2f}" if usd >= 0.01 or usd == 0 else f"${usd:.4f}"


def _cost(rec: ShotRecord | None) -> tuple[str, float | None]:
    """Display text and known dollar amount (None when unknown or nothing was spent)."""
    if rec is None or (rec.attempt == 0 and rec.job is None):
        return "nothing spent", None
    if rec.state == ShotState.FAILED and rec.charged == "no":
        return "not charged", None  # rejected or refunded: a quote or estimate was not spent
    if rec.cost_usd is not None:
        return _money(rec.cost_usd), rec.cost_usd
    if rec.est_usd is not None:
        return f"≈{_money(rec.est_usd)} est.", rec.est_usd
    return "unknown", None


def _media(run_dir: Path, shot_id: str, rec: ShotRecord | None) -> tuple[str | None, str | None]:
    """Relative links (URL-quoted) of the poster and the video, when the files exist."""
    poster = f"{POSTERS}/{shot_id}.jpg"
    video = rec.output if rec is not None and rec.state == ShotState.DONE else None
    if video is not None and not (run_dir / video).is_file():
        video = None
    return (
        quote(poster) if (run_dir / poster).is_file() else None,
        quote(video) if video is not None else None,
    )


def _frame(card: _Card) -> str:
    shot = card.shot
    tags = f'<span class="tag br">{_e(shot.duration)} s · {_e(shot.aspect_ratio)}</span>'
    if shot.take is not None:
        cls = "tag tr pick" if card.picked else "tag tr"
        label = f"★ T{shot.take} · pick" if card.picked else f"T{shot.take}"
        tags += f'<span class="{cls}">{_e(label)}</span>'
    if card.video is None:
        cls = "empty failed" if card.state == ShotState.FAILED else "empty"
        label = _e(card.state.value.replace("_", " "))
        return (
            f'<div class="frame"><div class="{cls}">no clip<small>{label}</small></div>{tags}</div>'
        )
    poster_attr = f' poster="{_e(card.poster)}"' if card.poster else ""
    still = (
        f'<img src="{_e(card.poster)}" alt="{_e(shot.id)} poster frame" loading="lazy">'
        if card.poster
        else '<div class="empty">poster missing</div>'
    )
    return (
        '<div class="frame"><details class="player"><summary title="Play">'
        f'{still}<span class="play" aria-hidden="true"></span>{tags}</summary>'
        f'<video controls preload="none" playsinline src="{_e(card.video)}"{poster_attr}>'
        f'<a href="{_e(card.video)}">{_e(card.video)}</a></video></details></div>'
    )


def _meta(label: str, value: str, *, unknown: bool = False, wide: bool = False) -> str:
    cls = ' class="unknown"' if unknown else ""
    div = '<div class="wide">' if wide else "<div>"
    return f"{div}<dt>{_e(label)}</dt><dd{cls}>{_e(value)}</dd></div>"


def _card(card: _Card) -> str:
    shot, rec, state = card.shot, card.rec, card.state
    cost_text, _ = _cost(rec)
    attempts = rec.attempt if rec is not None else 0
    model = (
        f"{rec.provider}/{rec.model}" if rec and rec.provider else f"{shot.provider}/{shot.model}"
    )
    meta = "".join(
        [
            _meta("provider / model", model),
            _meta("duration", f"{shot.duration} s"),
            _meta("attempts", str(attempts) if attempts else "none yet"),
            _meta("cost", cost_text, unknown=cost_text == "unknown"),
            _meta("job", rec.job.job_id if rec and rec.job else "—", wide=True),
        ]
    )
    error = f'<p class="error">{_e(redact(rec.error))}</p>' if rec and rec.error else ""
    picked = " picked" if card.picked else ""
    return (
        f'<article class="card{picked}" id="{_e(shot.id)}" data-shot="{_e(shot.id)}" '
        f'data-state="{_e(state.value)}">{_frame(card)}<div class="body"><div class="title">'
        f'<span class="id">{_e(shot.id)}</span>'
        f'<span class="badge s-{_e(state.value)}">{_e(state.value.replace("_", " "))}</span>'
        f'</div><p class="prompt">{_e(shot.prompt)}</p>{error}<dl class="meta">{meta}</dl>'
        "</div></article>"
    )


def _group(name: str, cards: Sequence[_Card]) -> str:
    inner = "".join(_card(c) for c in cards)
    if len(cards) == 1 and cards[0].shot.take is None:
        return f'<div class="group">{inner}</div>'
    span = f" span{min(len(cards), 3)}" if len(cards) > 1 else ""
    picked = next((c.shot.take for c in cards if c.picked), None)
    note = f"pick: take {picked}" if picked is not None else "no pick yet"
    return (
        f'<div class="group takes{span}"><div class="group-head"><span>{_e(name)} · '
        f"{len(cards)} takes</span><span>{_e(note)}</span></div>"
        f'<div class="takes-row">{inner}</div></div>'
    )


def _scene(index: int, scene: str, cards: Sequence[_Card]) -> str:
    groups: dict[str, list[_Card]] = {}
    for c in cards:
        groups.setdefault(c.shot.name, []).append(c)
    body = "".join(_group(f"{scene}-{name}", g) for name, g in groups.items())
    count = f"{len(groups)} shots · {len(cards)} takes"
    return (
        f'<section class="scene" id="scene-{_e(scene)}"><div class="scene-head">'
        f'<span class="slate">SC {index:02d}</span><h2>{_e(scene)}</h2><span class="rule"></span>'
        f'<span class="n">{_e(count)}</span></div><div class="grid">{body}</div></section>'
    )


def _header(name: str, manifest: Manifest, cards: Sequence[_Card], *, simulated: bool) -> str:
    tally: dict[ShotState, int] = {}
    known, priced, unknown = 0.0, 0, 0
    for c in cards:
        tally[c.state] = tally.get(c.state, 0) + 1
        text, usd = _cost(c.rec)
        known += usd or 0.0
        priced += usd is not None
        unknown += text == "unknown"
    stats = [f'<div class="stat"><b>{len(cards)}</b><span>takes</span></div>']
    for st in ShotState:
        if tally.get(st):
            stats.append(
                f'<div class="stat"><b class="s-{_e(st.value)}" style="background:none">'
                f"{tally[st]}</b><span>{_e(st.value.replace('_', ' '))}</span></div>"
            )
    total = _money(known)
    if unknown:  # never show $0 for what nobody priced
        total = f"{total} + {unknown} unpriced" if priced else f"unknown ({unknown} unpriced)"
    stats.append(f'<div class="stat cost"><b>{_e(total)}</b><span>total cost</span></div>')
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    shots = len({(c.shot.scene, c.shot.name) for c in cards})
    sub = f"{len(manifest.scenes)} scenes · {shots} shots · {len(cards)} takes · generated {when}"
    eyebrow = "Storyboard"
    if simulated:  # a rehearsal's clips come from simulators: never mistaken for real takes
        eyebrow = (
            'Storyboard · <span class="rehearsal">rehearsal (--simulate): simulated clips</span>'
        )
    return (
        f'<header class="top"><div class="wrap"><div class="eyebrow">{eyebrow}</div>'
        f'<h1>{_e(name)}</h1><div class="sub">{_e(sub)}</div>'
        f'<div class="stats">{"".join(stats)}</div></div></header>'
    )


def render_storyboard(
    run_dir: Path,
    manifest: Manifest,
    state: RunState,
    *,
    picks: Mapping[str, int] | None = None,
) -> str:
    """The page as a string (see :func:`write_storyboard`); reads nothing but file existence."""
    picks = picks or {}
    cards: list[_Card] = []
    for shot in manifest.shots:
        rec = state.shots.get(shot.id)
        poster, video = _media(run_dir, shot.id, rec)
        pick = picks.get(f"{shot.scene}-{shot.name}")
        cards.append(
            _Card(
                shot=shot,
                rec=rec,
                state=rec.state if rec is not None else ShotState.PENDING,
                poster=poster,
                video=video,
                picked=shot.take is not None and pick == shot.take,
            )
        )
    by_scene: dict[str, list[_Card]] = {}
    for c in cards:
        by_scene.setdefault(c.shot.scene, []).append(c)
    name = manifest.name
    sections = "".join(_scene(i, s, by_scene[s]) for i, s in enumerate(by_scene, start=1))
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="color-scheme" content="dark">'
        f"<title>{_e(name)} · storyboard</title><style>{_CSS}</style></head><body>"
        f"{_header(name, manifest, cards, simulated=bool(state.simulated))}"
        f'<main class="wrap">{sections}</main>'
        f'<footer class="wrap">{_e(name)} · written by pipeline from checkpoint.jsonl</footer>'
        "</body></html>\n"
    )


def write_storyboard(
    run_dir: Path,
    manifest: Manifest,
    state: RunState,
    *,
    picks: Mapping[str, int] | None = None,
) -> Path:
    """Write ``RUN_DIR/storyboard.html`` atomically (temporary file, fsync, rename).

    Args:
        run_dir: the run directory; links in the page are relative to it.
        manifest: gives the cards and their order (scenes and shots in manifest order).
        state: the replayed checkpoint; a shot absent from it is shown as ``pending``.
        picks: ``"<scene>-<shot>"`` -> chosen take number (``picks.json``), marked on the page.

    Returns:
        The page's path.

    Raises:
        OSError: the page cannot be written.
    """
    page = render_storyboard(run_dir, manifest, state, picks=picks)
    dest = run_dir / PAGE
    with replacing(dest, mode=0o644) as tmp:  # 0644: a web server must read it
        tmp.write_text(page, encoding="utf-8")
    return dest
