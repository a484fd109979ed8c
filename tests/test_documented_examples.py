"""Every example request of the providers' own documents, as manifest shots.

Each one must pass ``pipeline validate`` and finish under ``pipeline run --simulate``. Sources:

- Venice ``POST /api/v1/video/queue`` (https://docs.venice.ai/api-reference/endpoint/video/queue):
  the example body (``seedance-2-0-text-to-video``, 10 s, 16:9, 720p, audio, negative prompt)
  and the Seedance 2.0 family it names (text-, image-, reference-to-video and ``-fast-``);
- seedance2.ink image-to-video
  (https://www.seedance2.ink/docs/api-reference/image-to-video): ``seedance-2.0``, one https
  ``mediaUrls`` entry, 16:9, 5 s, 720p, and its three models;
- New API ``POST /v1/video/generations`` for Vidu Q3
  (https://docs.newapi.pro/api/query-video): text-to-video, single image, off-peak first/last
  frame (no ``extra_body``), reference images (mix);
- RelayDance ``POST /v1/video/generations``
  (https://relaydance.com/docs/api-reference/generate-video): text-to-video 1080p 10 s with
  audio, and ``seedance-1-5-pro-with-audio`` 1:1 720p with a reference image.
"""

from __future__ import annotations

import dataclasses
import json
import wave
from pathlib import Path

import pytest

from pipeline.cli.main import main
from pipeline.journal.snapshot import load_state
from pipeline.manifest.loader import load_manifest
from tests.conftest import tiny_png

VENICE = """
  - id: venice
    defaults: {provider: venice}
    shots:
      - id: doc-example
        model: seedance-2-0-text-to-video
        prompt: Commerce being conducted in the city of Venice, Italy.
        duration: 10
        aspect_ratio: "16:9"
        resolution: 720p
        audio: true
        extra:
          negative_prompt: low resolution, error, worst quality, low quality, defects
      - id: fast-t2v
        model: seedance-2-0-fast-text-to-video
        prompt: A gondola glides under a stone bridge at dusk.
        duration: 5
        aspect_ratio: "9:16"
        resolution: 720p
      - id: i2v-first-last
        model: seedance-2-0-image-to-video
        prompt: The harbor wakes up.
        duration: 5
        resolution: 720p
        image: first.png
        end_image: last.png
      - id: fast-i2v
        model: seedance-2-0-fast-image-to-video
        prompt: The harbor wakes up, quickly.
        duration: 4
        resolution: 480p
        image: first.png
      - id: r2v
        model: seedance-2-0-reference-to-video
        prompt: The character from the reference walks along the quay.
        duration: 8
        aspect_ratio: "16:9"
        resolution: 1080p
        references:
          - first.png
          - https://example.com/reference-clip.mp4
          - voice.wav
      - id: fast-r2v
        model: seedance-2-0-fast-reference-to-video
        prompt: The same character, another day.
        duration: 6
        aspect_ratio: "1:1"
        references: [last.png]
"""

SEEDANCE2 = """
  - id: seedance2
    defaults: {provider: seedance2, aspect_ratio: "16:9", resolution: 720p}
    shots:
      - id: doc-example
        model: seedance-2.0
        prompt: A young woman blows out birthday candles, warm indoor lighting
        image: https://example.com/photo.jpg
        duration: 5
      - id: fast
        model: seedance-2.0-fast
        prompt: A river flowing through an autumn forest, aerial view
        duration: 15
        aspect_ratio: "9:16"
        resolution: 480p
      - id: pro
        model: seedance-1.5-pro
        prompt: A river flowing through an autumn forest, cinematic motion
        duration: 10
        aspect_ratio: "1:1"
        resolution: 1080p
"""

NEWAPI = """
  - id: newapi
    defaults: {provider: newapi}
    shots:
      - id: t2v
        model: viduq3p-720p
        prompt: 电影感航拍镜头,日出时分掠过未来海滨城市,光线柔和,镜头缓慢推进。
        aspect_ratio: "16:9"
        duration: 5
        audio: false
        seed: 42
        extra: {bgm: false}
      - id: single-image
        model: viduq3t-540p
        prompt: 人物缓慢抬头并看向镜头,动作自然,镜头轻微前推。
        image: https://example.com/source.png
        duration: 5
        seed: 42
      - id: offpeak-first-last
        model: viduq3p-1080p-offpeak
        prompt: 人物从正面自然转向侧面,身份保持稳定,动作连贯。
        image: https://example.com/head.png
        end_image: https://example.com/tail.png
        duration: 6
      - id: mix
        model: viduq3p-mix-720p
        prompt: A @Image1 walking through a beach in the visual style of @Image2
        references: [https://example.com/ref-1.png, https://example.com/ref-2.png]
        aspect_ratio: "16:9"
        duration: 5
        audio: false
        seed: 42
"""

