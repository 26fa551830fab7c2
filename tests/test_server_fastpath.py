"""The stream server's fast path for text frames (`TextSinkConnection`), over real sockets.

A raw TCP client does the WebSocket handshake itself (no extension offered, so frames arrive as
written) and then writes masked frames made by websockets (`Frame.serialize`), split across TCP
writes exactly as each test chooses. The fast path must engage once the stream has started,
handle every frame however it is split, and give every other kind of frame to websockets with
its checks (pong, 1007, 1009, closing handshake) and the peer's order of messages intact.

How the tests see which path read a frame: `_held` is not None while the fast path owns the
byte stream (and holds exactly the bytes of a frame still arriving), and a spy on the
connection's `process_event` lists every frame websockets' own parser produced.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import wave
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.frames import Close, Frame, Opcode
from websockets.streams import StreamReader
from websockets.utils import accept_key, generate_key

from plivo_stream_cli import codec, synth
from plivo_stream_cli.adapters.server import (
    MAX_HELD_BYTES,
    WEBSOCKET_MAX_SIZE,
    LiveStream,
    ServeConfig,
    StreamServer,
    TextSinkConnection,
)
from plivo_stream_cli.events import Dtmf, Media, Start
from plivo_stream_cli.feed import Record
from plivo_stream_cli.formats import MULAW_8K
from tests.conftest import run

TIMEOUT = 10.0
FMT = MULAW_8K
FRAMES = codec.frames(codec.encode(synth.tone(440, 0.2, FMT.sample_rate), FMT), FMT)  # 10


# ------------------------------------------------------------------ messages and frames


def start_json() -> str:
    return Start("call-1", "stream-1", "MA1", ("inbound",), FMT, "", 1).to_json()


def media_json(seq: int, payload: bytes | None = None) -> str:
    if payload is None:
        payload = FRAMES[seq % len(FRAMES)]
    return Media("stream-1", "inbound", str(seq), payload, seq - 1, seq).to_json()


def dtmf_json(seq: int, digit: str = "5") -> str:
    return Dtmf("stream-1", digit, sequence_number=seq).to_json()


def masked(opcode: Opcode, data: bytes, *, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin=fin).serialize(mask=True)


def text(message: str | bytes) -> bytes:
    return masked(Opcode.TEXT, message.encode() if isinstance(message, str) else message)


def close_frame(code: int = 1000, reason: str = "") -> bytes:
    return masked(Opcode.CLOSE, Close(code, reason).serialize())


# ------------------------------------------------------------------ a raw client


class RawClient:
    """A WebSocket client on a plain asyncio stream: each `write` piece is one TCP write."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._incoming = StreamReader()  # websockets' buffer, for its frame parser
        self.close_sent = False

    @classmethod
    async def open(cls, port: int, path: str = "/stream") -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = generate_key()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        status, *lines = head.decode("latin-1").split("\r\n")
        assert status.startswith("HTTP/1.1 101"), status
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
        assert headers["sec-websocket-accept"] == accept_key(key)
        assert "sec-websocket-extensions" not in headers  # frames arrive as written
        return cls(reader, writer)

    async def write(self, *pieces: bytes) -> None:
        for piece in pieces:
            self.writer.write(piece)
            await self.writer.drain()

    async def frame(self) -> Frame:
        """The server's next frame (EOFError if the server closes the TCP stream first)."""
        parser = Frame.parse(self._incoming.read_exact, mask=False, max_size=None)
        while True:
            try:
                next(parser)
            except StopIteration as done:
                frame: Frame = done.value
                return frame
            data = await asyncio.wait_for(self.reader.read(65536), TIMEOUT)
            if data:
                self._incoming.feed_data(data)
            else:
                self._incoming.feed_eof()

    async def close_code(self) -> int:
        """Read up to the server's close frame, answer it as a client must (unless this client
        closed first), read the server's end of the TCP stream; the server's close code."""
        while (frame := await self.frame()).opcode is not Opcode.CLOSE:
            pass
        code = int(Close.parse(frame.data).code)
        if not self.close_sent:
            with contextlib.suppress(ConnectionError):  # the server may be gone already
                await self.write(close_frame(code))
        assert await asyncio.wait_for(self.reader.read(), TIMEOUT) == b""
        self.writer.close()
        return code

    async def close(self) -> int:
        """The client's side of the closing handshake: send 1000, return the server's code."""
        self.close_sent = True
        await self.write(close_frame(1000, "bye"))
        return await self.close_code()


