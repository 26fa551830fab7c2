"""Faults around a live serve: dropped peers, signals, full and read-only disks, peers that
never read or never start, oversized, fragmented, compressed and malformed frames.

A recorder must never lose a call it already heard: every test ends by reading the files.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import itertools
import json
import signal
import socket
import struct
import subprocess
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from plivo_stream_cli import codec, synth
from plivo_stream_cli.adapters.recorder import read_capture
from plivo_stream_cli.adapters.server import (
    MAX_PENDING_PLAYS,
    LiveStream,
    ServeConfig,
    StreamServer,
)
from plivo_stream_cli.cli import app
from plivo_stream_cli.events import Media, PlayedStream, Start
from plivo_stream_cli.formats import MULAW_8K
from tests.conftest import free_port, pstream_process, run, wait_for_port

FMT = MULAW_8K
FRAMES = codec.frames(codec.encode(synth.tone(440, 0.4, 8000), FMT), FMT)  # 20 frames
START = Start("call-1", "stream-1", "MA1", ("inbound",), FMT).to_json()
HANDSHAKE = (
    b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def media(seq: int, payload: bytes) -> str:
    return Media("stream-1", "inbound", str(seq * 20), payload, seq, seq).to_json()


def frame(data: str | bytes, opcode: Opcode = Opcode.TEXT) -> bytes:
    """One masked WebSocket frame, as a client sends it."""
    payload = data.encode() if isinstance(data, str) else data
    return Frame(opcode, payload).serialize(mask=True)


async def raw_client(
    port: int, *, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket client made of a bare TCP socket: it writes frames byte by byte as told."""
    sock = socket.socket()
    if rcvbuf is not None:  # before connecting, so the TCP window stays small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(HANDSHAKE)
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


def loop_failures() -> list[dict[str, Any]]:
    """Record what the loop would report as unhandled (e.g. a task's exception)."""
    failures: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, ctx: failures.append(ctx))
    return failures


class Watch:
    """Feed records and events for the moments tests wait on."""

    def __init__(self, server: StreamServer) -> None:
        self.records: list[dict[str, Any]] = []
        self.closed = asyncio.Event()
        self.media = 0
        self._conditions: list[tuple[Callable[[], bool], asyncio.Event]] = []
        server.subscribe(self._add, media=True)

    def _add(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if record["event"] == "media":
            self.media += 1
        elif record["event"] == "closed":
            self.closed.set()
        for condition, event in self._conditions:
            if condition():
                event.set()

    async def until(self, condition: Callable[[], bool], timeout: float = 20) -> None:
        event = asyncio.Event()
        self._conditions.append((condition, event))
        if not condition():
            await asyncio.wait_for(event.wait(), timeout)

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["event"] == kind]

    def errors(self) -> list[str]:
        return [str(r["error"]) for r in self.events("error")]

    def answered(self, name: str) -> bool:
        return any(r.get("name") == name for r in self.events("playedStream"))


def wav_audio(path: Path) -> bytes:
    with wave.open(str(path)) as wav:
        audio = wav.readframes(wav.getnframes())
    # The header describes exactly the bytes on disk: nothing torn, nothing unaccounted.
    assert path.stat().st_size == 44 + len(audio)
    return audio


def only(directory: Path, pattern: str) -> Path:
    (path,) = directory.glob(pattern)
    return path


def expected(frames: list[bytes]) -> bytes:
    return codec.decode(b"".join(frames), FMT)


