"""Tests for adapters.recorder: crash-safe WAVs, the stereo call WAV, capture, names."""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import textwrap
import time
import wave
from pathlib import Path

import pytest

from plivo_stream_cli import codec
from plivo_stream_cli.adapters.recorder import (
    CALL_LAG_SECONDS,
    CLOCKED_HOLD_SECONDS,
    MAX_AHEAD_SECONDS,
    MAX_CAPTURE_HELD,
    CallRecorder,
    CaptureError,
    CaptureWriter,
    WavRecorder,
    read_capture,
    safe_name,
)
from plivo_stream_cli.errors import ExitCode, UsageError
from plivo_stream_cli.formats import L16_16K, MULAW_8K


def tone(freq: float, rate: int, seconds: float, amplitude: int = 8000) -> bytes:
    n = int(rate * seconds)
    return struct.pack(
        f"<{n}h", *(round(amplitude * math.sin(2 * math.pi * freq * i / rate)) for i in range(n))
    )


def read_frames(path: Path) -> tuple[int, bytes, int]:
    """(frame count, audio bytes, channels) as the stdlib `wave` reader sees the file."""
    with wave.open(str(path)) as wav:
        assert wav.getsampwidth() == 2
        return wav.getnframes(), wav.readframes(wav.getnframes()), wav.getnchannels()