# ------------------------------------------------------------------ helpers


async def until(condition: Callable[[], object], what: str = "condition") -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {TIMEOUT} s")
        await asyncio.sleep(0)


def checked(scenario: Coroutine[Any, Any, None]) -> Coroutine[Any, Any, None]:
    """Run the scenario with the loop's exception handler watched: nothing may leak from a
    protocol callback or a task (`data_received`, `eof_received`, `connection_lost`...)."""

    async def watched() -> None:
        leaked: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: leaked.append(ctx))
        await scenario
        await asyncio.sleep(0.05)  # let callbacks scheduled by the last close run
        assert leaked == []

    return watched()


@contextlib.asynccontextmanager
async def serving(
    record_dir: Path | None = None,
) -> AsyncIterator[tuple[StreamServer, list[Record]]]:
    records: list[Record] = []
    async with StreamServer(ServeConfig(port=0, record_dir=record_dir)) as server:
        server.subscribe(records.append)
        yield server, records


def sink_of(live: LiveStream) -> TextSinkConnection:
    assert isinstance(live.ws, TextSinkConnection)
    return live.ws


async def opened(server: StreamServer) -> tuple[RawClient, LiveStream, TextSinkConnection]:
    """A raw client whose stream has started, and the server's side of it."""
    client = await RawClient.open(server.port)
    live = await started(server, client)
    return client, live, sink_of(live)


async def started(server: StreamServer, client: RawClient, *first: bytes) -> LiveStream:
    """Send the start event (and `first` frames in the same write); the stream once the
    receive loop waits with its sink set."""
    await client.write(text(start_json()) + b"".join(first))
    await until(lambda: "stream-1" in server.streams, "stream started")
    live = server.streams["stream-1"]
    ws = sink_of(live)
    await until(
        lambda: (
            ws.text_sink is not None
            and (server.config.record_dir is None or live.recorder is not None)
        ),
        "receive loop waiting with its sink",
    )
    return live


def spy_parsed(ws: TextSinkConnection) -> list[Frame]:
    """Every frame websockets' parser hands the connection from now on."""
    parsed: list[Frame] = []
    original = ws.process_event

    def spy(event: Any) -> None:
        if isinstance(event, Frame):
            parsed.append(event)
        original(event)

    ws.process_event = spy  # type: ignore[method-assign]
    return parsed


def at(live: LiveStream, messages: int, held: bytes | None) -> Callable[[], bool]:
    """Whether the session has read `messages` text messages (the start included) and the
    connection holds `held` (None: websockets owns the byte stream)."""
    ws = sink_of(live)
    return lambda: handled(live) == messages and ws._held == held


def media_count(live: LiveStream) -> int:
    return live.session.stats.media_packets


def handled(live: LiveStream) -> int:
    """Text messages the session has read (media, dtmf, bad ones...), start included."""
    return live.session.stats.messages


def inbound(records: list[Record]) -> list[tuple[str, int]]:
    """(event, sequence number) of the caller's media and dtmf, in the feed's order."""
    return [
        (str(r["event"]), int(r["seq"]))
        for r in records
        if r.get("dir") == "in" and r["event"] in ("media", "dtmf")
    ]


def closed_records(records: list[Record]) -> list[Record]:
    return [r for r in records if r["event"] == "closed"]


def inbound_wav(directory: Path) -> bytes:
    (path,) = directory.glob("*.inbound.wav")
    return wav_pcm(path)


def wav_pcm(path: Path) -> bytes:
    with wave.open(str(path), "rb") as wav:
        return wav.readframes(wav.getnframes())


def recording_of(closed: Record) -> Path:
    """The inbound WAV a `closed` feed record lists."""
    (path,) = [
        Path(str(f["path"])) for f in closed["files"] if str(f["path"]).endswith("inbound.wav")
    ]
    return path


def pcm_of(seqs: list[int]) -> bytes:
    return b"".join(codec.decode(FRAMES[seq % len(FRAMES)], FMT) for seq in seqs)


# ------------------------------------------------------------------ the fast path engages


