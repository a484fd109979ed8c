"""The log reader (parse / load and their fold) against a line-by-line reference built on decode.

``parse`` and ``load`` check the lines in blocks, with a fast path for the spelling ``encode``
writes; whatever they accept, refuse or cut off must be exactly what calling :func:`decode` on
every line in turn gives (the reader before the fast path), for any bytes.
"""

from __future__ import annotations

import random
import zlib
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import CheckpointError
from pipeline.journal import lines as checkpoint_log
from pipeline.journal.lines import (
    FILE,
    Fold,
    Loaded,
    Record,
    _BadLine,
    decode,
    encode,
    load,
    parse,
)
from pipeline.journal.state import RunState, folder, replay
from pipeline.models import Event

TS = "2026-11-20T10:00:00.000Z"


def reference(data: bytes, name: str = FILE) -> tuple[list[Record], int, bytes]:
    """The reader before the fast path: decode every line in turn."""
    records: list[Record] = []
    pos = prev = lineno = 0
    bad_at: tuple[int, int, str] | None = None
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0:
            if bad_at is None:
                bad_at = (pos, lineno + 1, "incomplete last line")
            break
        lineno += 1
        try:
            rec = decode(data[pos : end + 1], prev)
        except _BadLine as exc:
            if bad_at is None:
                bad_at = (pos, lineno, str(exc))
        else:
            if bad_at is not None:
                raise CheckpointError(f"{name}:{bad_at[1]}: corrupt record ({bad_at[2]}) followed")
            records.append(rec)
            prev = rec.seq
        pos = end + 1
    good = bad_at[0] if bad_at is not None else len(data)
    return records, good, data[good:]


def seal(body: bytes) -> bytes:
    """A line with a valid crc for ``body`` (any bytes ending in ``}``), as encode appends it."""
    return body[:-1] + b',"crc":"%08x"}\n' % zlib.crc32(body)


def line(seq: int, ev: str = "status", shot: str | None = "a-s1", **data: Any) -> bytes:
    return encode(Record(seq, TS, Event(ev), shot, data))


def a_log(n: int = 40) -> list[bytes]:
    """Lines of every kind of value: unicode, escapes, nested data, crc look-alikes."""
    out = [line(1, "run_started", None, run="r", manifest="m.yaml")]
    events = ["shot_planned", "submit_intent", "submitted", "status", "completed", "fetched"]
    values: list[Any] = ['q"uote\\', "ünï©ode ✓", {"crc": "00000000", "n": [1, 2.5, None]}, ""]
    values += [',"crc":"deadbeef"}', 10**18, -1, True, "x" * 300]
    for seq in range(2, n + 1):
        ev = events[seq % len(events)]
        extra: dict[str, Any] = {"note": values[seq % len(values)]}
        if ev == "submitted":
            extra |= {"job": f"j{seq}", "data": {"download_url": "https://x/y?z=1"}}
        out.append(line(seq, ev, f"a-s{seq % 3}", **extra))
    return out


def odd_lines(seq: int) -> list[bytes]:
    """Lines encode never writes; some good (decode accepts them), most bad."""
    good = line(seq).rstrip(b"\n")
    body = good[: -len(b',"crc":"00000000"}')] + b"}"
    return [
        body[:-1] + b',"crc":"%08X"}\n' % zlib.crc32(body),  # upper-case crc: good
        seal(body.replace(b'"v":1', b'"v":1.0')),  # v 1.0: good
        seal(body.replace(b'"seq":', b' "seq" : ')),  # spaces: good
        seal(body.replace(b'"v":1', b'"v":true')),  # v true (== 1): good
        seal(body.replace(b'"v":1', b'"v":2')),  # newer: refused
        seal(body.replace(b'"v":1', b'"v":0')),
        seal(body.replace(b'"ev":"status"', b'"ev":"nope"')),
        seal(body.replace(b'"ev":"status"', b'"ev":["status"]')),  # unhashable: TypeError
        seal(body.replace(b'"ts":"', b'"ts":1,"x":"')),
        seal(body.replace(b'"seq":%d' % seq, b'"seq":%d' % (seq - 1))),
        seal(body.replace(b'"seq":%d' % seq, b'"seq":"%d"' % seq)),
        seal(body.replace(b',"v":1', b"")),
        seal(b'[1,"crc"]'),
        seal(b'"just a string"}'),
        seal(b"{}"),
        seal(b"}"),
        seal(body[:-1] + b',"v":1}'),  # duplicate key
        seal(body[:-1] + b',"crc":"x"}'),  # a crc field in the body
        seal(body.replace(b"{", b"{\xff", 1)),  # not UTF-8
        good[:-3] + b'X"}\n',
        good + b" \n",
        good[:-1] + b"\n",
        b"\n",
        b'"}\n',
        b',"crc":"00000000"}\n',
        b"garbage\n",
    ]


def outcome(fn: Any) -> tuple[str, Any]:
    """What a reader did: its result, or the type and first words of what it raised."""
    try:
        result = fn()
    except (CheckpointError, TypeError) as exc:
        return type(exc).__name__, str(exc).split(" followed")[0]
    if isinstance(result, Loaded):
        assert result.last_seq == (result.records[-1].seq if result.records else 0)
        return "ok", (result.records, result.good_bytes, result.tail)
    return "ok", result


def check(data: bytes) -> None:
    assert outcome(lambda: parse(data)) == outcome(lambda: reference(data))


@pytest.mark.parametrize("block", [1, 2, 3, 7, 64, 150, 1 << 20])
def test_parse_matches_the_line_by_line_reader(block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint_log, "_BLOCK", block)
    lines = a_log(12)
    data = b"".join(lines)
    check(data)
    for cut in range(len(data) - 2 * len(lines[-1]), len(data)):  # torn tails
        check(data[:cut])
    for i in (1, 5, 11):  # every odd line mid-file, at the end, and after the end
        for odd in odd_lines(i + 1):
            check(b"".join([*lines[:i], odd, *lines[i + 1 :]]))
            check(b"".join([*lines[:i], odd]))
            check(b"".join([*lines[:i], odd, odd]))
            check(b"".join([*lines[:i], odd, lines[i][:-9]]))


def test_random_damage_matches_the_line_by_line_reader() -> None:
    data = b"".join(a_log(60))
    rng = random.Random(11)
    for _ in range(1500):
        damaged = bytearray(data)
        for _ in range(rng.choice((1, 1, 2, 5))):
            if not damaged:
                break
            pos = rng.randrange(len(damaged))
            op = rng.randrange(4)
            if op == 0:
                damaged[pos] ^= 1 << rng.randrange(8)
            elif op == 1:
                del damaged[pos : pos + rng.randrange(1, 40)]
            elif op == 2:
                damaged[pos:pos] = rng.choice([b"\n", b"}", b'"', b"\\", b"\x00"])
            else:
                del damaged[pos:]
        check(bytes(damaged))


def test_every_odd_line_alone_is_judged_as_decode_judges_it() -> None:
    for odd in odd_lines(7):
        check(line(1) + line(6) + odd)
        check(odd)


def fold_into(items: list[tuple[Any, ...]]) -> Fold:
    def fold(*parts: Any) -> None:
        items.append(parts)

    return fold


def test_fold_sees_every_record_and_keeps_none(tmp_path: Path) -> None:
    lines = a_log(30)
    data = b"".join(lines) + lines[0][:20]  # and a torn tail
    (tmp_path / FILE).write_bytes(data)
    kept = parse(data)
    parsed: list[tuple[Any, ...]] = []
    loaded_: list[tuple[Any, ...]] = []
    for loaded, items in [
        (parse(data, fold=fold_into(parsed)), parsed),
        (load(tmp_path / FILE, repair=False, fold=fold_into(loaded_)), loaded_),
    ]:
        assert loaded.records == []
        assert (loaded.good_bytes, loaded.tail) == (kept.good_bytes, kept.tail)
        assert loaded.last_seq == kept.records[-1].seq == 30
        assert [Record(*parts) for parts in items] == kept.records


def test_fold_on_mid_file_corruption_has_seen_only_the_prefix() -> None:
    lines = a_log(20)
    lines[9] = lines[9].replace(b'"seq"', b'"Seq"')
    items: list[tuple[Any, ...]] = []
    with pytest.raises(CheckpointError, match=r"checkpoint.jsonl:10: corrupt record"):
        parse(b"".join(lines), fold=fold_into(items))
    assert [parts[0] for parts in items] == list(range(1, 10))


def test_load_matches_parse_and_repairs_the_same_tail(tmp_path: Path) -> None:
    lines = a_log(25)
    data = b"".join(lines[:-1]) + lines[-1][:-30]
    path = tmp_path / FILE
    path.write_bytes(data)
    assert load(path, repair=False) == parse(data)
    repaired = load(path, repair=True)
    assert repaired.moved_to is not None
    assert repaired.moved_to.read_bytes() == parse(data).tail == lines[-1][:-30]
    assert path.read_bytes() == b"".join(lines[:-1])
    assert load(path, repair=True) == Loaded(parse(data).records, repaired.good_bytes, last_seq=24)
    assert load(tmp_path / "missing", repair=True) == Loaded([], 0)


def test_folding_a_log_gives_the_state_replay_gives() -> None:
    golden = Path(__file__).parent / "data" / "golden"
    logs = sorted(golden.glob("*.jsonl"))
    assert logs
    for log in logs:
        state = RunState()
        loaded = load(log, repair=False, fold=folder(state))
        assert loaded.records == []
        assert state == replay(load(log, repair=False).records), log.name
