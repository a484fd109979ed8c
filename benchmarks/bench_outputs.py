"""Rebuild time of a run's outputs (report, page, posters, contact sheet, animatic; README
"Performance").

    python benchmarks/bench_outputs.py [--shots 60 600] [--repeats 3] [--clips local|provider]
                                       [--code DIR] [--label L]
    python benchmarks/bench_outputs.py --table [RESULTS.json ...]

For each size, a run directory of N finished takes is synthesized once: a few real previs clips
are rendered with :mod:`pipeline.render.clips` (a camera move over a first frame, some with an end
frame, a fifth of them 9:16 so the animatic letterboxes them), each take's video is one of them
with a unique trailing MP4 ``free`` box (so every take has its own sha256 and the caches are
exercised honestly), with its sidecar; ``pipeline repair`` then writes the checkpoint from the
sidecars, as if a run had fetched them. Every 6th shot has two takes. ``--clips local`` renders
them as the ``local`` provider does (640 px, 12 fps: a 16:9 one is already in the animatic's
format); ``--clips provider`` as a real provider's (720p, 24 fps: every clip is decoded, scaled,
resampled and encoded); ``--clips tiny`` as the simulators' (160 px, 6 fps, as in
``benchmarks/http_bench.py``).

Then, ``--repeats`` times (the figures are the median and the min-max spread):

- ``cold``: every output and ``RUN_DIR/.cache/`` removed, then ``write_outputs``;
- ``noop``: ``write_outputs`` again, nothing changed;
- ``pick``: another take chosen for one shot (``set_pick``), then ``write_outputs``.

Each is timed in this process (wall and CPU of all threads); the run directory's outputs are
checked after each step (an animatic of the expected number of frames). ``--code DIR`` imports
``pipeline`` from another checkout (e.g. ``git archive HEAD | tar -x -C DIR``) to measure the
code before a change with the same harness. Results go to
``benchmarks/results/<time>-outputs.json``; ``--table`` prints the README's Markdown table from
one or more results files (a column per file).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import random
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
STEPS = ("cold", "noop", "pick")
#: Seconds per take; the local provider's frame rate and long side.
DURATION, FPS, LONG_SIDE = 5, 12, 640
#: How the base clips are rendered: (resolution or None, long side, frames per second).
CLIPS = {
    "local": (None, LONG_SIDE, FPS),
    "provider": ("720p", LONG_SIDE, 24),
    "tiny": (None, 160, 6),
}
BASES = 6  # distinct rendered clips; takes are copies with a unique trailing box
TAKES_EVERY = 6  # every 6th shot has two takes
OUTPUTS = ("report.json", "storyboard.html", "contact-sheet.png", "animatic.mp4", "picks.json")


def _import_path(code: Path | None) -> None:
    sys.path.insert(0, str(code.resolve() if code else ROOT))


def _picture(path: Path, seed: int, size: tuple[int, int]) -> None:
    """A first frame with some structure (gradient, shapes) so the clips are not flat."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    img = Image.new("RGB", size)
    draw = ImageDraw.Draw(img)
    top, bottom = [tuple(rng.randrange(30, 220) for _ in range(3)) for _ in range(2)]
    for y in range(size[1]):
        mix = y / size[1]
        draw.line(
            [(0, y), (size[0], y)],
            fill=tuple(int(a + (b - a) * mix) for a, b in zip(top, bottom, strict=True)),
        )
    for _ in range(12):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        r = rng.randrange(10, size[1] // 4)
        colour = tuple(rng.randrange(256) for _ in range(3))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    img.save(path)


def _manifest_text(takes: int) -> str:
    """A manifest of ``takes`` takes in scenes of 12 shots; every 6th shot has 2 takes."""
    lines = [
        "version: 1",
        "name: bench-outputs",
        f"defaults: {{provider: local, duration: {DURATION}, aspect_ratio: '16:9'}}",
        "providers: {local: {latency_s: 0}}",
        "scenes:",
    ]
    count, shot = 0, 0
    while count < takes:
        if shot % 12 == 0:
            lines += [f"  - id: sc{shot // 12:03d}", "    shots:"]
        two = shot % TAKES_EVERY == 0 and takes - count >= 2
        ratio = ", aspect_ratio: '9:16'" if shot % 5 == 4 else ""
        extra = ", takes: 2" if two else ""
        lines.append(f"      - {{id: s{shot:04d}, prompt: 'shot {shot}'{ratio}{extra}}}")
        count += 2 if two else 1
        shot += 1
    return "\n".join(lines) + "\n"


def _bases(where: Path, clips: str = "local") -> dict[str, list[Path]]:
    """``BASES`` rendered clips per aspect ratio (16:9 and 9:16), made once per benchmark."""
    from pipeline.render.clips import ClipSpec, frame_size, render_clip

    resolution, long_side, fps = CLIPS[clips]
    out: dict[str, list[Path]] = {}
    for ratio in ("16:9", "9:16"):
        w, h = frame_size(ratio, resolution, long_side)
        for i in range(BASES if ratio == "16:9" else 2):
            first, end = where / f"first-{ratio[0]}-{i}.png", where / f"end-{ratio[0]}-{i}.png"
            _picture(first, 7 * i + 1, (w, h))
            _picture(end, 7 * i + 2, (w, h))
            spec = ClipSpec(
                title=f"base {i}",
                prompt=f"a benchmark clip, seed {i}",
                duration_s=DURATION,
                width=w,
                height=h,
                fps=fps,
                image=first,
                end_image=end if i % 2 else None,
                seed=i,
            )
            dest = where / f"base-{ratio[0]}-{i}.mp4"
            render_clip(spec, dest)
            out.setdefault(ratio, []).append(dest)
    return out


def synthesize(run_dir: Path, takes: int, bases: dict[str, list[Path]]) -> Any:
    """A run directory of ``takes`` finished takes (videos, sidecars, checkpoint); its manifest."""
    import anyio

    from pipeline.engine.repair import repair
    from pipeline.manifest.loader import load_manifest

    run_dir.mkdir(parents=True)
    manifest_path = run_dir.parent / f"{run_dir.name}.yaml"
    manifest_path.write_text(_manifest_text(takes))
    manifest = load_manifest(manifest_path)
    shots = run_dir / "shots"
    shots.mkdir()
    for i, shot in enumerate(manifest.shots):
        base = bases[shot.aspect_ratio][i % len(bases[shot.aspect_ratio])].read_bytes()
        payload = hashlib.sha256(shot.id.encode()).digest()
        data = base + struct.pack(">I", 8 + len(payload)) + b"free" + payload  # unique sha256
        (shots / f"{shot.id}.mp4").write_bytes(data)
        side = {
            "shot": shot.id,
            "fingerprint": shot.fingerprint,
            "provider": shot.provider,
            "model": shot.model,
            "job": f"bench-{i}",
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
        }
        (shots / f"{shot.id}.json").write_text(json.dumps(side))
    report = anyio.run(repair, run_dir, manifest)
    assert len(report.restored) == takes, report
    return manifest


def _clean(run_dir: Path) -> None:
    for name in OUTPUTS:
        (run_dir / name).unlink(missing_ok=True)
    for name in ("posters", ".cache"):
        shutil.rmtree(run_dir / name, ignore_errors=True)


def _timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, value


def _frames(path: Path) -> int:
    from pipeline.render.clips import probe

    return probe(path).frames


class _Summary(logging.Handler):
    """Keeps the last ``outputs: ...`` line the rebuild logs (what was made, reused, kept)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("outputs: "):
            self.last = message.removeprefix("outputs: ")


def _measure(run_dir: Path, manifest: Any, repeats: int) -> list[dict[str, Any]]:
    from pipeline.outputs.picks import set_pick
    from pipeline.outputs.write import write_outputs

    summary = _Summary()
    logger = logging.getLogger("pipeline")
    level = logger.level
    logger.addHandler(summary)
    logger.setLevel(logging.INFO)
    try:
        multi = next(s for s in manifest.shots if s.take == 2)
        key = f"{multi.scene}-{multi.name}"
        lines = []
        for repeat in range(repeats):
            _clean(run_dir)
            for step in STEPS:
                if step == "pick":
                    set_pick(run_dir, manifest, key, 2)  # cold starts with no pick: take 1
                wall, cpu, written = _timed(lambda: write_outputs(run_dir, manifest))
                line: dict[str, Any] = {
                    "step": step,
                    "takes": len(manifest.shots),
                    "repeat": repeat,
                    "wall_s": round(wall, 3),
                    "cpu_s": round(cpu, 3),
                    "animatic_frames": _frames(run_dir / "animatic.mp4"),
                    "written": len(written),
                }
                if summary.last:
                    line["cache"] = summary.last
                summary.last = ""
                print(json.dumps(line), flush=True)
                lines.append(line)
    finally:
        logger.removeHandler(summary)
        logger.setLevel(level)
    return lines


def _git() -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    )
    return out.stdout.strip() or "?"


def run(
    sizes: list[int], repeats: int, label: str, code: Path | None, clips: str = "local"
) -> dict[str, Any]:
    """Synthesize a run of each size and time cold / no-op / pick rebuilds of its outputs."""
    load_before = os.getloadavg()
    lines: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-outputs-") as tmp:
        where = Path(tmp)
        bases = _bases(where, clips)
        for takes in sizes:
            run_dir = where / f"run{takes}"
            manifest = synthesize(run_dir, takes, bases)
            lines += _measure(run_dir, manifest, repeats)
    machine = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_before": list(load_before),
        "loadavg_after": list(os.getloadavg()),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": _git(),
    }
    settings = {
        "sizes": sizes,
        "repeats": repeats,
        "label": label,
        "code": "another checkout (--code)" if code else "working tree",
        "clips": clips,
        "duration_s": DURATION,
        "fps": FPS,
    }
    return {"machine": machine, "settings": settings, "results": lines}


def _cell(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    text = f"**{statistics.median(values):.{digits}f}**"
    if len(values) > 1:
        text += f" ({min(values):.{digits}f}-{max(values):.{digits}f})"
    return text


def table(documents: list[dict[str, Any]]) -> str:
    """A Markdown table: a column per label (``before``, ``after``...), a row per clips, size
    and rebuild (wall time; CPU of all threads for the cold rebuild), from one or more files.
    """
    labels = list(dict.fromkeys(d["settings"]["label"] for d in documents))
    runs = [
        {**r, "label": d["settings"]["label"], "clips": d["settings"].get("clips", "local")}
        for d in documents
        for r in d["results"]
    ]
    lines = ["| clips, takes, rebuild | " + " | ".join(labels) + " |"]
    lines.append("|---" * (len(labels) + 1) + "|")
    for clips in CLIPS:
        for takes in sorted({r["takes"] for r in runs if r["clips"] == clips}):
            rows = [(step, "wall_s", "s") for step in STEPS] + [("cold", "cpu_s", "s of CPU")]
            for step, field, unit in rows:
                cells = [
                    _cell(
                        [
                            r[field]
                            for r in runs
                            if (r["clips"], r["takes"], r["step"], r["label"])
                            == (clips, takes, step, label)
                        ],
                        2,
                    )
                    for label in labels
                ]
                lines.append(f"| {clips}, {takes}, {step}, {unit} | " + " | ".join(cells) + " |")
    captions = []
    for d in documents:
        m, s = d["machine"], d["settings"]
        captions.append(
            f"{s['label']} ({s.get('clips', 'local')} clips, {s['sizes']} takes): "
            f"{s['repeats']} repeat(s), load average {m['loadavg_before'][0]:.2f} before and "
            f"{m['loadavg_after'][0]:.2f} after, {m['when']}, {m['git']}"
        )
    first = documents[0]["machine"]
    head = f"median (min-max); {first['cpus']} CPUs, Python {first['python']}; " + "; ".join(
        captions
    )
    return "\n".join([head, "", *lines])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shots", type=int, nargs="+", default=[60, 600], help="takes per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--label", default="after", help="column name in --table")
    parser.add_argument("--clips", choices=sorted(CLIPS), default="local", help="see above")
    parser.add_argument("--code", type=Path, help="import pipeline from this checkout instead")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory of the results")
    parser.add_argument("--table", type=Path, nargs="*", help="print the table of these files")
    args = parser.parse_args(argv)
    if args.table is not None:
        files = args.table or sorted(RESULTS.glob("*-outputs.json"))[-1:]
        print(" ".join(f"<!-- {f.name} -->" for f in files))
        print(table([json.loads(f.read_text()) for f in files]))
        return 0
    _import_path(args.code)
    document = run(args.shots, args.repeats, args.label, args.code, args.clips)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"{stamp}-outputs.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(table([document]))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