@pytest.mark.parametrize("per_write", [1, 3, 40], ids=["one-per-write", "three", "all-in-one"])
def test_fast_path_reads_every_frame(tmp_path: Path, per_write: int) -> None:
    seqs = list(range(2, 42))
    wires = [text(dtmf_json(s) if s % 9 == 0 else media_json(s)) for s in seqs]

    async def scenario() -> None:
        async with serving(tmp_path) as (server, records):
            client, live, ws = await opened(server)
            assert ws._held is None  # websockets read the start: it owns the stream until now
            parsed = spy_parsed(ws)
            for i in range(0, len(wires), per_write):
                await client.write(b"".join(wires[i : i + per_write]))
                # the fast path owns the stream between frames: it holds nothing
                await until(at(live, 1 + min(i + per_write, len(wires)), b""))
            assert parsed == []  # websockets' parser saw none of them
            assert live.error_count == 0
            assert await client.close() == 1000
            await until(lambda: bool(closed_records(records)), "stream closed")
        expected = [("dtmf" if s % 9 == 0 else "media", s) for s in seqs]
        assert inbound(records) == expected
        (closed,) = closed_records(records)
        assert closed["media"] == sum(1 for s in seqs if s % 9) and closed["dtmf"] == "5" * 4

    run(checked(scenario()))
    assert inbound_wav(tmp_path) == pcm_of([s for s in seqs if s % 9])


def test_frames_written_byte_by_byte_are_held_then_handled() -> None:
    short = text(dtmf_json(2, "7"))  # 7-bit length
    long = text(media_json(3))  # 16-bit length
    assert short[1] & 0x7F < 126 and long[1] & 0x7F == 126

    async def scenario() -> None:
        async with serving() as (server, records):
            client, live, ws = await opened(server)
            parsed = spy_parsed(ws)
            for number, wire in enumerate([short, long], start=2):
                for k in range(1, len(wire)):
                    await client.write(wire[k - 1 : k])
                    # exactly the bytes of the frame so far, kept until it is complete
                    await until(at(live, number - 1, wire[:k]), f"{k} bytes held")
                await client.write(wire[-1:])
                await until(at(live, number, b""))
            assert parsed == []
            assert await client.close() == 1000
        assert inbound(records) == [("dtmf", 2), ("media", 3)]

    run(checked(scenario()))


def test_a_big_frame_arriving_in_pieces_goes_to_websockets_then_the_fast_path_resumes() -> None:
    # Holding a partial frame copies it on every read that extends it: past MAX_HELD_BYTES a
    # peer trickling a big frame gets websockets' linear buffer instead, and order is kept.
    big = text(media_json(3, bytes(range(256)) * 64))  # 16 KB of audio: ~22 KB of base64
    assert MAX_HELD_BYTES < len(big) < 65536

    async def scenario() -> None:
        async with serving() as (server, records):
            client, live, ws = await opened(server)
            parsed = spy_parsed(ws)
            await client.write(text(media_json(2)))
            await until(at(live, 2, b""))
            for k in range(0, len(big) - 1, 4096):
                sent = big[: min(k + 4096, len(big) - 1)]
                await client.write(sent[k:])
                # held while small enough, then websockets' (None) until the frame is whole
                await until(at(live, 2, sent if len(sent) <= MAX_HELD_BYTES else None), "held")
            await client.write(big[-1:])
            await until(lambda: handled(live) == 3, "the big frame handled")
            assert [len(frame.data) for frame in parsed] == [len(big) - 8]  # by websockets
            await client.write(text(media_json(4)))
            await until(at(live, 4, b""))  # the fast path reads again
            assert len(parsed) == 1
            assert await client.close() == 1000
        assert inbound(records) == [("media", 2), ("media", 3), ("media", 4)]

    run(checked(scenario()))


@pytest.mark.parametrize("length", ["7-bit", "16-bit"])
def test_frame_split_right_after_its_two_byte_header(length: str) -> None:
    async def scenario() -> None:
        async with serving() as (server, records):
            client = await RawClient.open(server.port)
            live = await started(server, client)
            for seq in range(2, 6):
                wire = text(dtmf_json(seq) if length == "7-bit" else media_json(seq))
                await client.write(wire[:2])
                await until(at(live, seq - 1, wire[:2]), "header held")
                await client.write(wire[2:])
                await until(at(live, seq, b""))
            assert await client.close() == 1000
        event = "dtmf" if length == "7-bit" else "media"
        assert inbound(records) == [(event, seq) for seq in range(2, 6)]

    run(checked(scenario()))


