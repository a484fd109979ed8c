"""R21: interrupted rebuilds leave nothing behind; a rebuild still running keeps its file."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.test_cli import cli


def test_r21_temporary_files_of_killed_rebuilds_are_swept(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(
        "version: 1\nname: sweep\ndefaults: {provider: local, duration: 1}\n"
        "providers:\n  local: {latency_s: 0}\nscenes:\n  - id: a\n    shots:\n"
        "      - {id: s1, prompt: one}\n"
    )
    assert cli("run", "m.yaml", "--no-progress", cwd=tmp_path).returncode == 0
    run_dir = tmp_path / "jobs" / "sweep"
    hour_ago = time.time() - 3600
    stale = [
        run_dir / ".animatic-k1ll3d.mp4",
        run_dir / ".contact-k1ll3d.png",
        run_dir / ".storyboard.html.k1ll3d.tmp",
        run_dir / "posters" / ".a-s1.jpg.k1ll3d.tmp",
    ]
    for path in stale:
        path.write_bytes(b"half a file")
        os.utime(path, (hour_ago, hour_ago))
    running = run_dir / ".animatic-st1ll.mp4"  # another process's rebuild, written just now
    running.write_bytes(b"in progress")
    kept = run_dir / "notes.tmp"  # not a name a rebuild uses
    kept.write_bytes(b"mine")
    os.utime(kept, (hour_ago, hour_ago))

    res = cli("storyboard", str(run_dir), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert [p for p in stale if p.exists()] == []
    assert running.exists()
    assert kept.exists()
    assert (run_dir / "animatic.mp4").stat().st_size > 1000


def test_r21_allow_hosts_without_a_port_warn_that_every_port_is_trusted(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(
        "version: 1\nname: ports\ndefaults: {provider: local}\n"
        'downloads: {allow_hosts: [127.0.0.1, "10.0.0.5:8080", gateway.lan]}\n'
        "scenes:\n  - id: a\n    shots:\n      - {id: s1, prompt: x}\n"
    )
    res = cli("validate", "m.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: m.yaml:4: downloads.allow_hosts[0]: '127.0.0.1' trusts every port of that "
        "host; write 127.0.0.1:PORT to trust one",
        "warning: m.yaml:4: downloads.allow_hosts[2]: 'gateway.lan' trusts every port of that "
        "host; write gateway.lan:PORT to trust one",
    ]