def run_child(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# -- WavRecorder ----------------------------------------------------------------------------------


def test_wav_holds_exactly_what_was_written(tmp_path: Path) -> None:
    pcm = tone(440, 8000, 1.3)
    with WavRecorder(tmp_path / "a.wav", 8000) as rec:
        for i in range(0, len(pcm), 320):
            rec.write(pcm[i : i + 320])
        assert rec.frames_written == len(pcm) // 2
        assert rec.duration == pytest.approx(1.3)
    assert read_frames(tmp_path / "a.wav") == (len(pcm) // 2, pcm, 1)


def test_wav_is_valid_while_growing_and_batched(tmp_path: Path) -> None:
    path = tmp_path / "grow.wav"
    rec = WavRecorder(path, 8000, max_delay=3600)  # only the audio threshold flushes here
    assert read_frames(path) == (0, b"", 1)  # valid from the first moment
    frame = tone(440, 8000, 0.02)
    for _ in range(10):  # 0.2 s: below the half-second batch, nothing is written yet
        rec.write(frame)
    assert read_frames(path)[0] == 0
    for _ in range(20):  # 0.6 s in all: one batch is on disk, header included
        rec.write(frame)
    frames, data, _ = read_frames(path)
    assert frames == 4000
    assert data == frame * 25
    rec.close()
    assert read_frames(path)[0] == 4800
    rec.close()  # idempotent
    with pytest.raises(ValueError, match="after close"):
        rec.write(frame)


def test_wav_header_is_rewritten_when_time_passes(tmp_path: Path) -> None:
    path = tmp_path / "slow.wav"
    rec = WavRecorder(path, 8000, max_delay=0.05)
    rec.write(b"\x01\x00")
    deadline = time.monotonic() + 0.05
    while time.monotonic() < deadline:  # wait out max_delay, then the next write flushes
        time.sleep(0.01)
    rec.write(b"\x02\x00")
    assert read_frames(path)[:2] == (2, b"\x01\x00\x02\x00")
    rec.close()


def test_stereo_wav_and_misaligned_writes(tmp_path: Path) -> None:
    with WavRecorder(tmp_path / "s.wav", 16000, channels=2) as rec:
        rec.write(b"\x01\x00\x02\x00")
        with pytest.raises(codec.CodecError):
            rec.write(b"\x01\x00")
    assert read_frames(tmp_path / "s.wav") == (1, b"\x01\x00\x02\x00", 2)


def test_exclusive_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "keep.wav"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        WavRecorder(path, 8000, exclusive=True)
    assert path.read_bytes() == b"precious"


SIGKILL_CHILD = """
import sys
from plivo_stream_cli import codec
from plivo_stream_cli.formats import MULAW_8K
from plivo_stream_cli.adapters.recorder import CallRecorder

rec = CallRecorder(sys.argv[1], "call", "stream", MULAW_8K, stereo=True)
for i in range(170):  # 3.4 s, so the last 0.4 s is still buffered when the kill comes
    payload = bytes((i * 7 + k) % 256 for k in range(160))
    rec.inbound(codec.decode(payload, MULAW_8K))
    rec.capture("in", '{"event":"media","media":{"chunk":%d}}' % i)
    if i % 10 == 0:
        rec.outbound(codec.decode(payload, MULAW_8K) * 3)
print(170 * 160, flush=True)
sys.stdin.readline()  # mid-call: wait for the next frame that never comes
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_sigkill_mid_call_leaves_valid_files(tmp_path: Path) -> None:
    child = run_child(SIGKILL_CHILD, str(tmp_path))
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.strip(), child.stderr.read() if child.stderr else ""
    written = int(line)
    child.kill()  # SIGKILL: no chance to flush or close anything
    child.wait(timeout=30)
    frames, data, _ = read_frames(tmp_path / "call_stream.inbound.wav")
    assert written - 8000 <= frames <= written  # at most one second lost
    expected = b"".join(
        codec.decode(bytes((i * 7 + k) % 256 for k in range(160)), MULAW_8K) for i in range(170)
    )
    assert data == expected[: len(data)]
    call_frames, _, channels = read_frames(tmp_path / "call_stream.call.wav")
    assert channels == 2 and call_frames >= written - 8000
    lines = list(read_capture(tmp_path / "call_stream.jsonl"))
    assert [c.msg["media"]["chunk"] for c in lines[:170]] == list(range(170))  # flushed per line


def test_recorded_samples_equal_the_decoded_payloads(tmp_path: Path) -> None:
    payloads = [bytes((n * 31 + k) % 256 for k in range(n * 9 % 400 + 1)) for n in range(300)]
    with CallRecorder(tmp_path, "c", "s", MULAW_8K) as rec:
        for payload in payloads:
            rec.inbound(codec.decode(payload, MULAW_8K))
    frames, data, _ = read_frames(tmp_path / "c_s.inbound.wav")
    assert frames == sum(len(codec.decode(p, MULAW_8K)) // 2 for p in payloads)
    assert data == b"".join(codec.decode(p, MULAW_8K) for p in payloads)


# -- CallRecorder: files, names, timeline ---------------------------------------------------------


def test_call_recorder_files_and_result(tmp_path: Path) -> None:
    rec = CallRecorder(tmp_path / "new" / "dir", "CA-1", "ST-1", L16_16K, stereo=True)
    rec.inbound(tone(300, 16000, 0.5))
    rec.outbound(tone(500, 16000, 0.25))
    rec.capture("in", {"event": "start"}, t=100.0)
    rec.capture("out", {"event": "playAudio"}, t=101.5)
    result = rec.close()
    assert rec.close() is result
    base = tmp_path / "new" / "dir" / "CA-1_ST-1"
    assert [(f.path, f.kind) for f in result] == [
        (Path(f"{base}.inbound.wav"), "inbound"),
        (Path(f"{base}.outbound.wav"), "outbound"),
        (Path(f"{base}.call.wav"), "call"),
        (Path(f"{base}.jsonl"), "capture"),
    ]
    assert [f.duration for f in result] == [0.5, 0.25, 0.5, 1.5]
    assert all(f.warning is None for f in result)
    assert rec.warning is None


def test_flush_puts_buffered_audio_on_disk(tmp_path: Path) -> None:
    rec = CallRecorder(tmp_path, "c", "s", MULAW_8K, stereo=True)
    rec.outbound(b"\x02\x00" * 40)  # sent at the start of the call
    rec.inbound(b"\x01\x00" * 80)
    assert read_frames(tmp_path / "c_s.call.wav")[0] == 0  # batched
    rec.flush()
    assert read_frames(tmp_path / "c_s.inbound.wav")[0] == 80
    assert read_frames(tmp_path / "c_s.outbound.wav")[0] == 40
    _, stereo, _ = read_frames(tmp_path / "c_s.call.wav")
    assert channels_of(stereo) == (b"\x01\x00" * 80, b"\x02\x00" * 40 + bytes(80))
    rec.close()
    rec.flush()  # harmless after close


def test_outbound_track_media_goes_to_the_outbound_file(tmp_path: Path) -> None:
    with CallRecorder(tmp_path, "c", "s", MULAW_8K, capture=False) as rec:
        rec.inbound(b"\x01\x00", track="outbound")
        rec.inbound(b"\x02\x00")
    assert read_frames(tmp_path / "c_s.outbound.wav")[1] == b"\x01\x00"
    assert read_frames(tmp_path / "c_s.inbound.wav")[1] == b"\x02\x00"
    assert not (tmp_path / "c_s.jsonl").exists()


def channels_of(stereo: bytes) -> tuple[bytes, bytes]:
    values = struct.unpack(f"<{len(stereo) // 2}h", stereo)
    left, right = values[0::2], values[1::2]
    return struct.pack(f"<{len(left)}h", *left), struct.pack(f"<{len(right)}h", *right)


def test_call_wav_aligns_played_audio_on_the_call_timeline(tmp_path: Path) -> None:
    rate = 8000
    caller = tone(300, rate, 1.2)
    first, second, late = tone(500, rate, 0.5), tone(700, rate, 0.1), tone(900, rate, 0.1)
    frame = 320  # 20 ms
    with CallRecorder(tmp_path, "c", "s", MULAW_8K, stereo=True) as rec:
        for n, i in enumerate(range(0, len(caller), frame)):
            if n == 10:  # at 0.2 s the bot queues 0.5 s then 0.1 s, all at once
                rec.outbound(first)
                rec.outbound(second)
            if n == 45:  # at 0.9 s, after the queue ran dry at 0.8 s
                rec.outbound(late)
            rec.inbound(caller[i : i + frame])
    frames, stereo, channels = read_frames(tmp_path / "c_s.call.wav")
    assert (channels, frames) == (2, len(caller) // 2)
    left, right = channels_of(stereo)
    assert left == caller
    ms = rate * 2 // 1000  # bytes per millisecond
    assert right == (bytes(200 * ms) + first + second + bytes(100 * ms) + late + bytes(200 * ms))


def test_clear_audio_cuts_the_queued_played_audio(tmp_path: Path) -> None:
    rate = 8000
    caller = tone(300, rate, 0.6)
    played = tone(500, rate, 1.0)
    ms = rate * 2 // 1000
    with CallRecorder(tmp_path, "c", "s", MULAW_8K, stereo=True) as rec:
        for n, i in enumerate(range(0, len(caller), 20 * ms)):
            if n == 5:  # at 0.1 s
                rec.outbound(played)
            if n == 15:  # at 0.3 s, part-way through a batch of caller audio
                rec.clear_outbound()
            rec.inbound(caller[i : i + 20 * ms])
    left, right = channels_of(read_frames(tmp_path / "c_s.call.wav")[1])
    assert left == caller
    assert right == bytes(100 * ms) + played[: 200 * ms] + bytes(300 * ms)
    assert read_frames(tmp_path / "c_s.outbound.wav")[1] == played  # everything that was sent


@pytest.mark.parametrize(
    "hostile",
    ["../../x", "/etc/x", "", "\x00", "a\x00b", "x" * 5000, "..", ".", "./.hidden", "CON",
     "a/../../b", "..\\..\\win", "-rf", "é漢字", "\n", "~root"],
)  # fmt: skip
def test_hostile_ids_stay_inside_the_directory(tmp_path: Path, hostile: str) -> None:
    target = tmp_path / "rec"
    rec = CallRecorder(target, hostile, hostile, MULAW_8K, stereo=True)
    rec.inbound(b"\x00\x00")
    rec.capture("in", {"event": "start"})
    files = rec.close()
    assert len(files) == 4
    for recorded in files:
        assert recorded.path.parent == target
        assert recorded.path.resolve().parent == target.resolve()
        assert not recorded.path.name.startswith((".", "-"))
        assert len(recorded.path.name) < 200
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        ["rec", *(f.path.name for f in files)]
    )


def test_safe_name() -> None:
    assert (
        safe_name("6f1c2a3e-0b4d-4c5e-9f00-1234567890ab") == "6f1c2a3e-0b4d-4c5e-9f00-1234567890ab"
    )
    assert safe_name("../../etc/passwd") == "etc_passwd"
    assert safe_name("") == safe_name("...") == safe_name("\x00") == "unknown"
    assert safe_name("nul") == "_nul"
    long_a, long_b = safe_name("a" * 100 + "1"), safe_name("a" * 100 + "2")
    assert len(long_a) == 64 and long_a != long_b


def test_existing_files_are_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "c_s.outbound.wav").write_bytes(b"someone else's")
    first = CallRecorder(tmp_path, "c", "s", MULAW_8K)
    second = CallRecorder(tmp_path, "c", "s", MULAW_8K)
    names = [[f.path.name for f in rec.close()] for rec in (first, second)]
    assert names == [
        ["c_s-1.inbound.wav", "c_s-1.outbound.wav", "c_s-1.jsonl"],
        ["c_s-2.inbound.wav", "c_s-2.outbound.wav", "c_s-2.jsonl"],
    ]
    assert (tmp_path / "c_s.outbound.wav").read_bytes() == b"someone else's"
    assert not (tmp_path / "c_s.inbound.wav").exists()  # the half-made set was removed


def test_unwritable_directory_is_a_usage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(UsageError) as caught:
        CallRecorder(blocker / "rec", "c", "s", MULAW_8K)
    assert caught.value.exit_code == ExitCode.USAGE
    assert str(caught.value).startswith(f"cannot record to {blocker / 'rec'}: ")


DISK_FULL_CHILD = """
import json, resource, signal, sys
from plivo_stream_cli import codec
from plivo_stream_cli.formats import MULAW_8K
from plivo_stream_cli.adapters.recorder import CallRecorder

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of dying
resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, resource.RLIM_INFINITY))
rec = CallRecorder(sys.argv[1], "c", "s", MULAW_8K, stereo=True)
frame = codec.decode(bytes(range(160)), MULAW_8K)
for i in range(500):  # 10 s: 160 KB per mono track, past the 60 KB limit
    rec.inbound(frame)
    rec.outbound(frame)
    rec.capture("in", {"event": "media", "media": {"payload": "x" * 200, "chunk": i}})