def test_two_frames_split_at_every_point() -> None:
    # A 16-bit-length media frame and a 7-bit-length dtmf frame, one TCP write up to each split
    # point and one after it: every cut in headers, masking keys and payloads, and the carry
    # of a partial frame into a read that also completes the next one.
    async def scenario() -> None:
        async with serving() as (server, records):
            client, live, ws = await opened(server)
            parsed = spy_parsed(ws)
            seq, seqs, cut = 2, [], 1
            while True:
                first, second = text(media_json(seq)), text(dtmf_json(seq + 1))
                both = first + second
                if cut >= len(both):
                    break
                before = handled(live)
                await client.write(both[:cut])
                if cut < len(first):
                    held, done = both[:cut], 0
                else:
                    held, done = both[len(first) : cut], 1
                await until(at(live, before + done, held), f"split at {cut} held")
                await client.write(both[cut:])
                await until(at(live, before + 2, b""), f"split at {cut} handled")
                seqs += [seq, seq + 1]
                seq, cut = seq + 2, cut + 1
            assert cut > 400  # every cut of a pair of about 470 bytes
            assert parsed == [] and live.error_count == 0
            assert await client.close() == 1000
        assert [s for _, s in inbound(records)] == seqs

    run(checked(scenario()), timeout=120)


def test_frames_sent_with_the_start_are_handled_in_order() -> None:
    # The start and the first frames in one read: websockets parses them all and queues the
    # media behind the start; the fast path takes over only once that queue is empty.
    async def scenario() -> None:
        async with serving() as (server, records):
            client = await RawClient.open(server.port)
            live = await started(server, client, *(text(media_json(s)) for s in range(2, 8)))
            ws = sink_of(live)
            await until(lambda: media_count(live) == 6)
            parsed = spy_parsed(ws)
            await client.write(text(media_json(8)) + text(media_json(9)))
            await until(lambda: media_count(live) == 8)
            assert ws._held == b"" and parsed == []
            assert await client.close() == 1000
        assert inbound(records) == [("media", s) for s in range(2, 10)]

    run(checked(scenario()))


# ------------------------------------------------------------------ other frames: websockets


@pytest.mark.parametrize("layout", ["one-write", "own-write"])
def test_binary_frame_mid_stream_is_an_error_and_order_is_kept(tmp_path: Path, layout: str) -> None:
    binary = masked(Opcode.BINARY, b"\x00\x01binary")
    before = b"".join(text(media_json(s)) for s in range(2, 5))
    after = text(dtmf_json(5)) + b"".join(text(media_json(s)) for s in range(6, 9))

    async def scenario() -> None:
        async with serving(tmp_path) as (server, records):
            client, live, ws = await opened(server)
            parsed = spy_parsed(ws)
            if layout == "one-write":
                await client.write(before + binary + after)
            else:
                await client.write(before)
                await until(lambda: media_count(live) == 3)
                await client.write(binary)
                await until(lambda: live.error_count == 1)
                await client.write(after)
            await until(lambda: media_count(live) == 6)
            assert live.error_count == 1 and server.totals["errors"] == 1
            assert live.session.stats.errors == 1
            assert [f.opcode for f in parsed][:1] == [Opcode.BINARY]  # websockets read it
            # ... and the fast path takes over again at the next read
            seen = len(parsed)
            await client.write(text(media_json(9)) + text(media_json(10)))
            await until(lambda: media_count(live) == 8)
            assert len(parsed) == seen and ws._held == b""
            assert await client.close() == 1000
        assert inbound(records) == [
            *(("media", s) for s in range(2, 5)),
            ("dtmf", 5),
            *(("media", s) for s in range(6, 11)),
        ]
        errors = [str(r["error"]) for r in records if r["event"] == "error"]
        assert errors == ["binary frame of 8 bytes ignored"]

    run(checked(scenario()))
    assert inbound_wav(tmp_path) == pcm_of([2, 3, 4, *range(6, 11)])


