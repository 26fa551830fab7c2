"""`pstream report`: the page of a capture and of a run, bad input, a real call, a real browser."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner
from websockets.asyncio.server import ServerConnection, serve

from plivo_stream_cli import codec, metrics, synth, timeline
from plivo_stream_cli.adapters.recorder import CallRecorder, read_capture, safe_name
from plivo_stream_cli.adapters.simulator import SimulateConfig, run_call
from plivo_stream_cli.cli import app
from plivo_stream_cli.events import ClearAudio, PlayAudio
from plivo_stream_cli.formats import MULAW_8K
from tests.conftest import run
from tests.test_timeline import STREAM, known_call

VOID = {"meta", "br", "input", "img", "hr", "link"}
SVG_EMPTY = {"line", "rect", "circle", "path"}


def write_capture(path: Path, lines: list[tuple[float, str, Any]]) -> Path:
    with path.open("w") as out:
        for t, direction, msg in lines:
            body = {"msg": msg} if msg is not None else {"text": "not json"}
            out.write(json.dumps({"t": t, "dir": direction, **body}) + "\n")
    return path


class Checker(HTMLParser):
    """Fails on a closing tag that does not close the open one, or tags left open."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()


def parse(page: str) -> Checker:
    assert page.startswith("<!DOCTYPE html>")
    checker = Checker()
    checker.feed(page)
    checker.close()
    assert checker.stack == []
    return checker


def marks(checker: Checker, cls: str) -> list[dict[str, str | None]]:
    return [a for _, a in checker.tags if cls in (a.get("class") or "").split()]


def report(*args: str) -> Any:
    return CliRunner().invoke(app, ["report", *args])


def test_a_capture_becomes_a_valid_page_with_every_mark_at_its_time(tmp_path: Path) -> None:
    capture = write_capture(tmp_path / "call.jsonl", known_call())
    result = report(str(capture))
    assert result.exit_code == 0, result.output
    page_path = tmp_path / "call.html"
    assert result.stdout.strip() == str(page_path)
    page = page_path.read_text()
    checker = parse(page)
    tags = {tag for tag, _ in checker.tags}
    assert "link" not in tags and "img" not in tags and "iframe" not in tags
    assert not [a for _, a in checker.tags if a.get("src") or (a.get("href") or "#")[0] != "#"]
    assert [t for t, _ in checker.tags].count("script") == 1  # ours, inline

    def times(kind: str) -> list[str | None]:
        return [a["data-t"] for a in marks(checker, f"mark-{kind}")]

    assert times("dtmf") == ["5.000"] and times("clear") == ["4.200"]
    assert times("cleared") == ["4.210"] and times("played") == ["2.800"]
    assert times("checkpoint") == ["2.300"] and times("play") == ["2.300", "3.500", "4.900"]
    first = marks(checker, "span-first_audio_ms")
    assert [(a["data-t"], a["data-t2"], a["data-ms"]) for a in first] == [
        ("2.000", "2.300", "300"),
        ("4.400", "4.900", "500"),
    ]
    assert [a["data-ms"] for a in marks(checker, "span-clear_ms")] == ["200"]
    assert [a["data-ms"] for a in marks(checker, "span-reply_gaps_ms")] == ["700"]
    assert [a["data-ms"] for a in marks(checker, "span-checkpoint_ms")] == ["500"]
    assert len(marks(checker, "env")) == 2  # the caller's and the bot's levels


def test_output_option_and_text_from_the_capture_is_escaped(tmp_path: Path) -> None:
    evil = '</title><script>alert(1)</script><img src=x onerror="alert(2)">'
    lines = known_call(checkpoint=evil)
    lines[0][2]["start"]["callId"] = evil
    capture = write_capture(tmp_path / "evil.jsonl", lines)
    target = tmp_path / "out" / "page.html"
    target.parent.mkdir()
    result = report(str(capture), "-o", str(target))
    assert result.exit_code == 0, result.output
    page = target.read_text()
    checker = parse(page)
    assert [t for t, _ in checker.tags].count("script") == 1
    assert "img" not in {t for t, _ in checker.tags} and "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def write_run(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    def call(n: int, first: float | None) -> dict[str, Any]:
        return {
            "call_id": f"call-{n}",
            "stream_id": f"stream-{n}",
            "metrics": {"first_audio_ms": first, "reply_gaps_ms": [12.5] * n, "clear_ms": None},
        }

    summary = {
        "schema_version": 1,
        "passed": False,
        "checks": [{"metric": "first_audio_ms", "max": 250, "worst": 300.0, "missing": 1}],
        "metrics": {},
        "calls": [call(1, 180.0), call(2, 300.0), call(3, None)],
    }
    path = tmp_path / "run.json"
    path.write_text(json.dumps(summary))
    return path, summary


