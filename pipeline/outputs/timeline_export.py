"""``pipeline export``: a run's timeline as OTIO, a CMX 3600 EDL, FCP 7 XML or FCPXML.

The timeline of :mod:`pipeline.outputs.timeline` goes through OpenTimelineIO's adapters
(``otio_json``, and the ``otio-cmx3600-adapter``, ``otio-fcp-adapter`` and
``otio-fcpx-xml-adapter`` plugins), after what each format needs:

- ``otio``: the timeline as it is (every clip at its file's own rate);
- ``edl``: the chosen track only (CMX 3600 has one video track), one rate for the whole list
  (:func:`editorial_rate` of the timeline's), clip names are the videos' file names (so Resolve
  and Premiere relink by name), unique reel names of at most 8 characters, each scene a ``LOC``
  marker on its first clip, and ``* SHOT:``, ``* PROMPT:``, ``* PROVIDER:`` comments per event;
- ``fcp7xml``: every track (the chosen one on top), clips conformed to an SMPTE rate, the
  scenes as sequence markers, and the shot in each clip's ``logginginfo`` (description: the
  prompt; scene; shottake: the take; lognote: shot, provider, model, seed);
- ``fcpxml``: the chosen takes in the primary storyline, the other takes as connected clips
  *below* it (negative lanes, so the cut is what plays), the rates Final Cut uses, scenes as
  markers on their first clip, and the shot as the asset clip's note (the prompt) and metadata
  (scene, take, reel: the shot id, description: provider, model and seed).

A conformed clip keeps its length in seconds: 12 fps previs clips are written at 24 fps, each
frame counted twice. A shot without a video is a gap in every format (an EDL shows it as a jump
in record timecode).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.journal.checkpoint import FILE
from pipeline.journal.snapshot import load_state
from pipeline.manifest.loader import Manifest
from pipeline.manifest.takes import with_rerolls
from pipeline.outputs.picks import read_picks
from pipeline.outputs.timeline import (
    CHOSEN_TRACK,
    NAMESPACE,
    build_timeline,
    replace_text,
    to_otio_json,
)

if TYPE_CHECKING:
    import opentimelineio as otio


@dataclass(frozen=True, slots=True)
class Format:
    """An export format: its OpenTimelineIO adapter, file suffix and what reads it."""

    adapter: str
    suffix: str
    title: str


FORMATS: dict[str, Format] = {
    "otio": Format("otio_json", ".otio", "OpenTimelineIO (Resolve, Premiere via plugins, Nuke)"),
    "edl": Format("cmx_3600", ".edl", "CMX 3600 EDL (any editor)"),
    "fcp7xml": Format("fcp_xml", ".xml", "Final Cut Pro 7 XML (Premiere, Resolve)"),
    "fcpxml": Format("fcpx_xml", ".fcpxml", "FCPXML (Final Cut Pro)"),
}

#: Frame rates SMPTE timecode has (what EDL and FCP 7 XML timecodes can be written at).
SMPTE_RATES = (24000 / 1001, 24.0, 25.0, 30000 / 1001, 30.0, 48.0, 50.0, 60000 / 1001, 60.0)
#: The rates the FCPXML adapter writes formats for (its own table: NTSC as 23.98...).
FCPX_RATES = (23.98, 24.0, 25.0, 29.97, 30.0, 50.0, 59.94, 60.0)

_EDL_PROMPT = 240  # characters of the prompt in an EDL comment


def default_path(run_dir: Path, fmt: str) -> Path:
    """``RUN_DIR/timeline.<ext>``: ``.otio``, ``.edl``, ``.xml`` (fcp7xml), ``.fcpxml``."""
    return run_dir / f"timeline{FORMATS[fmt].suffix}"


def editorial_rate(rate: float, allowed: tuple[float, ...] = SMPTE_RATES) -> float:
    """The rate of ``allowed`` a clip of ``rate`` fps is written at.

    ``rate`` itself when allowed (within 0.01 fps), else the smallest allowed multiple of it
    (12 -> 24, 15 -> 30), else the nearest allowed rate (frames are then rounded).
    """
    for candidate in allowed:
        if abs(candidate - rate) < 0.01:
            return candidate
    multiples = [
        r for r in allowed if round(r / rate) >= 1 and abs(r / rate - round(r / rate)) < 1e-3
    ]
    if multiples:
        return min(multiples)
    return min(allowed, key=lambda r: abs(r - rate))


def export_timeline(run_dir: Path, manifest: Manifest, fmt: str, dest: Path | None = None) -> Path:
    """Write the run's timeline in ``fmt`` to ``dest`` (default :func:`default_path`) atomically.

    Args:
        run_dir: a run directory (its checkpoint, picks and verified videos are read).
        manifest: the run's manifest (shot and scene order).
        fmt: a key of :data:`FORMATS`.
        dest: where to write; its directory must exist.

    Returns:
        The path written (mode 0644).

    Raises:
        KeyError: ``fmt`` is not a known format.
        CheckpointError: the checkpoint cannot be read.
        OSError: the file cannot be written.
    """
    if fmt not in FORMATS:
        raise KeyError(f"unknown timeline format {fmt!r} (known: {', '.join(FORMATS)})")
    state = load_state(run_dir / FILE)
    manifest = with_rerolls(manifest, state)  # re-rolled takes are takes like the others
    timeline = build_timeline(run_dir, manifest, state, read_picks(run_dir, state))
    path = dest if dest is not None else default_path(run_dir, fmt)
    replace_text(path, render(timeline, fmt))
    return path


def render(timeline: otio.schema.Timeline, fmt: str) -> str:
    """``timeline`` (from :func:`~pipeline.outputs.timeline.build_timeline`) as ``fmt`` text.

    ``timeline`` itself is not changed.

    Raises:
        KeyError: ``fmt`` is not a key of :data:`FORMATS`.
    """
    import opentimelineio as otio

    adapter = FORMATS[fmt].adapter
    if fmt == "otio":
        return to_otio_json(timeline)
    if fmt == "edl":
        edl, rate = _for_edl(timeline)
        text: str = otio.adapters.write_to_string(edl, adapter, rate=rate, style="avid")
        return text
    if fmt == "fcp7xml":
        text = otio.adapters.write_to_string(_for_fcp7(timeline), adapter)
        return text
    text = otio.adapters.write_to_string(_for_fcpx(timeline), adapter)
    # Connected clips on positive lanes sit above the primary storyline and would play instead
    # of the cut: the other takes go below it. The only lanes written are theirs.
    return re.sub(r'(<clip\b[^>]*\slane=")(\d+)"', r'\1-\2"', text)


def conform(timeline: otio.schema.Timeline, allowed: tuple[float, ...]) -> otio.schema.Timeline:
    """A copy of ``timeline`` with every time at :func:`editorial_rate` of its own rate.

    Clips, their media's available range and their markers are conformed to their own
    editorial rate, gaps and the stack's markers to the timeline's; values are rounded to
    whole frames (exact when the new rate is a multiple of the old).
    """
    import opentimelineio as otio

    out = copy.deepcopy(timeline)
    base = editorial_rate(out.global_start_time.rate, allowed)
    out.global_start_time = _at(out.global_start_time, base)
    for marker in out.tracks.markers:
        marker.marked_range = _range_at(marker.marked_range, base)
    for track in out.tracks:
        for item in track:
            rate = editorial_rate(item.source_range.duration.rate, allowed)
            item.source_range = _range_at(item.source_range, rate)
            for marker in item.markers:
                marker.marked_range = _range_at(marker.marked_range, rate)
            if isinstance(item, otio.schema.Clip):
                ref = item.media_reference
                ref.available_range = _range_at(ref.available_range, rate)
    return out


def _at(time: otio.opentime.RationalTime, rate: float) -> otio.opentime.RationalTime:
    import opentimelineio as otio

    return otio.opentime.RationalTime(round(time.value_rescaled_to(rate)), rate)


def _range_at(span: otio.opentime.TimeRange, rate: float) -> otio.opentime.TimeRange:
    import opentimelineio as otio

    return otio.opentime.TimeRange(_at(span.start_time, rate), _at(span.duration, rate))


def _chosen(timeline: otio.schema.Timeline) -> otio.schema.Track:
    return next(t for t in timeline.tracks if t.name == CHOSEN_TRACK)


def _scene_markers_on_clips(timeline: otio.schema.Timeline) -> None:
    """Put a marker named by its scene on the first clip of each scene.

    For the formats that have clip markers only; a scene whose shots all lack a video has none.
    """
    import opentimelineio as otio

    seen = set()
    for clip in _chosen(timeline).find_clips():
        scene = _meta(clip)["scene"]
        if scene not in seen:
            seen.add(scene)
            start = clip.source_range.start_time
            clip.markers.append(
                otio.schema.Marker(
                    name=scene,
                    marked_range=otio.opentime.TimeRange(start, start - start),
                    color=otio.schema.MarkerColor.BLUE,
                )
            )


def _meta(item: otio.core.Item) -> dict[str, Any]:
    meta: dict[str, Any] = dict(item.metadata[NAMESPACE])
    return meta


def _for_edl(timeline: otio.schema.Timeline) -> tuple[otio.schema.Timeline, float]:
    out = conform(timeline, SMPTE_RATES)
    chosen = _chosen(out)
    out.tracks[:] = [chosen]
    _scene_markers_on_clips(out)
    used: set[str] = set()
    for clip in chosen.find_clips():
        meta = _meta(clip)
        prompt = " ".join(str(meta["prompt"]).split())
        if len(prompt) > _EDL_PROMPT:
            prompt = prompt[: _EDL_PROMPT - 3] + "..."
        clip.name = clip.media_reference.name
        clip.metadata["cmx_3600"] = {
            "reel": _reel(str(meta["shot"]), used),
            "comments": [
                f"SHOT: {meta['shot']}",
                f"PROMPT: {prompt}",
                f"PROVIDER: {meta['provider']} MODEL: {meta['model']} SEED: {meta['seed']}",
            ],
        }
    return out, out.global_start_time.rate


def _reel(shot_id: str, used: set[str]) -> str:
    """A reel name of at most 8 letters and digits from ``shot_id``, unique within ``used``."""
    base = re.sub(r"[^A-Za-z0-9]", "", shot_id) or "SHOT"
    reel, n = base[:8], 1
    while reel in used:
        n += 1
        reel = base[: 8 - len(str(n))] + str(n)
    used.add(reel)
    return reel


def _for_fcp7(timeline: otio.schema.Timeline) -> otio.schema.Timeline:
    out = conform(timeline, SMPTE_RATES)
    for track in out.tracks:
        track.metadata["fcp_xml"] = {"@MZ.TrackName": track.name}  # Premiere's track name
    for clip in out.find_clips():
        meta = _meta(clip)
        clip.metadata["fcp_xml"] = {
            "logginginfo": {
                "description": meta["prompt"],
                "scene": meta["scene"],
                "shottake": str(meta["take"] or ""),
                "lognote": _summary(meta),
            }
        }
    return out


def _for_fcpx(timeline: otio.schema.Timeline) -> otio.schema.Timeline:
    out = conform(timeline, FCPX_RATES)
    chosen = _chosen(out)
    others = [t for t in out.tracks if t is not chosen]
    out.tracks[:] = []
    out.tracks.extend([chosen, *reversed(others)])  # the adapter puts the first in the spine
    _scene_markers_on_clips(out)
    for clip in out.find_clips():
        meta = _meta(clip)
        fields = [
            {"com.apple.proapps.studio.reel": meta["shot"]},
            {"com.apple.proapps.studio.scene": meta["scene"]},
            {"com.apple.proapps.spotlight.kMDItemDescription": _summary(meta)},
        ]
        if meta["take"] is not None:  # Final Cut's "Take" field
            fields.insert(2, {"com.apple.proapps.studio.shot": str(meta["take"])})
        clip.media_reference.metadata["fcpx"] = {"note": meta["prompt"], "metadata": fields}
    return out


def _summary(meta: dict[str, Any]) -> str:
    seed = "unset" if meta["seed"] is None else meta["seed"]
    return f"{meta['shot']} · {meta['provider']}/{meta['model']} · seed {seed}"