RELAYDANCE = """
  - id: relaydance
    defaults: {provider: relaydance}
    shots:
      - id: t2v
        model: doubao-seedance-2-0-1080p
        prompt: A timelapse of storm clouds rolling over a mountain range
        duration: 10
        aspect_ratio: "16:9"
        resolution: 1080p
        audio: true
      - id: reference
        model: seedance-1-5-pro-with-audio
        prompt: "@image1 rotates slowly on a marble pedestal, studio lighting"
        duration: 5
        aspect_ratio: "1:1"
        resolution: 720p
        references: [https://example.com/product.jpg]
"""

EXAMPLES = {
    "venice": VENICE,
    "seedance2": SEEDANCE2,
    "newapi": NEWAPI,
    "relaydance": RELAYDANCE,
}


@pytest.fixture(autouse=True)
def _no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never read a real model cache: validation sees the built-in tables only."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name in ("VENICE_API_KEY", "SEEDANCE2_API_KEY", "NEWAPI_API_KEY", "RELAYDANCE_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def _wav(path: Path, seconds: float) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x00" * int(8000 * seconds))


def _manifest(tmp_path: Path, provider: str) -> Path:
    tiny_png(tmp_path / "first.png", (640, 360), (200, 40, 40))
    tiny_png(tmp_path / "last.png", (640, 360), (40, 40, 200))
    _wav(tmp_path / "voice.wav", 3.0)
    path = tmp_path / f"{provider}.yaml"
    path.write_text(f"version: 1\nname: docs-{provider}\nscenes:{EXAMPLES[provider]}")
    return path


@pytest.mark.parametrize("provider", sorted(EXAMPLES))
def test_documented_examples_validate(
    tmp_path: Path, provider: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _manifest(tmp_path, provider)
    assert main(["validate", "--strict", str(path)]) == 0, capsys.readouterr().err
    out, err = capsys.readouterr()
    assert "ok:" in out
    assert "warning" not in err  # every documented model is in the built-in table


def test_unset_fields_stay_unset_so_the_provider_default_applies(tmp_path: Path) -> None:
    shots = {s.id: s for s in load_manifest(_manifest(tmp_path, "newapi")).shots}
    assert shots["newapi-offpeak-first-last"].audio is None
    assert shots["newapi-offpeak-first-last"].resolution is None
    assert shots["newapi-t2v"].audio is False
    relay = {s.id: s for s in load_manifest(_manifest(tmp_path, "relaydance")).shots}
    assert relay["relaydance-t2v"].audio is True


def test_remote_reference_urls_take_their_kind_from_the_extension(tmp_path: Path) -> None:
    shots = {s.id: s for s in load_manifest(_manifest(tmp_path, "venice")).shots}
    roles = [r.role.value for r in shots["venice-r2v"].references]
    assert roles == ["reference_image", "reference_video", "reference_audio"]


@pytest.mark.parametrize("provider", sorted(EXAMPLES))
def test_documented_examples_run_on_the_simulators(
    tmp_path: Path, provider: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _manifest(tmp_path, provider)
    jobs = tmp_path / "jobs"
    code = main(["run", str(path), "--simulate", "--no-progress", "--jobs-dir", str(jobs)])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    run_dir = jobs / f"docs-{provider}"
    state = load_state(run_dir / "checkpoint.jsonl")
    expected = {s.id for s in load_manifest(path).shots}
    assert set(state.shots) == expected
    assert {rec.state.value for rec in state.shots.values()} == {"done"}, json.dumps(
        {i: [r.state.value, r.error] for i, r in state.shots.items()}
    )


def test_a_shot_without_audio_sends_no_audio_field(tmp_path: Path) -> None:
    from pipeline.models import MediaRef, MediaRole
    from pipeline.providers.newapi import codec as newapi_codec
    from pipeline.providers.relaydance import codec as relaydance_codec
    from pipeline.providers.venice import codec as venice_codec

    venice = {s.id: s for s in load_manifest(_manifest(tmp_path, "venice")).shots}
    assert "audio" not in venice_codec.build_submit(venice["venice-fast-t2v"], [])
    assert venice_codec.build_submit(venice["venice-doc-example"], [])["audio"] is True
    gateway = {s.id: s for s in load_manifest(_manifest(tmp_path, "newapi")).shots}
    offpeak = gateway["newapi-offpeak-first-last"]
    frames = [
        MediaRef(MediaRole.IMAGE, "https://example.com/head.png"),
        MediaRef(MediaRole.END_IMAGE, "https://example.com/tail.png"),
    ]
    body = newapi_codec.build_submit(offpeak, frames)
    assert "audio" not in body.get("extra_body", {})
    assert newapi_codec.build_submit(gateway["newapi-t2v"], [])["extra_body"]["audio"] is False
    relay = {s.id: s for s in load_manifest(_manifest(tmp_path, "relaydance")).shots}
    silent = dataclasses.replace(relay["relaydance-t2v"], audio=None)
    assert "generate_audio" not in relaydance_codec.build_submit(silent, [])["metadata"]
    meta = relaydance_codec.build_submit(relay["relaydance-t2v"], [])["metadata"]
    assert meta["generate_audio"] is True