def test_a_run_shows_distributions_and_links_failed_calls_to_their_timeline(
    tmp_path: Path,
) -> None:
    result_json, _ = write_run(tmp_path)
    captures = tmp_path / "calls"
    captures.mkdir()
    lines = known_call()
    write_capture(captures / f"{safe_name('call-2')}_{safe_name('stream-2')}.jsonl", lines)
    result = report(str(result_json), "--captures", str(captures))
    assert result.exit_code == 0, result.output
    page = (tmp_path / "run.html").read_text()
    checker = parse(page)
    assert "first_audio_ms: 300 ms &gt; 250 ms" in page
    assert "first_audio_ms: not measured" in page
    links = [a.get("href") for t, a in checker.tags if t == "a"]
    assert links == ["#call-2"]  # call 3 has no capture
    assert [a.get("id") for t, a in checker.tags if t == "section"] == ["call-2"]
    strips = [a for t, a in checker.tags if t == "svg" and a.get("class") == "strip"]
    assert len(strips) == 2  # first_audio_ms and reply_gaps_ms were measured
    dots = [t for t, _ in checker.tags].count("circle")
    assert dots == 2 + 6  # two first-audio values, six reply gaps
    assert "no capture" in page and "--captures DIR" in page


def test_simulate_report_writes_the_run_page(tmp_path: Path) -> None:
    async def scenario() -> int:
        async with serve(_recording_bot(tmp_path), "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            args = ["simulate", f"ws://127.0.0.1:{port}/", "--speed", "4", "--linger", "2"]
            args += ["--report", str(tmp_path / "sim.html"), "--max-first-audio-ms", "5000"]
            return await asyncio.to_thread(lambda: CliRunner().invoke(app, args).exit_code)

    assert run(scenario()) == 0
    page = (tmp_path / "sim.html").read_text()
    parse(page)
    assert "every threshold held" in page and "time to first audio" in page


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "empty"),
        (b"\n\n", "empty"),
        (b"hello world\n", "not a pstream capture"),
        (b'{"t": 1.0, "dir": "in", "ms', "not a pstream capture"),  # cut in its first line
        (b'{"schema_version": 1, "calls": [{"call_id": "a"', "truncated"),
        (b'{"t": 1.0, "dir": "in", "msg": {"event": "media"}}\n', "no start event"),
        (b'{"t": 1.0, "dir": "in", "msg": {}}\nnot a line\n{"t": 2, "dir": "in"}\n', ":2: not a"),
        (b"[1, 2, 3]\n", "not a pstream capture"),
        (b"\xff\xfe\x00garbage", "not a pstream capture"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, content: bytes, why: str) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content)
    result = report(str(bad))
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and why in line, line
    assert not (tmp_path / "bad.html").exists()


@pytest.mark.parametrize(
    "extra",
    [
        '{"t": NaN, "dir": "in", "msg": {"event": "dtmf", "dtmf": {"digit": "1"}}}',
        '{"t": 1e300, "dir": "out", "msg": {"event": "clearAudio", "streamId": "x"}}',
        '{"t": -5, "dir": "in", "msg": {"event": "dtmf", "dtmf": {"digit": "2"}}}',
        '{"t": 1700000001, "dir": "out", "msg": {"event": "playAudio", "media": 7}}',
        '{"t": 1700000001, "dir": "in", "msg": [1, 2]}',
        '{"t": 1700000001, "dir": "in", "binary": "AAEC"}',
    ],
)
def test_odd_capture_lines_are_drawn_or_left_out_never_fatal(tmp_path: Path, extra: str) -> None:
    capture = write_capture(tmp_path / "call.jsonl", known_call())
    with capture.open("a") as out:
        out.write(extra + "\n")
    result = report(str(capture))
    assert result.exit_code == 0, result.output
    page = (tmp_path / "call.html").read_text()
    parse(page)
    assert len(page) < 200_000  # a far-off time does not stretch the page