# ---------------------------------------------------------------- a peer that vanishes


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_peer_dropping_tcp_mid_frame_leaves_a_complete_recording(tmp_path: Path, how: str) -> None:
    async def scenario() -> None:
        failures = loop_failures()
        async with StreamServer(ServeConfig(port=0, record_dir=tmp_path)) as server:
            watch = Watch(server)
            _, writer = await raw_client(server.port)
            writer.write(frame(START))
            for seq, payload in enumerate(FRAMES, start=2):
                writer.write(frame(media(seq, payload)))
            await watch.until(lambda: watch.media == len(FRAMES))
            half = frame(media(99, FRAMES[0]))
            writer.write(half[: len(half) // 2])
            await writer.drain()
            if how == "rst":  # linger 0: close() resets the connection
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.close()
            await asyncio.wait_for(watch.closed.wait(), 10)
            assert not server.streams
        assert not failures

    run(scenario())
    assert wav_audio(only(tmp_path, "*.inbound.wav")) == expected(FRAMES)
    lines = list(read_capture(only(tmp_path, "*.jsonl")))
    assert [line.msg["event"] for line in lines] == ["start"] + ["media"] * len(FRAMES)


def test_invalid_utf8_text_frame_closes_1007_and_keeps_the_recording(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with StreamServer(ServeConfig(port=0, record_dir=tmp_path)) as server:
            watch = Watch(server)
            reader, writer = await raw_client(server.port)
            writer.write(frame(START) + frame(media(2, FRAMES[0])))
            writer.write(frame(b'{"event":"dtmf","x":"\xff\xfe"}'))
            reply = await asyncio.wait_for(reader.readexactly(4), 10)
            assert reply[0] == 0x88  # a close frame...
            assert struct.unpack("!H", reply[2:4]) == (1007,)  # ...for invalid data
            writer.write(frame(reply[2:4], Opcode.CLOSE))
            writer.close()
            await asyncio.wait_for(watch.closed.wait(), 10)

    run(scenario())
    assert wav_audio(only(tmp_path, "*.inbound.wav")) == expected(FRAMES[:1])


# ---------------------------------------------------------------- signals mid-call


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_signal_mid_call_finalizes_recordings(tmp_path: Path, sig: int, code: int) -> None:
    port = free_port()
    serve = pstream_process(
        "serve", "--port", str(port), "--record", str(tmp_path), "--echo", "--json"
    )
    try:
        wait_for_port(port)
        run(_call_until_signalled(port, serve, sig))
        out, err = serve.communicate(timeout=30)
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.communicate()
    assert serve.returncode == code, err
    assert "Traceback" not in err
    (closed,) = [r for r in map(json.loads, out.splitlines()) if r["event"] == "closed"]
    assert {Path(f["path"]).name.split(".")[-2] for f in closed["files"]} >= {"inbound", "outbound"}
    assert wav_audio(only(tmp_path, "*.inbound.wav")) == expected(FRAMES)
    assert wav_audio(only(tmp_path, "*.outbound.wav")) == expected(FRAMES)  # the echo
    lines = list(read_capture(only(tmp_path, "*.jsonl")))
    assert sum(line.direction == "in" for line in lines) == 1 + len(FRAMES)
    assert sum(line.direction == "out" for line in lines) == len(FRAMES)


async def _call_until_signalled(port: int, serve: subprocess.Popen[str], sig: int) -> None:
    async with connect(f"ws://127.0.0.1:{port}/stream") as ws:
        await ws.send(START)
        for seq, payload in enumerate(FRAMES, start=2):
            await ws.send(media(seq, payload))
        for _ in FRAMES:  # every frame echoed: serve has handled (and recorded) them all
            assert json.loads(await asyncio.wait_for(ws.recv(), 20))["event"] == "playAudio"
        serve.send_signal(sig)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 20)
    assert ws.close_code == 1001


# ---------------------------------------------------------------- the recording directory


def test_record_dir_that_cannot_be_created_is_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = CliRunner().invoke(app, ["serve", "--port", "0", "--record", str(blocker / "rec")])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: cannot record into") and "--record" in line


@contextlib.contextmanager
def mounted_tmpfs(where: Path, options: str) -> Iterator[Path]:
    """A small tmpfs (root only): a real full or read-only file system."""
    where.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mount.stderr.strip() or 'not root'})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_read_only_record_dir_is_exit_2(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "ro", "ro,size=64k") as read_only:
        result = CliRunner().invoke(app, ["serve", "--port", "0", "--record", str(read_only)])
    assert result.exit_code == 2
    assert "cannot record into" in result.output and "Read-only file system" in result.output


def test_disk_filling_up_mid_call_stops_recording_not_serving(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "tiny", "size=64k") as tiny:
        run(_fill_the_disk(tiny))
        inbound = only(tiny, "call-1_stream-1.inbound.wav")
        audio = wav_audio(inbound)
        # what is on disk is exactly the start of the call, in a valid WAV
        assert 0 < len(audio) < len(LONG_CALL_AUDIO)
        assert LONG_CALL_AUDIO.startswith(audio)
        assert all(line.msg for line in read_capture(only(tiny, "call-1_stream-1.jsonl")))


LONG_FRAMES = codec.frames(codec.encode(synth.tone(300, 8.0, 8000), FMT), FMT)  # 400 frames
LONG_CALL_AUDIO = expected(LONG_FRAMES)


async def _fill_the_disk(directory: Path) -> None:
    failures = loop_failures()
    async with StreamServer(ServeConfig(port=0, record_dir=directory)) as server:
        watch = Watch(server)
        async with connect(server.local_url) as ws:
            await ws.send(START)
            for seq, payload in enumerate(LONG_FRAMES, start=2):
                await ws.send(media(seq, payload))
            await ws.send(PlayedStream("stream-1", "still-here").to_json())
            await watch.until(lambda: watch.answered("still-here"))
        await asyncio.wait_for(watch.closed.wait(), 10)
        stopped = [e for e in watch.errors() if "stopped" in e]
        assert stopped and all("No space left on device" in e for e in stopped)
        assert watch.media == len(LONG_FRAMES)  # every frame was still handled
        # A second call on the full disk: no recording, but served.
        async with connect(server.local_url) as ws:
            await ws.send(START.replace("stream-1", "stream-2"))
            await ws.send(PlayedStream("stream-2", "served").to_json())
            await watch.until(lambda: watch.answered("served"))
        assert any("recording disabled" in e for e in watch.errors())
    assert not failures


