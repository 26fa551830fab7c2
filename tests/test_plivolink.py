"""`plivolink`/`wslink`: serve's connections on websockets' sans-I/O protocol, over real sockets.

What the link must keep whatever the bytes look like on the wire: every message, in order,
however the frames are cut into socket reads; order across a message whose handling waits
(the start event); bounded memory when a peer reads slower than we write; plain HTTP on the
same port however its request is cut.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import Callable
from typing import Any, ClassVar

from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Frame, Opcode

from plivo_stream_cli import codec, synth
from plivo_stream_cli.adapters.livestream import LiveStream
from plivo_stream_cli.adapters.server import ServeConfig, StreamServer
from plivo_stream_cli.events import Media, Start
from plivo_stream_cli.formats import MULAW_8K
from tests.conftest import run

FMT = MULAW_8K
START = Start("call-1", "stream-1", "MA1", ("inbound",), FMT).to_json()
HANDSHAKE = (
    b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def media(seq: int, payload: bytes) -> str:
    return Media("stream-1", "inbound", str(seq * 20), payload, seq, seq).to_json()


def frame(data: str | bytes, opcode: Opcode = Opcode.TEXT, fin: bool = True) -> bytes:
    payload = data.encode() if isinstance(data, str) else data
    return Frame(opcode, payload, fin=fin).serialize(mask=True)


async def tcp(port: int, *, rcvbuf: int | None = None) -> tuple[Any, asyncio.StreamWriter]:
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each write its own segment
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock)


async def until(check: Callable[[], bool], timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def media_seqs(records: list[dict[str, Any]]) -> list[int]:
    return [int(r["seq"]) for r in records if r["event"] == "media"]


def test_frames_cut_at_every_byte_keep_every_message_in_order() -> None:
    # Frame k of the stream is cut after its k-th byte (and a ping, a binary frame and a
    # fragmented message are cut the same way), each part its own TCP segment and socket read.
    payloads = codec.frames(codec.encode(synth.tone(440, 8.0, 8000), FMT), FMT)
    texts = [media(seq, p) for seq, p in enumerate(payloads, start=2)]
    wire = [frame(START)]
    pings = 0
    for index, text in enumerate(texts):
        if index % 50 == 7:
            wire.append(frame(b"ping!", Opcode.PING))
            wire.append(frame(b"\x00\x01", Opcode.BINARY))
            pings += 1
        if index % 50 == 9:
            wire += [
                frame(text[:5], fin=False),
                frame(text[5:60], Opcode.CONT, fin=False),
                frame(text[60:], Opcode.CONT),
            ]
        else:
            wire.append(frame(text))
    assert max(len(w) for w in wire) < len(wire)  # every cut position is used

    async def scenario() -> None:
        records: list[dict[str, Any]] = []
        async with StreamServer(ServeConfig(port=0)) as server:
            server.subscribe(records.append)
            reader, writer = await tcp(server.port)
            # the upgrade request cut too, and the first frame right behind it
            writer.write(HANDSHAKE[:20])
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(HANDSHAKE[20:])
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101")
            for index, data in enumerate(wire):
                cut = index % len(data) or 1
                writer.write(data[:cut])
                await writer.drain()
                await asyncio.sleep(0.001)
                writer.write(data[cut:])
            await writer.drain()
            await until(lambda: len(media_seqs(records)) == len(texts))
            (live,) = server.streams.values()
            assert live.session.stats.errors == pings  # the binary frames, counted
            pongs = 0
            while pongs < pings:  # every ping answered, unmasked, with its payload
                first = await reader.readexactly(2)
                body = await reader.readexactly(first[1] & 0x7F)
                assert first[0] == 0x8A and body == b"ping!"
                pongs += 1
            writer.close()
        assert media_seqs(records) == list(range(2, len(texts) + 2))

    run(scenario())


class SlowStart(LiveStream):
    """A stream whose start event takes a while to handle (as a slow disk makes the recorder)."""

    held_reading: ClassVar[list[bool]] = []

    async def on_start(self, event: Start) -> None:
        await asyncio.sleep(0.3)
        transport = self.ws.transport
        assert transport is not None
        self.held_reading.append(transport.is_reading())
        await super().on_start(event)


def test_messages_behind_an_awaited_start_wait_in_order_and_reading_pauses() -> None:
    payloads = codec.frames(codec.encode(synth.tone(440, 2.0, 8000), FMT), FMT)
    burst = [frame(START)]
    for seq, payload in enumerate(payloads, start=2):
        burst.append(frame(media(seq, payload)))
        if seq % 10 == 0:
            burst.append(frame(b"\x00", Opcode.BINARY))

    async def scenario() -> None:
        records: list[dict[str, Any]] = []
        async with StreamServer(ServeConfig(port=0)) as server:
            server.stream_class = SlowStart
            server.subscribe(records.append)
            reader, writer = await tcp(server.port)
            # the upgrade and every frame in one write: they arrive before the stream exists
            writer.write(HANDSHAKE + b"".join(burst[:40]))
            await reader.readuntil(b"\r\n\r\n")
            await asyncio.sleep(0.05)
            writer.write(b"".join(burst[40:]))  # and more while the start is being handled
            await until(lambda: len(media_seqs(records)) == len(payloads))
            writer.close()
        assert SlowStart.held_reading == [False]  # nothing read while the start was handled
        events = [r["event"] for r in records if r["event"] in ("start", "media")]
        assert events == ["start"] + ["media"] * len(payloads)
        assert media_seqs(records) == list(range(2, len(payloads) + 2))

    run(scenario())


def test_a_peer_that_reads_nothing_gets_bounded_buffers_and_all_later() -> None:
    # serve plays 1200 s of audio (12.8 MB, more than the kernel's socket buffers hold; no
    # pacing) to a peer that stops reading: the write buffer stays near its high-water mark
    # and playback waits; once the peer reads, every byte comes.
    seconds = 1200
    pcm = synth.tone(440, 1.0, 8000) * seconds

    async def scenario() -> None:
        config = ServeConfig(port=0, play_audio=pcm, max_buffer=10 * seconds)
        async with StreamServer(config) as server:
            reader, writer = await tcp(server.port, rcvbuf=4096)
            writer.write(HANDSHAKE)
            await reader.readuntil(b"\r\n\r\n")
            writer.transport.pause_reading()
            writer.write(frame(START))
            await until(lambda: "stream-1" in server.streams)
            live = server.streams["stream-1"]
            await asyncio.sleep(1.0)
            sent = live.session.stats.play_bytes
            assert 0 < sent < seconds * 8000 / 2
            transport = live.ws.transport
            assert transport is not None
            assert transport.get_write_buffer_size() <= 64 * 1024 + 4 * config.max_b64
            writer.transport.resume_reading()
            got = 0
            while got < seconds * 8000:
                first = await reader.readexactly(2)
                size = first[1] & 0x7F
                if size == 126:
                    size = int.from_bytes(await reader.readexactly(2), "big")
                body = json.loads(await reader.readexactly(size))
                if body["event"] == "playAudio":
                    got += len(base64.b64decode(body["media"]["payload"]))
            assert got == seconds * 8000
            writer.close()

    run(scenario(), timeout=120)


def test_plain_http_cut_at_every_byte_is_answered() -> None:
    body = b"CallUUID=abc&StreamID=s-1&Event=StartStream"
    post = (
        b"POST /status HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"

    async def scenario() -> None:
        records: list[dict[str, Any]] = []
        async with StreamServer(ServeConfig(port=0)) as server:
            server.subscribe(records.append)
            for request, answer in ((post, b"ok\n"), (get, b"ok\n")):
                reader, writer = await tcp(server.port)
                for byte in request:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.0005)
                response = await asyncio.wait_for(reader.read(), 10)  # then the server closes
                assert response.startswith(b"HTTP/1.1 200 OK\r\n"), response
                assert response.endswith(b"\r\n\r\n" + answer)
                writer.close()
        assert [r["stream"] for r in records if r["event"] == "status"] == ["s-1"]

    run(scenario())


def test_tap_bot_that_reads_nothing_pauses_plivo_and_loses_nothing() -> None:
    # The bot stops reading: the tap stops reading Plivo (its buffers stay bounded, the
    # caller's sends back up into the kernel); when the bot reads again, every frame arrives.
    # 400 media messages of 3 s each (32 KB of base64): 12.8 MB, more than the kernel buffers
    audio = codec.encode(synth.tone(440, 1200.0, 8000), FMT)
    payloads = [audio[i : i + 24000] for i in range(0, len(audio), 24000)]
    resume = asyncio.Event()
    got: list[int] = []

    async def bot(ws: ServerConnection) -> None:
        transport = ws.transport
        transport.pause_reading()
        await resume.wait()
        transport.resume_reading()
        async for message in ws:
            event = json.loads(message)
            if event["event"] == "media":
                got.append(int(event["sequenceNumber"]))

    async def scenario() -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the bot's, inherited
        listener.bind(("127.0.0.1", 0))
        async with serve(bot, sock=listener, compression=None) as bot_server:
            bot_port = next(iter(bot_server.sockets)).getsockname()[1]
            try:
                await tapped(bot_port)
            finally:
                resume.set()  # else the bot's server waits for its handler forever

    async def tapped(bot_port: int) -> None:
        config = ServeConfig(port=0, upstream=f"ws://127.0.0.1:{bot_port}/ws")
        async with StreamServer(config) as server:
            reader, writer = await tcp(server.port)
            writer.write(HANDSHAKE)
            await reader.readuntil(b"\r\n\r\n")
            writer.write(frame(START))
            await until(lambda: "stream-1" in server.streams)
            live = server.streams["stream-1"]
            await until(lambda: getattr(live, "upstream", None) is not None)
            flood = asyncio.ensure_future(
                _write_all(writer, [frame(media(s, p)) for s, p in enumerate(payloads, 2)])
            )
            plivo = live.ws.transport
            assert plivo is not None
            await until(lambda: not plivo.is_reading())  # Plivo's side paused
            await asyncio.sleep(0.5)
            upstream = live.upstream  # type: ignore[attr-defined]
            assert upstream.transport.get_write_buffer_size() <= 256 * 1024
            assert not plivo.is_reading()
            assert live.session.stats.media_packets < len(payloads)
            assert not flood.done()  # the caller's writes are backed up
            resume.set()
            await asyncio.wait_for(flood, 30)
            await until(lambda: len(got) == len(payloads), timeout=30)
            writer.close()
        assert got == list(range(2, len(payloads) + 2))

    run(scenario(), timeout=120)


async def _write_all(writer: asyncio.StreamWriter, frames: list[bytes]) -> None:
    for data in frames:
        writer.write(data)
        await writer.drain()


def test_a_request_followed_by_a_half_close_still_gets_its_answer() -> None:
    # e.g. `printf 'GET /healthz ...' | nc -N`: the peer shuts its side down after the request
    async def scenario() -> None:
        async with StreamServer(ServeConfig(port=0)) as server:
            reader, writer = await tcp(server.port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            writer.write_eof()
            response = await asyncio.wait_for(reader.read(), 10)
            assert response.startswith(b"HTTP/1.1 200 OK\r\n"), response
            writer.close()

    run(scenario())