@pytest.mark.parametrize(
    "document",
    [
        {"calls": [], "checks": 5},
        {"calls": [1, "x", {"metrics": 3}, {"metrics": {"first_audio_ms": "fast"}}]},
        {"calls": [{"call_id": "<b>", "metrics": {"first_audio_ms": [1, True, None]}}],
         "checks": [{"metric": "first_audio_ms", "max": "big"}, 3]},
        {"schema_version": 1, "directory": "/x", "call": {"call_id": "demo", "metrics": {}}},
    ],
)  # fmt: skip
def test_odd_results_still_make_a_page(tmp_path: Path, document: dict[str, Any]) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps(document))
    result = report(str(path))
    assert result.exit_code == 0, result.output
    page = (tmp_path / "run.html").read_text()
    parse(page)
    assert "<b>" not in page


def test_missing_file_and_unwritable_output_exit_2(tmp_path: Path) -> None:
    result = report(str(tmp_path / "nope.jsonl"))
    assert result.exit_code == 2 and "cannot read" in result.stderr
    capture = write_capture(tmp_path / "call.jsonl", known_call())
    result = report(str(capture), "-o", str(tmp_path / "no" / "dir" / "x.html"))
    assert result.exit_code == 2 and "cannot write" in result.stderr
    result = report(str(capture), "-o", str(capture))
    assert result.exit_code == 2 and "would replace its own input" in result.stderr
    assert capture.read_text().count("\n") == len(known_call())


def test_a_capture_torn_by_a_crash_is_drawn_with_a_warning(tmp_path: Path) -> None:
    capture = write_capture(tmp_path / "call.jsonl", known_call())
    with capture.open("a") as out:
        out.write('{"t": 1700000006.0, "dir": "in", "msg": {"ev')
    result = report(str(capture))
    assert result.exit_code == 0, result.output
    assert "the last line is incomplete" in result.stderr
    parse((tmp_path / "call.html").read_text())


