"""Capture lines decode into the feed records serve publishes live."""

from __future__ import annotations

import json

import pytest

from plivo_stream_cli.capturefeed import CaptureDecoder, NotACaptureLine
from plivo_stream_cli.events import Dtmf, PlayAudio, Start
from plivo_stream_cli.feed import event_record
from plivo_stream_cli.formats import L16_16K


def line(t: float, direction: str, **body: object) -> str:
    return json.dumps({"t": t, "dir": direction, **body})


def test_events_become_the_records_serve_would_publish() -> None:
    start = Start("call-1", "stream-1", "MA1", ("inbound",), L16_16K, "a=1", 1)
    dtmf = Dtmf("stream-1", "7", "inbound", "1700000000000", 9)
    play = PlayAudio(L16_16K, b"\x00\x01" * 80)
    decoder = CaptureDecoder()
    records = [
        decoder.decode(line(10.0, "in", msg=start.to_dict())),
        decoder.decode(line(10.5, "out", msg=play.to_dict())),
        decoder.decode(line(11.0, "in", msg=dtmf.to_dict())),
    ]
    assert records == [
        event_record(start, t=10.0, stream="stream-1"),
        event_record(play, t=10.5, stream="stream-1", direction="out"),  # no streamId of its own
        event_record(dtmf, t=11.0, stream="stream-1"),
    ]


def test_stream_id_comes_from_messages_when_the_start_is_missing() -> None:
    decoder = CaptureDecoder()
    played = {"event": "playedStream", "streamId": "s-9", "name": "x", "sequenceNumber": 3}
    assert decoder.decode(line(1, "in", msg=played))["stream"] == "s-9"
    clear = {"event": "clearAudio"}
    assert decoder.decode(line(2, "out", msg=clear)) == {
        "t": 2,
        "stream": "s-9",
        "dir": "out",
        "event": "clearAudio",
    }


def test_frames_that_were_not_events_become_error_notes() -> None:
    decoder = CaptureDecoder()
    text = decoder.decode(line(1, "in", text="hello there"))
    binary = decoder.decode(line(2, "in", binary="AAEC"))
    broken = decoder.decode(line(3, "in", msg={"event": "dtmf", "dtmf": {}}))
    assert [r["event"] for r in (text, binary, broken)] == ["error"] * 3
    assert "not JSON" in text["error"] and binary["error"] == "binary frame"
    assert "dtmf" in broken["error"] and broken["dir"] == "in"


@pytest.mark.parametrize(
    "text",
    [
        "hello",
        "[1, 2]",
        '{"t": 1, "dir": "in"}',
        '{"t": 1, "dir": "sideways", "msg": {}}',
        '{"t": "soon", "dir": "in", "msg": {}}',
        '{"dir": "in", "msg": {}}',
    ],
)
def test_other_lines_are_not_capture_lines(text: str) -> None:
    with pytest.raises(NotACaptureLine):
        CaptureDecoder().decode(text)


def test_the_decoder_is_pure_and_the_command_module_starts_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import plivo_stream_cli.capturefeed, plivo_stream_cli.commands.control_cmd\n"
        "heavy = {'websockets', 'httpx', 'rich', 'asyncio', 'plivo', 'pyngrok', 'socket'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr
