"""End-to-end tests of the stream server over real sockets, driven by the simulator engine."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.request
import wave
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from plivo_stream_cli import codec, synth
from plivo_stream_cli.adapters import server as server_module
from plivo_stream_cli.adapters.server import ServeConfig, StreamServer
from plivo_stream_cli.adapters.simulator import SimulateConfig, run_call
from plivo_stream_cli.events import Media, Start
from plivo_stream_cli.formats import L16_8K, L16_16K, MULAW_8K, MediaFormat
from plivo_stream_cli.signature import sign_headers
from tests.conftest import run

TOKEN = "test-auth-token"


def caller(fmt: MediaFormat, seconds: float = 0.6) -> bytes:
    return codec.encode(synth.tone(440, seconds, fmt.sample_rate), fmt)


def wav_frames(path: Path) -> bytes:
    with wave.open(str(path), "rb") as wav:
        return wav.readframes(wav.getnframes())


def recorded(directory: Path, kind: str) -> Path:
    (path,) = directory.glob(f"*.{kind}.wav")
    return path


@pytest.mark.parametrize("fmt", [MULAW_8K, L16_8K, L16_16K], ids=lambda f: f.content_type)
def test_signed_call_is_recorded_exactly(tmp_path: Path, fmt: MediaFormat) -> None:
    audio = caller(fmt)

    async def scenario() -> None:
        config = ServeConfig(port=0, auth_token=TOKEN, record_dir=tmp_path)
        async with StreamServer(config) as server:
            report = await run_call(
                SimulateConfig(
                    url=server.local_url,
                    audio=audio,
                    media_format=fmt,
                    auth_token=TOKEN,
                    speed=20,
                    linger=0,
                )
            )
            assert report.close_code == 1000 and not report.rejected
            assert report.frames_sent == len(codec.frames(audio, fmt))

    run(scenario())
    got = wav_frames(recorded(tmp_path, "inbound"))
    padded = b"".join(codec.frames(audio, fmt))
    assert got == codec.decode(padded, fmt)


@pytest.mark.parametrize("headers", ["wrong-token", "missing"])
def test_bad_signature_is_closed_with_1008_within_a_second(headers: str) -> None:
    async def scenario() -> None:
        records: list[dict[str, object]] = []
        async with StreamServer(ServeConfig(port=0, auth_token=TOKEN)) as server:
            server.subscribe(records.append)
            extra = sign_headers(server.local_url, "wrong") if headers == "wrong-token" else {}
            began = time.monotonic()
            async with connect(server.local_url, additional_headers=extra) as ws:
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 1.0)
            assert time.monotonic() - began < 1.0
            assert ws.close_code == 1008
            assert server.totals["rejected"] == 1 and not server.streams
        (rejected,) = [r for r in records if r["event"] == "rejected"]
        expected = "invalid signature" if headers == "wrong-token" else "missing"
        assert expected in str(rejected["reason"])

    run(scenario())


def test_signature_checked_against_public_url_with_a_hint(tmp_path: Path) -> None:
    async def scenario() -> None:
        records: list[dict[str, object]] = []
        config = ServeConfig(port=0, auth_token=TOKEN, public_url="https://abc.example.app")
        async with StreamServer(config) as server:
            server.subscribe(records.append)
            good = SimulateConfig(
                url=server.local_url, audio=caller(MULAW_8K, 0.1), speed=20, linger=0
            )
            # Signed for the public URL, as Plivo does behind a tunnel: accepted.
            headers = sign_headers("wss://abc.example.app/stream", TOKEN)
            async with connect(server.local_url, additional_headers=headers) as ws:
                await ws.send(_start().to_json())
                await asyncio.sleep(0)
            # Signed for the local URL: refused, and the log says which URL would match.
            report = await run_call(_with_token(good))
            assert report.rejected
        reasons = [str(r["reason"]) for r in records if r["event"] == "rejected"]
        assert len(reasons) == 1
        assert "matches http://127.0.0.1:" in reasons[0]

    run(scenario())


def _with_token(config: SimulateConfig) -> SimulateConfig:
    config.auth_token = TOKEN
    return config


def _start(fmt: MediaFormat = MULAW_8K) -> Start:
    return Start("call-1", "stream-1", "MA1", ("inbound",), fmt, "a=1", 1)


def _media(seq: int, payload: bytes) -> str:
    return Media("stream-1", "inbound", str(seq), payload, seq - 1, seq).to_json()


def test_bad_messages_mid_call_leave_stream_and_recording_intact(tmp_path: Path) -> None:
    fmt = L16_8K
    frames = codec.frames(caller(fmt, 0.4), fmt)

    async def scenario() -> None:
        records: list[dict[str, object]] = []
        async with StreamServer(ServeConfig(port=0, record_dir=tmp_path)) as server:
            server.subscribe(records.append)
            async with connect(server.local_url, max_size=None) as ws:
                await ws.send(_start(fmt).to_json())
                seq = 2
                for frame in frames[:10]:
                    await ws.send(_media(seq, frame))
                    seq += 1
                bad = [
                    "not json at all",
                    '{"event":"mystery"}',
                    '{"event":"media"}',
                    '{"event":"media","media":{"payload":"@@@"}}',
                    _media(seq, b"\x00\x01\x02"),  # odd-length L16
                    json.dumps({"event": "media", "pad": "x" * 70_000}),  # over 64 KB
                    '{"event":"dtmf","dtmf":{}}',
                    "[]",
                ]
                for text in bad:
                    await ws.send(text)
                await ws.send(b"\x00\x01binary")
                for frame in frames[10:]:
                    seq += 1
                    await ws.send(_media(seq, frame))
                # the stream still answers: ask for its state through a checkpoint round trip
                await _until(lambda: _media_count(server) == len(frames))
                (live,) = server.streams.values()
                assert live.error_count >= len(bad)
        errors = [r for r in records if r["event"] == "error"]
        assert len(errors) >= len(bad)

    run(scenario())
    assert wav_frames(recorded(tmp_path, "inbound")) == b"".join(frames)


def _media_count(server: StreamServer) -> int:
    return sum(live.session.stats.media_packets for live in server.streams.values())


async def _until(condition: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def test_media_before_start_is_counted_not_fatal(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with StreamServer(ServeConfig(port=0, record_dir=tmp_path)) as server:
            async with connect(server.local_url) as ws:
                await ws.send(_media(1, b"\xff" * 160))
                await ws.send(_start().to_json())
                await ws.send(_media(3, b"\x00" * 160))
                await _until(lambda: _media_count(server) == 1)
                (live,) = server.streams.values()
                assert live.error_count == 1

    run(scenario())
    assert len(wav_frames(recorded(tmp_path, "inbound"))) == 320


def test_connection_without_start_is_closed_after_start_timeout() -> None:
    async def scenario() -> None:
        async with StreamServer(ServeConfig(port=0, start_timeout=0.3)) as server:
            async with connect(server.local_url) as ws:
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1008
            await _until(lambda: not server.streams)  # the server finishes after the close

    run(scenario())


def test_healthz_answers_200_on_the_same_port() -> None:
    async def scenario() -> None:
        async with StreamServer(ServeConfig(port=0)) as server:
            url = f"http://127.0.0.1:{server.port}/healthz"
            body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
            assert body == b"ok\n"

    run(scenario())


def test_play_sends_the_file_audio_and_its_checkpoint_is_confirmed() -> None:
    pcm = synth.tone(523, 1.0, 16000)  # a 16 kHz file played on an 8 kHz mu-law stream

    async def scenario() -> None:
        config = ServeConfig(port=0, play_audio=pcm, play_rate=16000, play_name="tone")
        async with StreamServer(config) as server:
            report = await run_call(
                SimulateConfig(url=server.local_url, audio=caller(MULAW_8K, 0.2), speed=10)
            )
        expected = codec.encode(codec.resample(pcm, 16000, 8000), MULAW_8K)
        assert bytes(report.received_audio) == expected
        assert report.checkpoints_received == ["tone"]
        assert report.checkpoints_confirmed == ["tone"]

    run(scenario())


def test_echo_sends_the_callers_audio_back() -> None:
    audio = caller(MULAW_8K, 0.4)

    async def scenario() -> None:
        async with StreamServer(ServeConfig(port=0, echo=True)) as server:
            report = await run_call(
                SimulateConfig(url=server.local_url, audio=audio, speed=10, linger=0.5)
            )
        sent = b"".join(codec.frames(audio, MULAW_8K))
        echoed = bytes(report.received_audio)
        assert echoed[: len(sent)] == sent
        assert set(echoed[len(sent) :]) <= {0xFF}  # then the line's silence under --linger

    run(scenario())


def test_playback_is_paced_to_max_buffer() -> None:
    pcm = synth.tone(440, 3.0, 8000)

    async def scenario() -> None:
        config = ServeConfig(port=0, play_audio=pcm, max_buffer=1.0, max_b64=2000)
        async with StreamServer(config) as server:
            report = await run_call(
                SimulateConfig(url=server.local_url, audio=caller(MULAW_8K, 0.1), linger=2.6)
            )
        plays = report.times("play")
        # 3 s of audio with 1 s allowed in Plivo's queue: the last chunk leaves about 2 s later
        assert plays[-1] - plays[0] > 1.7
        assert len(report.received_audio) == 3 * 8000

    run(scenario())


def test_extra_headers_are_parsed_and_published() -> None:
    async def scenario() -> None:
        records: list[dict[str, object]] = []
        async with StreamServer(ServeConfig(port=0)) as server:
            server.subscribe(records.append, media=False)
            await run_call(
                SimulateConfig(
                    url=server.local_url,
                    audio=b"",
                    extra_headers="userId=42;name=a%20b",
                    linger=0,
                )
            )
        (start,) = [r for r in records if r["event"] == "start"]
        assert start["extraHeaders"] == {"userId": "42", "name": "a b"}

    run(scenario())


def test_payload_text_in_capture_is_kept_for_replay(tmp_path: Path) -> None:
    audio = caller(MULAW_8K, 0.2)

    async def scenario() -> None:
        async with StreamServer(ServeConfig(port=0, record_dir=tmp_path)) as server:
            await run_call(SimulateConfig(url=server.local_url, audio=audio, speed=20, linger=0))

    run(scenario())
    (capture,) = tmp_path.glob("*.jsonl")
    lines = [json.loads(line) for line in capture.read_text().splitlines()]
    payloads = [
        base64.b64decode(line["msg"]["media"]["payload"])
        for line in lines
        if line["msg"].get("event") == "media"
    ]
    assert b"".join(payloads) == b"".join(codec.frames(audio, MULAW_8K))


def test_frames_keep_their_order_across_binary_and_fragmented_messages(tmp_path: Path) -> None:
    # After the start, text frames are handled as they arrive; binary and fragmented messages
    # go through websockets' queue. Frames written in one burst (one read on the server) mix
    # both paths, and the stream must still see the peer's order.
    frames = codec.frames(caller(MULAW_8K, 0.8), MULAW_8K)
    burst = []
    for seq, frame in enumerate(frames, start=2):
        text = _media(seq, frame).encode()
        if seq % 7 == 0:
            burst.append(Frame(Opcode.BINARY, b"\x00binary"))
        if seq % 5 == 0:  # the same message in three fragments
            burst.append(Frame(Opcode.TEXT, text[:9], fin=False))
            burst.append(Frame(Opcode.CONT, text[9:40], fin=False))
            burst.append(Frame(Opcode.CONT, text[40:]))
        else:
            burst.append(Frame(Opcode.TEXT, text))

    async def scenario() -> None:
        records: list[dict[str, object]] = []
        async with StreamServer(ServeConfig(port=0, record_dir=tmp_path)) as server:
            server.subscribe(records.append)
            async with connect(server.local_url, compression=None) as ws:
                await ws.send(_start().to_json())
                await _until(lambda: bool(server.streams) and _started(server))
                ws.transport.write(b"".join(f.serialize(mask=True) for f in burst))
                await _until(lambda: _media_count(server) == len(frames))
                (live,) = server.streams.values()
                assert live.session.sequence.reorders == live.session.sequence.gaps == 0
        seqs = [r["seq"] for r in records if r["event"] == "media"]
        assert seqs == list(range(2, len(frames) + 2))

    run(scenario())
    assert wav_frames(recorded(tmp_path, "inbound")) == codec.decode(b"".join(frames), MULAW_8K)


def _started(server: StreamServer) -> bool:
    return all(live.recorder is not None for live in server.streams.values())


def test_invalid_utf8_text_after_start_still_closes_1007() -> None:
    async def scenario() -> None:
        async with StreamServer(ServeConfig(port=0)) as server:
            async with connect(server.local_url) as ws:
                await ws.send(_start().to_json())
                await ws.send(_media(2, b"\xff" * 160))
                await _until(lambda: _media_count(server) == 1)
                await ws.send(b'{"event":"\xff"}', text=True)
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1007

    run(scenario())


def _on_disk(directory: Path, stream: str) -> tuple[bytes, int]:
    """A stream's inbound audio and capture lines as they are on disk now (mid-call)."""
    (wav,) = directory.glob(f"*_{stream}.inbound.wav")
    (capture,) = directory.glob(f"*_{stream}.jsonl")
    return wav_frames(wav), capture.read_text().count("\n")


def test_recording_clock_writes_quiet_streams_while_they_are_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "FLUSH_SLICE", 2)  # five streams: three turns of the loop
    fmt = MULAW_8K
    frames = codec.frames(caller(fmt, 0.3), fmt)  # less than a WAV's 0.5 s batch
    expected = codec.decode(b"".join(frames), fmt)
    names = [f"stream-{i}" for i in range(5)]

    async def scenario() -> None:
        async with StreamServer(ServeConfig(port=0, record_dir=tmp_path)) as server:
            sockets = [await connect(server.local_url) for _ in names]
            for i, (ws, name) in enumerate(zip(sockets, names, strict=True)):
                await ws.send(Start(f"call-{i}", name, "MA1", ("inbound",), fmt, "", 1).to_json())
                for seq, frame in enumerate(frames, 2):
                    await ws.send(Media(name, "inbound", str(seq), frame, seq - 1, seq).to_json())
            await _until(lambda: _media_count(server) == len(names) * len(frames))
            # quiet from now on, and still connected: the clock writes what each one sent
            whole = (expected, 1 + len(frames))
            await _until(lambda: all(_on_disk(tmp_path, name) == whole for name in names), 5)
            for ws in sockets:
                await ws.close()

    run(scenario())