def test_ping_gets_a_pong_between_fast_frames() -> None:
    async def scenario() -> None:
        async with serving() as (server, records):
            client, live, ws = await opened(server)
            await client.write(text(media_json(2)))
            await until(lambda: media_count(live) == 1 and ws._held == b"")
            ping = masked(Opcode.PING, b"are you there")
            await client.write(text(media_json(3)) + ping + text(media_json(4)))
            pong = await client.frame()
            assert (pong.opcode, bytes(pong.data)) == (Opcode.PONG, b"are you there")
            await until(lambda: media_count(live) == 3)
            # a ping on its own, split after its first byte (held by the fast path first)
            await client.write(ping[:1])
            await until(lambda: ws._held == ping[:1])
            await client.write(ping[1:])
            pong = await client.frame()
            assert (pong.opcode, bytes(pong.data)) == (Opcode.PONG, b"are you there")
            await client.write(text(media_json(5)))
            await until(lambda: media_count(live) == 4 and ws._held == b"")
            assert await client.close() == 1000
        assert inbound(records) == [("media", s) for s in range(2, 6)]

    run(checked(scenario()))


@pytest.mark.parametrize("layout", ["one-write", "frame-per-write"])
def test_fragmented_message_is_delivered_whole_and_in_order(layout: str) -> None:
    whole = media_json(4).encode()
    ping = masked(Opcode.PING, b"mid-message")
    fragments = [
        masked(Opcode.TEXT, whole[:7], fin=False),
        ping,  # control frames may come between fragments
        masked(Opcode.CONT, whole[7:60], fin=False),
        masked(Opcode.CONT, whole[60:]),
    ]

    async def scenario() -> None:
        async with serving() as (server, records):
            client, live, ws = await opened(server)
            head = text(media_json(2)) + text(media_json(3))
            tail = text(dtmf_json(5)) + text(media_json(6))
            if layout == "one-write":
                await client.write(head + b"".join(fragments) + tail)
                pong = await client.frame()
            else:
                await client.write(head, fragments[0], fragments[1])
                pong = await client.frame()  # so the server has read both
                assert ws._held is None  # mid-message: websockets owns the stream
                assert media_count(live) == 2
                await client.write(fragments[2])
                await until(lambda: ws.protocol.reader.buffer == b"", "fragment read")
                assert ws._held is None and media_count(live) == 2
                await client.write(fragments[3], tail)
            assert (pong.opcode, bytes(pong.data)) == (Opcode.PONG, b"mid-message")
            await until(lambda: media_count(live) == 4)
            assert live.error_count == 0
            await client.write(text(media_json(7)))
            await until(lambda: media_count(live) == 5 and ws._held == b"")
            assert await client.close() == 1000
        assert inbound(records) == [
            ("media", 2),
            ("media", 3),
            ("media", 4),
            ("dtmf", 5),
            ("media", 6),
            ("media", 7),
        ]

    run(checked(scenario()))


def test_second_start_on_the_fast_path_is_an_error_and_the_stream_goes_on() -> None:
    async def scenario() -> None:
        async with serving() as (server, records):
            client = await RawClient.open(server.port)
            live = await started(server, client)
            await client.write(text(media_json(2)) + text(start_json()) + text(media_json(3)))
            await until(at(live, 4, b""))
            assert live.error_count == 1 and server.totals["errors"] == 1
            assert list(server.streams) == ["stream-1"] and server.totals["streams"] == 1
            assert await client.close() == 1000
        errors = [str(r["error"]) for r in records if r["event"] == "error"]
        assert errors == ["start: a second start event on the same stream"]
        assert inbound(records) == [("media", 2), ("media", 3)]

    run(checked(scenario()))