class FullDisk:
    """A file whose writes fail as on a full disk (the OS boundary under the recorder)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def write(self, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_write_errors_mid_call_stop_recording_not_serving(tmp_path: Path) -> None:
    async def scenario() -> None:
        failures = loop_failures()
        async with StreamServer(ServeConfig(port=0, record_dir=tmp_path)) as server:
            watch = Watch(server)
            async with connect(server.local_url) as ws:
                await ws.send(START)
                half = len(LONG_FRAMES) // 2
                for seq, payload in enumerate(LONG_FRAMES[:half], start=2):
                    await ws.send(media(seq, payload))
                await watch.until(lambda: watch.media == half)
                _fill_up(server.streams["stream-1"])
                for seq, payload in enumerate(LONG_FRAMES[half:], start=half + 2):
                    await ws.send(media(seq, payload))
                await ws.send(PlayedStream("stream-1", "still-here").to_json())
                await watch.until(lambda: watch.answered("still-here"))
            await asyncio.wait_for(watch.closed.wait(), 10)
        assert watch.media == len(LONG_FRAMES)
        stopped = [e for e in watch.errors() if "stopped: No space left on device" in e]
        assert sorted(e.split(":")[0].rsplit(".", 1)[-1] for e in stopped) == ["jsonl", "wav"]
        assert not failures

    run(scenario())
    audio = wav_audio(only(tmp_path, "*.inbound.wav"))
    assert len(audio) < len(LONG_CALL_AUDIO) and LONG_CALL_AUDIO.startswith(audio)


def _fill_up(live: LiveStream) -> None:
    recorder = live.recorder
    for wav in recorder._wavs.values():
        wav._file = FullDisk(wav._file)
    recorder._capture._file = FullDisk(recorder._capture._file)


# ---------------------------------------------------------------- peers that never read


def test_peer_that_never_reads_meets_bounded_buffers() -> None:
    seconds = 1200  # 12.8 MB of playAudio: far more than the kernel's socket buffers hold
    pcm = synth.tone(440, 1.0, 8000) * seconds

    async def scenario() -> None:
        # Pacing off (max_buffer huge): only back-pressure limits what serve buffers.
        config = ServeConfig(port=0, play_audio=pcm, max_buffer=10 * seconds)
        async with StreamServer(config) as server:
            watch = Watch(server)
            _, writer = await raw_client(server.port, rcvbuf=4096)
            writer.transport.pause_reading()  # and now never read again
            writer.write(frame(START))
            await watch.until(lambda: "stream-1" in server.streams)
            live = server.streams["stream-1"]
            sent = await _plateau(lambda: live.session.stats.play_bytes)
            assert 0 < sent < seconds * 8000 / 2  # stuck well before the end
            # websockets' write limit (32 KiB) plus the message that crossed it
            buffered = live.ws.transport.get_write_buffer_size()
            assert buffered <= 64 * 1024 + 4 * config.max_b64
            (player,) = live._players
            assert not player.done()
            writer.close()
            await asyncio.wait_for(watch.closed.wait(), 10)

    run(scenario())


def test_echo_to_a_peer_that_floods_and_never_reads_stays_bounded() -> None:
    async def scenario() -> None:
        failures = loop_failures()
        async with StreamServer(ServeConfig(port=0, echo=True)) as server:
            watch = Watch(server)
            _, writer = await raw_client(server.port, rcvbuf=4096)
            writer.transport.pause_reading()
            writer.write(frame(START))
            flood = LONG_FRAMES * 5  # 40 s of audio, sent at once
            for seq, payload in enumerate(flood, start=2):
                writer.write(frame(media(seq, payload)))
            await watch.until(lambda: watch.media == len(flood), timeout=60)
            live = server.streams["stream-1"]
            assert len(live._players) <= MAX_PENDING_PLAYS
            assert live.echo_dropped > 0
            assert any("dropping echoed frames" in e for e in watch.errors())
            assert live.ws.transport.get_write_buffer_size() <= 256 * 1024
            writer.close()
            await asyncio.wait_for(watch.closed.wait(), 10)
        assert not failures

    run(scenario())


async def _plateau(read: Callable[[], int], quiet: float = 0.5, timeout: float = 20) -> int:
    """Wait until `read()` stops growing for `quiet` seconds; return its value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    value, since = read(), loop.time()
    while loop.time() < deadline:
        await asyncio.sleep(0.05)
        if read() != value:
            value, since = read(), loop.time()
        elif value and loop.time() - since >= quiet:
            return value
    raise AssertionError(f"still growing after {timeout} s: {value}")