print(json.dumps({"warnings": rec.warnings,
                  "files": [[str(f.path), f.duration, f.warning] for f in rec.close()]}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE/SIGXFSZ on Linux")
def test_disk_full_mid_call_stops_the_file_and_warns(tmp_path: Path) -> None:
    child = run_child(DISK_FULL_CHILD, str(tmp_path))
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    report = json.loads(out)
    assert len(report["warnings"]) == 4
    assert all("recording stopped" in w or "capture stopped" in w for w in report["warnings"])
    assert "File too large" in report["warnings"][0]
    for path, duration, warning in report["files"]:
        assert warning is not None
        assert os.path.getsize(path) <= 60_000
        if path.endswith(".wav"):
            frames, _, channels = read_frames(Path(path))
            assert frames / 8000 == pytest.approx(duration)
            assert 0 < frames * 2 * channels <= 60_000
    assert len(list(read_capture(report["files"][-1][0]))) > 10


# -- JSONL capture --------------------------------------------------------------------------------


def test_capture_round_trip(tmp_path: Path) -> None:
    pretty = json.dumps({"event": "media", "media": {"payload": "AAEC"}}, indent=2)
    with CallRecorder(tmp_path, "c", "s", MULAW_8K) as rec:
        rec.capture("in", '{"event":"start","start":{"callId":"c"}}', t=1.25)
        rec.capture("in", pretty, t=1.5)
        rec.capture("out", {"event": "playAudio", "media": {"payload": "/w=="}}, t=2.0)
        rec.capture("in", "not json {", t=2.5)
        rec.capture("in", b"\x00\x01binary", t=3.0)
        rec.capture("in", '{"odd":"\ud800 surrogate"}', t=3.5)
        with pytest.raises(ValueError, match="direction"):
            rec.capture("sideways", {})
    path = tmp_path / "c_s.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 6
    assert json.loads(lines[0]) == {
        "t": 1.25, "dir": "in", "msg": {"event": "start", "start": {"callId": "c"}}
    }  # fmt: skip
    got = list(read_capture(path))
    assert [(c.t, c.direction, c.line) for c in got] == [
        (1.25, "in", 1), (1.5, "in", 2), (2.0, "out", 3), (2.5, "in", 4), (3.0, "in", 5),
        (3.5, "in", 6),
    ]  # fmt: skip
    assert got[1].msg == json.loads(pretty)
    assert got[2].msg["media"]["payload"] == "/w=="
    assert (got[3].msg, got[3].text) == (None, "not json {")
    assert got[4].data == b"\x00\x01binary"
    assert got[5].msg["odd"].startswith("\ud800")


def test_read_capture_tolerates_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "torn.jsonl"
    path.write_text('{"t":1.0,"dir":"in","msg":{"event":"start"}}\n\n{"t":2.0,"dir":"in","ms')
    assert [c.msg for c in read_capture(path)] == [{"event": "start"}]


def test_read_capture_rejects_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"t":1.0,"dir":"in","msg":{}}\n{"hello":1}\n{"t":2.0,"dir":"in","msg":{}}\n')
    with pytest.raises(CaptureError, match=r"bad.jsonl:2: not a pstream capture line"):
        list(read_capture(path))
    with pytest.raises(CaptureError, match="cannot read capture"):
        list(read_capture(tmp_path / "missing.jsonl"))


def test_batched_capture_is_written_when_due_on_flush_and_on_close(tmp_path: Path) -> None:
    path = tmp_path / "c_s.jsonl"
    rec = CallRecorder(tmp_path, "c", "s", MULAW_8K, capture_flush=3600)
    for i in range(3):
        line = json.dumps({"event": "media", "media": {"chunk": i}})
        rec.capture("in", line, t=1.0 + i, is_json=True)
    assert path.read_text() == ""  # batched: nothing written yet
    rec.flush()
    assert [c.msg["media"]["chunk"] for c in read_capture(path)] == [0, 1, 2]
    rec.capture("out", {"event": "clearAudio"}, t=5.0)
    rec.close()
    assert [c.direction for c in read_capture(path)] == ["in", "in", "in", "out"]

    due = CallRecorder(tmp_path, "c", "due", MULAW_8K, capture_flush=1e-9)
    due.capture("in", '{"event":"stop"}', t=1.0, is_json=True)
    assert [c.msg for c in read_capture(tmp_path / "c_due.jsonl")] == [{"event": "stop"}]
    due.close()


@pytest.mark.parametrize(
    "raw",
    [
        '{"event":"media","media":{"payload":"/w=="}}',
        '  {"event": "start"} \t',
        '{"event":\n"start"}',
        '{"a":"\\u2028 caf\u00e9"}',
        "[1, 2]",
    ],
)
def test_capture_of_known_json_writes_the_same_line(tmp_path: Path, raw: str) -> None:
    with CallRecorder(tmp_path, "c", "checked", MULAW_8K) as checked:
        checked.capture("in", raw, t=2.5)
    with CallRecorder(tmp_path, "c", "known", MULAW_8K, capture_flush=0.5) as known:
        known.capture("in", raw, t=2.5, is_json=True)
    lines = (tmp_path / "c_checked.jsonl").read_text()
    assert (tmp_path / "c_known.jsonl").read_text() == lines
    assert json.loads(lines)["msg"] == json.loads(raw)


@pytest.mark.parametrize("as_json", [False, True], ids=["line", "json"])
def test_capture_writer_holds_at_most_max_capture_held_characters(
    tmp_path: Path, as_json: bool
) -> None:
    writer = CaptureWriter(tmp_path / "held.jsonl", flush_seconds=3600)
    t, text = 1764712345.25, '{"event":"media"}'
    line = f'{{"t":{t:.6f},"dir":"in","msg":{text}}}\n'
    written = 0
    for _ in range(3 * MAX_CAPTURE_HELD // len(line)):
        if as_json:
            writer.write_json(t, "in", text)
        else:
            writer.write(line)
        on_disk = (tmp_path / "held.jsonl").stat().st_size
        assert 0 <= written + len(line) - on_disk <= MAX_CAPTURE_HELD + len(line)
        written += len(line)
    assert (tmp_path / "held.jsonl").stat().st_size > 0  # the bound wrote, not the clock
    writer.close()
    writer.close()  # idempotent
    assert (tmp_path / "held.jsonl").read_text() == line * (written // len(line))


def test_capture_writer_keeps_a_lone_surrogate_as_an_escape(tmp_path: Path) -> None:
    with CallRecorder(tmp_path, "c", "s", MULAW_8K, capture_flush=0.5) as rec:
        rec.capture("in", '{"a":"\ud800"}', t=1.0)
        rec.capture("in", {"a": "x\udfffy"}, t=2.0)
    assert [c.msg for c in read_capture(tmp_path / "c_s.jsonl")] == [
        {"a": "\ud800"},
        {"a": "x\udfffy"},
    ]


@pytest.mark.parametrize("stereo", [False, True])
def test_inbound_wire_records_what_inbound_of_the_decoded_audio_does(
    tmp_path: Path, stereo: bool
) -> None:
    wire = codec.encode(tone(311.7, 8000, 1.7), MULAW_8K)  # no two 20 ms frames alike
    frames = [wire[i : i + 160] for i in range(0, len(wire), 160)]
    assert len(set(frames)) == len(frames)
    with CallRecorder(tmp_path, "c", "pcm", MULAW_8K, stereo=stereo, capture=False) as pcm:
        for frame in frames:
            pcm.inbound(codec.decode(frame, MULAW_8K))
    with CallRecorder(tmp_path, "c", "wire", MULAW_8K, stereo=stereo, capture=False) as rec:
        for i, frame in enumerate(frames):
            rec.inbound_wire(frame)
            if i % 7 == 0:  # a PCM write between wire ones stays in order
                rec.inbound(codec.decode(frame, MULAW_8K))
    expected = read_frames(tmp_path / "c_pcm.inbound.wav")
    got = read_frames(tmp_path / "c_wire.inbound.wav")
    decoded = [codec.decode(f, MULAW_8K) for f in frames]
    interleaved = b"".join(d + (d if i % 7 == 0 else b"") for i, d in enumerate(decoded))
    assert got[1] == interleaved and got[0] == len(interleaved) // 2
    assert expected[1] == b"".join(decoded)


def test_wav_write_wire_is_flushed_by_size_and_on_close(tmp_path: Path) -> None:
    path = tmp_path / "w.wav"
    rec = WavRecorder(path, 8000, max_delay=3600, wire=lambda b: codec.decode(b, MULAW_8K))
    frame = codec.encode(tone(440, 8000, 0.02), MULAW_8K)
    for _ in range(30):  # 0.6 s: one batch of 0.5 s written, 0.1 s held
        rec.write_wire(frame)
    assert read_frames(path)[0] == 4000
    assert rec.frames_written == 30 * 160
    rec.close()
    assert read_frames(path)[1] == codec.decode(frame, MULAW_8K) * 30
    with pytest.raises(ValueError, match="PCM only"):
        WavRecorder(tmp_path / "p.wav", 8000).write_wire(frame)


def test_every_recording_file_is_private(tmp_path: Path) -> None:
    """0600 whatever the umask: a call's audio and events are personal data (issue 22.11)."""
    old = os.umask(0o022)
    try:
        rec = CallRecorder(tmp_path, "CA-1", "ST-1", MULAW_8K, stereo=True)
        rec.inbound(b"\xff" * 160, 0.0)
        result = rec.close()
    finally:
        os.umask(old)
    paths = [item.path for item in result]
    assert len(paths) == 4
    assert {Path(p).stat().st_mode & 0o777 for p in paths} == {0o600}


class FakeClock:
    """Wall time the test moves on (the recorder reads a clock; it sleeps on nothing)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_stereo_buffer_drains_on_time_with_only_played_audio(tmp_path: Path) -> None:
    """Only the played side has audio (the caller's frames never come): the buffer for
    call.wav drains as time passes, and call.wav holds the played audio, in time, up to a
    second (CALL_LAG_SECONDS) before the end, as the caller's clock would."""
    clock = FakeClock()
    played = tone(500, 8000, 30.0)
    frame = 320  # 20 ms
    peak = 0
    with CallRecorder(tmp_path, "c", "s", MULAW_8K, stereo=True, clock=clock) as rec:
        for i in range(0, len(played), frame):
            rec.outbound(played[i : i + frame])
            clock.now += 0.02
            peak = max(peak, rec.buffered_bytes)
    assert peak < 2 * 8000 * 2 * (CALL_LAG_SECONDS + 0.5)  # about the lag, not 30 s
    left, right = channels_of(read_frames(tmp_path / "c_s.call.wav")[1])
    assert len(right) == len(played) - 2 * 8000 * CALL_LAG_SECONDS
    assert right == played[: len(right)] and left == bytes(len(right))


def test_stereo_buffer_is_bounded_when_played_audio_floods_in(tmp_path: Path) -> None:
    clock = FakeClock()  # never moves: 10 minutes of audio arrive at one instant
    chunk = tone(500, 8000, 1.0)
    with CallRecorder(tmp_path, "c", "s", MULAW_8K, stereo=True, clock=clock) as rec:
        for _ in range(600):
            rec.outbound(chunk)
            assert rec.buffered_bytes <= 2 * 8000 * (MAX_AHEAD_SECONDS + 1) * 2
    _, right = channels_of(read_frames(tmp_path / "c_s.call.wav")[1])
    # call.wav: all but the last minute, which was still queued (unplayed) at the end
    assert right == chunk * (600 - int(MAX_AHEAD_SECONDS))
    assert read_frames(tmp_path / "c_s.outbound.wav")[1] == chunk * 600


def test_clocked_recording_is_written_by_flush_alone_up_to_its_bounds(tmp_path: Path) -> None:
    rec = CallRecorder(tmp_path, "c", "clocked", MULAW_8K, clocked=True)
    frame = codec.encode(tone(440, 8000, 0.02), MULAW_8K)
    line = '{"event":"media","media":{"payload":"/w=="}}'
    for i in range(26):  # past the 0.5 s of audio an unclocked WAV writes at
        rec.inbound_wire(frame)
        rec.capture("in", line, t=1.0 + i, is_json=True)
    wav, capture = tmp_path / "c_clocked.inbound.wav", tmp_path / "c_clocked.jsonl"
    assert read_frames(wav)[0] == 0 and capture.read_text() == ""
    rec.flush()
    assert read_frames(wav)[0] == 26 * 160 and len(list(read_capture(capture))) == 26
    # a late clock: the audio held stops at CLOCKED_HOLD_SECONDS per track
    held = round(CLOCKED_HOLD_SECONDS / 0.02)
    for _ in range(held):
        rec.inbound_wire(frame)
    assert read_frames(wav)[0] == (26 + held) * 160
    rec.close()