def test_internal_error_in_the_sink_closes_1011_without_leaking(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `_take_now` runs inside data_received: a bug in handling must end the stream (1011),
    # never escape into the transport's callback.
    async def scenario() -> None:
        async with serving() as (server, records):
            take = server._take

            def failing(live: LiveStream, message: str) -> Any:
                if '"sequenceNumber":3,' in message:
                    raise RuntimeError("boom")
                return take(live, message)

            monkeypatch.setattr(server, "_take", failing)
            client, live, ws = await opened(server)
            await client.write(text(media_json(2)))
            await until(at(live, 2, b""))
            await client.write(text(media_json(3)))
            assert await client.close_code() == 1011
            await until(lambda: bool(closed_records(records)), "stream closed")
            assert ws._held is None
        errors = [str(r["error"]) for r in records if r["event"] == "error"]
        assert errors == ["internal error: RuntimeError: boom"]

    run(checked(scenario()))


def test_whole_text_frame_inside_a_fragmented_message_closes_1002() -> None:
    # Between fragments only continuation and control frames are legal. The fast path must
    # stay off there even when websockets holds no bytes and its queue is empty (its assembler
    # has taken the first fragment), or it would accept the frame websockets refuses.
    async def scenario() -> None:
        async with serving() as (server, records):
            client, live, ws = await opened(server)
            await client.write(text(media_json(2)))
            await until(at(live, 2, b""))
            first = media_json(3).encode()
            await client.write(masked(Opcode.TEXT, first[:10], fin=False))
            await client.write(masked(Opcode.PING, b"sync"))
            pong = await client.frame()  # the server has read the fragment
            assert pong.opcode is Opcode.PONG and ws._held is None
            assert ws.protocol.reader.buffer == b"" and len(ws.recv_messages.frames) == 0
            await client.write(text(media_json(4)))
            assert await client.close_code() == 1002
            await until(lambda: bool(closed_records(records)), "stream closed")
            assert media_count(live) == 1
        assert inbound(records) == [("media", 2)]

    run(checked(scenario()))


@pytest.mark.parametrize("layout", ["one-write", "byte-by-byte"])
def test_invalid_utf8_text_closes_1007(layout: str) -> None:
    bad = text(b'{"event":"\xff"}')

    async def scenario() -> None:
        async with serving() as (server, records):
            client, live, ws = await opened(server)
            await client.write(text(media_json(2)))
            await until(lambda: media_count(live) == 1 and ws._held == b"")
            if layout == "one-write":
                await client.write(text(media_json(3)) + bad + text(media_json(4)))
            else:
                for k in range(1, len(bad) + 1):
                    await client.write(bad[k - 1 : k])
                    if k < len(bad):
                        await until(at(live, 2, bad[:k]))
            assert await client.close_code() == 1007
            await until(lambda: bool(closed_records(records)), "stream closed")
            expected = 2 if layout == "one-write" else 1
            assert live.session.stats.media_packets == expected  # nothing after the bad frame
        assert inbound(records)[-1] == ("media", 3 if layout == "one-write" else 2)

    run(checked(scenario()))


def test_oversize_frame_closes_1009() -> None:
    async def scenario() -> None:
        async with serving() as (server, records):
            client = await RawClient.open(server.port)
            live = await started(server, client)
            await client.write(text(media_json(2)))
            await until(lambda: media_count(live) == 1)
            # Only the header: websockets refuses the length before any payload is sent.
            size = WEBSOCKET_MAX_SIZE + 1
            header = bytes([0x81, 0x80 | 127]) + size.to_bytes(8, "big") + b"\x00\x01\x02\x03"
            await client.write(header)
            assert await client.close_code() == 1009
            await until(lambda: bool(closed_records(records)), "stream closed")

    run(checked(scenario()))


def test_64bit_length_of_a_small_frame_is_read_by_websockets() -> None:
    # Legal (if not minimal) and never taken by the fast path: websockets reads it instead.
    message = media_json(3).encode()
    key = b"\x11\x22\x33\x44"
    wire = (
        bytes([0x81, 0x80 | 127])
        + len(message).to_bytes(8, "big")
        + key
        + bytes(b ^ key[i % 4] for i, b in enumerate(message))
    )

    async def scenario() -> None:
        async with serving() as (server, records):
            client, live, ws = await opened(server)
            parsed = spy_parsed(ws)
            await client.write(text(media_json(2)) + wire + text(media_json(4)))
            await until(lambda: media_count(live) == 3)
            assert [bytes(f.data) for f in parsed][:1] == [message]
            await client.write(text(media_json(5)))
            await until(lambda: media_count(live) == 4 and ws._held == b"")
            assert await client.close() == 1000
        assert inbound(records) == [("media", s) for s in range(2, 6)]

    run(checked(scenario()))


@pytest.mark.parametrize("split", [0, 1, 2], ids=["whole", "after-1-byte", "after-2-bytes"])
def test_client_close_completes_the_handshake_and_finalizes_the_recording(
    tmp_path: Path, split: int
) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as (server, records):
            client, live, ws = await opened(server)
            await client.write(b"".join(text(media_json(s)) for s in range(2, 12)))
            await until(lambda: media_count(live) == 10 and ws._held == b"")
            close = close_frame(1000, "done")
            if split == 1:  # one byte cannot tell a frame's kind: the fast path holds it
                await client.write(close[:1])
                await until(lambda: ws._held == close[:1], "close frame's first byte held")
            elif split == 2:  # two can: websockets gets them and waits for the rest
                await client.write(close[:2])
                await until(lambda: ws._held is None, "close frame given to websockets")
            await client.write(close[split:])
            assert await client.close_code() == 1000
            await until(lambda: bool(closed_records(records)), "stream closed")
            assert not server.streams
        (closed,) = closed_records(records)
        assert closed["media"] == 10
        (recording,) = [f for f in closed["files"] if str(f["path"]).endswith("inbound.wav")]
        assert recording["seconds"] == pytest.approx(0.2)

    run(checked(scenario()))
    assert inbound_wav(tmp_path) == pcm_of(list(range(2, 12)))


@pytest.mark.parametrize("how", ["eof", "reset"])
def test_end_of_stream_inside_a_held_frame_ends_only_that_stream(tmp_path: Path, how: str) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as (server, records):
            client, live, ws = await opened(server)
            partial = text(media_json(5))[:37]
            await client.write(b"".join(text(media_json(s)) for s in range(2, 5)) + partial)
            await until(lambda: media_count(live) == 3 and ws._held == partial)
            if how == "eof":
                client.writer.write_eof()  # half close: the server sees EOF mid-frame
                assert await asyncio.wait_for(client.reader.read(), TIMEOUT) == b""
                client.writer.close()
            else:
                client.writer.transport.abort()  # RST: connection_lost without EOF
            await until(lambda: bool(closed_records(records)), "stream closed")
            assert not server.streams and media_count(live) == 3
            (closed,) = closed_records(records)
            assert closed["media"] == 3

            # the server goes on serving: a second call, start to closing handshake
            other = await RawClient.open(server.port)
            second = await started(server, other)
            await other.write(b"".join(text(media_json(s)) for s in range(2, 6)))
            await until(lambda: media_count(second) == 4)
            assert await other.close() == 1000
            await until(lambda: len(closed_records(records)) == 2, "second stream closed")
        first, second_closed = closed_records(records)
        # the cut frame is not recorded; the second call gets its own files
        assert wav_pcm(recording_of(first)) == pcm_of([2, 3, 4])
        assert wav_pcm(recording_of(second_closed)) == pcm_of([2, 3, 4, 5])
        assert recording_of(first) != recording_of(second_closed)

    run(checked(scenario()))


def test_server_shutdown_while_the_fast_path_owns_the_stream(tmp_path: Path) -> None:
    # The server's close frame (1001) moves websockets out of OPEN: the client's reply, read by
    # the fast path's data_received, must go to websockets to complete the closing handshake.
    async def scenario() -> None:
        records: list[Record] = []
        server = StreamServer(ServeConfig(port=0, record_dir=tmp_path))
        await server.start()
        server.subscribe(records.append)
        try:
            client, live, ws = await opened(server)
            await client.write(b"".join(text(media_json(s)) for s in range(2, 7)))
            await until(lambda: media_count(live) == 5 and ws._held == b"")
            began = time.monotonic()
            closing = asyncio.create_task(server.close())
            # the client answers; the server ends TCP, then waits for the client to end it too
            assert await client.close_code() == 1001
            await asyncio.wait_for(closing, TIMEOUT)
            assert time.monotonic() - began < 5  # not websockets' 10 s close timeout
        finally:
            await server.close()
        (closed,) = closed_records(records)
        assert closed["media"] == 5
        assert wav_pcm(recording_of(closed)) == pcm_of([2, 3, 4, 5, 6])

    run(checked(scenario()))


def test_permessage_deflate_is_declined_so_the_fast_path_serves_such_clients() -> None:
    # An inflate per 20 ms frame costs more than it saves: serve declines the extension
    # (always allowed), so a client that offers it sends plain frames the fast path reads.
    async def scenario() -> None:
        async with serving() as (server, records):
            async with connect(server.local_url, compression="deflate") as ws:
                assert ws.protocol.extensions == []  # offered, declined
                await ws.send(start_json())
                await until(lambda: "stream-1" in server.streams)
                live = server.streams["stream-1"]
                conn = sink_of(live)
                assert conn.protocol.extensions == []
                for seq in range(2, 12):
                    await ws.send(media_json(seq))
                await until(lambda: media_count(live) == 10)
                assert conn._held is not None  # read past websockets' parser
        assert inbound(records) == [("media", s) for s in range(2, 12)]

    run(checked(scenario()))