# ---------------------------------------------------------------- peers that never start


def test_hundreds_of_connections_that_never_start_are_closed() -> None:
    async def scenario() -> None:
        async with StreamServer(ServeConfig(port=0, start_timeout=0.5)) as server:
            gate = asyncio.Semaphore(50)

            async def idle_websocket() -> int | None:
                async with gate:
                    ws = await connect(server.local_url, open_timeout=30)
                await asyncio.wait_for(ws.wait_closed(), 30)
                return ws.close_code

            async def silent(request: bytes) -> bool:
                async with gate:
                    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(request)
                with contextlib.suppress(ConnectionError):
                    await asyncio.wait_for(reader.read(), 30)
                writer.close()
                return True

            codes, tcp = await asyncio.gather(
                asyncio.gather(*(idle_websocket() for _ in range(250))),
                asyncio.gather(
                    *(silent(b"") for _ in range(50)),  # not even a request line
                    *(silent(b"GET /stream HTTP/1.1\r\nHost: x\r\n") for _ in range(50)),
                    *(
                        silent(b"POST /status HTTP/1.1\r\nContent-Length: 10\r\n\r\n12")
                        for _ in range(25)
                    ),
                ),
            )
            assert set(codes) == {1008}
            assert all(tcp)
            assert not server.streams
            assert server.totals["connections"] == 250

    run(scenario(), timeout=120)


# ---------------------------------------------------------------- big, fragmented, compressed


def test_message_over_64kb_is_refused_and_over_1mb_closes_1009(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with StreamServer(ServeConfig(port=0, record_dir=tmp_path)) as server:
            watch = Watch(server)
            async with connect(server.local_url) as ws:
                await ws.send(START)
                await ws.send(media(2, FRAMES[0]))
                await ws.send(json.dumps({"event": "media", "pad": "x" * 70_000}))
                await ws.send(media(3, FRAMES[1]))
                await watch.until(lambda: watch.media == 2)
                assert any("exceeds the 64 KB limit" in e for e in watch.errors())
                await ws.send("x" * (2 * 1024 * 1024))
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1009
            await asyncio.wait_for(watch.closed.wait(), 10)

    run(scenario())
    assert wav_audio(only(tmp_path, "*.inbound.wav")) == expected(FRAMES[:2])


def test_fragmented_frames_are_reassembled_with_or_without_deflate_offered(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with StreamServer(ServeConfig(port=0, record_dir=tmp_path)) as server:
            watch = Watch(server)
            for compression in ("deflate", None):
                async with connect(server.local_url, compression=compression) as ws:
                    assert ws.protocol.extensions == []  # serve declines permessage-deflate
                    await ws.send(START)
                    for seq, payload in enumerate(FRAMES, start=2):
                        text = media(seq, payload)
                        cuts = [0, 1, len(text) // 3, len(text) - 1, len(text)]
                        await ws.send([text[a:b] for a, b in itertools.pairwise(cuts)])
                    name = f"compression={compression}"
                    await ws.send(PlayedStream("stream-1", name).to_json())
                    await watch.until(functools.partial(watch.answered, name))
            assert watch.media == 2 * len(FRAMES)

    run(scenario())
    for path in tmp_path.glob("*.inbound.wav"):
        assert wav_audio(path) == expected(FRAMES)


def test_no_compression_bomb_an_oversize_message_is_cut_at_the_size_limit(
    tmp_path: Path,
) -> None:
    # Declining permessage-deflate means a message's size on the wire is its size: a few
    # KB cannot inflate into gigabytes, and the 1 MB limit is checked from the frame header.
    async def scenario() -> None:
        async with StreamServer(ServeConfig(port=0, record_dir=tmp_path)) as server:
            watch = Watch(server)
            async with connect(server.local_url, compression="deflate") as ws:
                assert ws.protocol.extensions == []
                await ws.send(START)
                await ws.send(media(2, FRAMES[0]))
                await watch.until(lambda: watch.media == 1)
                await ws.send("A" * (2 * 1024 * 1024))
                await _until_closed(ws)
            assert ws.close_code == 1009
            await asyncio.wait_for(watch.closed.wait(), 10)

    run(scenario())
    assert wav_audio(only(tmp_path, "*.inbound.wav")) == expected(FRAMES[:1])


async def _until_closed(ws: ClientConnection) -> None:
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 20)