def test_open_starts_the_browser_on_the_page(tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\nprintf %s "$1" > {seen}\n')
    browser.chmod(browser.stat().st_mode | stat.S_IXUSR)
    capture = write_capture(tmp_path / "call.jsonl", known_call())
    env = {**os.environ, "BROWSER": str(browser)}
    done = subprocess.run(
        [sys.executable, "-m", "plivo_stream_cli", "report", str(capture), "--open"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert seen.read_text() == (tmp_path / "call.html").resolve().as_uri()


# ---------------------------------------------------------------- a real call


SPEECH_FRAMES = 5
# The end of an utterance: 400 ms of quiet (the built-in clip is speech, with short pauses).
END_QUIET_FRAMES = 20
ANSWER_DELAY = 0.2
CLEAR_DELAY = 0.1
REPLY = codec.encode(synth.tone(660, 2.0, 8000), MULAW_8K)


def _loud(message: dict[str, Any]) -> bool:
    import base64

    payload = base64.b64decode(message["media"]["payload"])
    return codec.level_dbfs(codec.decode(payload, MULAW_8K)) > timeline.SPEECH_DBFS


def _recording_bot(directory: Path) -> Any:
    """A real bot that records its side as serve does: answers the caller's speech after
    ANSWER_DELAY in paced 20 ms chunks, and clears CLEAR_DELAY after the caller talks over it."""

    async def handler(ws: ServerConnection) -> None:
        recorder: CallRecorder | None = None
        loop = asyncio.get_running_loop()
        loud = quiet = 0
        replying: asyncio.Task[None] | None = None

        async def send(text: str) -> None:
            if recorder is not None:
                recorder.capture("out", text, is_json=True)
            await ws.send(text)

        async def reply() -> None:
            await asyncio.sleep(ANSWER_DELAY)
            began = loop.time()
            for index, offset in enumerate(range(0, len(REPLY), 160)):
                await asyncio.sleep(max(0.0, began + (index - 1) * 0.02 - loop.time()))
                await send(PlayAudio(MULAW_8K, REPLY[offset : offset + 160]).to_json())

        try:
            async for message in ws:
                assert isinstance(message, str)
                event = json.loads(message)
                if event["event"] == "start":
                    ids = event["start"]["callId"], event["start"]["streamId"]
                    recorder = CallRecorder(directory, *ids, MULAW_8K)
                if recorder is not None:
                    recorder.capture("in", message, is_json=True)
                if event["event"] != "media":
                    continue
                if _loud(event):
                    loud, quiet = loud + 1, 0
                    if replying is not None and not replying.done() and loud == SPEECH_FRAMES:
                        await asyncio.sleep(CLEAR_DELAY)
                        replying.cancel()
                        await send(ClearAudio(STREAM).to_json())
                else:
                    quiet += 1
                    if quiet == END_QUIET_FRAMES and loud >= SPEECH_FRAMES and replying is None:
                        replying = loop.create_task(reply())
                    if quiet >= END_QUIET_FRAMES:
                        loud = 0
        finally:
            if replying is not None:
                replying.cancel()
            if recorder is not None:
                recorder.close()

    return handler


def test_a_recorded_call_measures_what_simulate_measured(tmp_path: Path) -> None:
    async def scenario() -> Any:
        async with serve(_recording_bot(tmp_path), "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            config = SimulateConfig(
                url=f"ws://127.0.0.1:{port}/",
                audio=synth.default_caller_audio(MULAW_8K),
                barge_in_at=0.4,
                linger=0.3,
            )
            return await run_call(config)

    simulated = run(scenario())
    (capture,) = tmp_path.glob("*.jsonl")
    tl = timeline.build((c.t, c.direction, c.msg) for c in read_capture(capture))
    first, cleared = metrics.first_audio_ms(simulated), metrics.clear_ms(simulated)
    assert first is not None and cleared is not None
    assert len(tl.barge_ins) == 1
    (recorded_first, *_) = tl.values("first_audio_ms")
    # The bot's and the caller's clocks are one loop's: they differ by its scheduling delays.
    assert recorded_first == pytest.approx(first, abs=40)
    assert tl.values("clear_ms") == [pytest.approx(cleared, abs=40)]
    assert [m.kind for m in tl.marks].count("cleared") == 1


# ---------------------------------------------------------------- a real browser


def _png_pixels(data: bytes) -> tuple[int, int, int, bytes]:
    """Width, height, bytes per pixel and the unfiltered rows of an 8-bit RGB(A) PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and color in (2, 6)
    bpp = 3 if color == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    out, prev = bytearray(), bytearray(stride)
    for y in range(height):
        kind, row = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = row[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                row[i] = (row[i] + a) & 255
            elif kind == 2:
                row[i] = (row[i] + b) & 255
            elif kind == 3:
                row[i] = (row[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                row[i] = (row[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out += row
        prev = row
    return width, height, bpp, bytes(out)


def _rows_with(color: tuple[int, int, int], png: tuple[int, int, int, bytes]) -> list[int]:
    width, height, bpp, pixels = png
    target = bytes(color)
    return [
        y
        for y in range(height)
        if target
        in {pixels[(y * width + x) * bpp : (y * width + x) * bpp + 3] for x in range(width)}
    ]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_chromium_shows_the_callers_track_above_the_bots(tmp_path: Path) -> None:
    capture = write_capture(tmp_path / "call.jsonl", known_call())
    assert report(str(capture)).exit_code == 0
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            "chromium", "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,700",
            "--hide-scrollbars", f"--screenshot={shot}", (tmp_path / "call.html").as_uri(),
        ],
        capture_output=True,
        timeout=90,
        check=True,
    )  # fmt: skip
    png = _png_pixels(shot.read_bytes())
    caller = _rows_with((0x4E, 0x79, 0xA7), png)
    bot = _rows_with((0x59, 0xA1, 0x4F), png)
    assert len(caller) > 30 and len(bot) > 30  # both tracks drawn, each tens of pixels tall
    tracks_bot = [y for y in bot if y > min(caller)]
    assert tracks_bot and max(caller) < min(tracks_bot) + 200
    assert sum(caller) / len(caller) < sum(tracks_bot) / len(tracks_bot)  # caller above bot
    assert re.search(rb"IEND", shot.read_bytes())


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_the_zoom_script_moves_marks_in_chromium(tmp_path: Path) -> None:
    capture = write_capture(tmp_path / "call.jsonl", known_call())
    assert report(str(capture)).exit_code == 0
    url = (tmp_path / "call.html").as_uri() + "#zoom=2"
    dom = subprocess.run(
        [
            "chromium", "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    ).stdout  # fmt: skip
    checker = Checker()  # the DOM after the script ran, as Chromium serializes it
    checker.feed(dom)
    (svg,) = [a for t, a in checker.tags if t == "svg" and a.get("class") == "timeline"]
    pps, left = float(svg["data-pps"] or 0), float(svg["data-left"] or 0)
    (dtmf,) = marks(checker, "mark-dtmf")
    assert float(dtmf["x1"] or 0) == pytest.approx(left + 5.0 * pps * 2, abs=0.5)
