"""`wslink`: the link's own frame splitting against websockets' parser, on random frame streams.

The link reads plain frames itself once the handshake is over and hands every other frame to
websockets whole. Two links on the same bytes, one splitting frames and one giving websockets
everything, must agree on what matters: the messages (in order, per socket read), what is
written back (pongs, close frames: byte for byte on the server side), the state and the close
codes. The streams mix what a peer may send, well-formed or not: text and binary frames,
fragmented messages with control frames between their parts, pings, closes, invalid UTF-8,
reserved bits, wrong masking, unknown opcodes, non-minimal lengths, frames over `FAST_MAX`
and over `max_size`; and they are cut into reads at random points.
"""

from __future__ import annotations

import itertools
import os
import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Protocol, State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from plivo_stream_cli.adapters.clientlink import ClientLink
from plivo_stream_cli.adapters.wslink import FAST_MAX, Message, WebSocketLink
from tests.conftest import run

MAX_SIZE = FAST_MAX + 4096  # frames between FAST_MAX and this are websockets' to read, and pass
HANDSHAKE = (
    b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class Transport:
    """What the link writes, and whether it paused or closed (an asyncio transport's surface)."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    abort = close

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.written += b"<EOF>"

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


def header(first: int, length: int, mask: bytes | None, form: str = "min") -> bytes:
    """A frame head: `first` byte, then the length in its minimal or a longer form."""
    bit = 0x80 if mask is not None else 0
    if form == "16" or (form == "min" and 126 <= length < 65536):
        head = bytes([first, bit | 126]) + struct.pack("!H", length)
    elif form == "64" or (form == "min" and length >= 65536):
        head = bytes([first, bit | 127]) + struct.pack("!Q", length)
    else:
        head = bytes([first, bit | length])
    return head + (mask or b"")


def masked(payload: bytes, mask: bytes | None) -> bytes:
    if mask is None:
        return payload
    return bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def wire(first: int, payload: bytes, mask: bytes | None, form: str = "min") -> bytes:
    return header(first, len(payload), mask, form) + masked(payload, mask)


TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
FIN = 0x80

texts = (st.text(max_size=40) | st.text(min_size=120, max_size=400)).map(str.encode)
blobs = st.binary(max_size=40)
bad_utf8 = st.sampled_from([b"\xff", b"ab\xc3", b"\xed\xa0\x80", b"ok\x80ok"])


@st.composite
def frames(draw: Any, from_client: bool) -> bytes:
    """One frame (or a fragmented message) as a peer may send it, right or wrong."""
    right = os.urandom(4) if from_client else None  # the masking this side must use
    wrong = None if from_client else b"\x01\x02\x03\x04"
    kind = draw(
        st.sampled_from(
            ["text"] * 6
            + ["binary"] * 2
            + ["fragments", "ping", "pong", "close", "big", "huge", "long-form"]
            + ["wrong-mask", "rsv", "bad-opcode", "stray-cont", "bad-ping", "empty"]
        )
    )
    if kind == "text":
        return wire(FIN | TEXT, draw(texts), right)
    if kind == "binary":
        return wire(FIN | BINARY, draw(blobs), right)
    if kind == "empty":
        return wire(FIN | draw(st.sampled_from([TEXT, BINARY])), b"", right)
    if kind == "fragments":
        parts = draw(st.lists(texts, min_size=2, max_size=4))
        out = wire(TEXT, parts[0], right)
        for i, part in enumerate(parts[1:], 1):
            between = draw(st.sampled_from(["", "", "ping", "text"]))
            if between == "ping":  # allowed between the parts
                out += wire(FIN | PING, b"in-between", right)
            elif between == "text":  # another message inside this one: 1002
                out += wire(FIN | TEXT, b"intruder" * draw(st.sampled_from([1, 20])), right)
            out += wire((FIN if i == len(parts) - 1 else 0) | CONT, part, right)
        return out
    if kind == "ping":
        return wire(FIN | PING, draw(blobs), right)
    if kind == "pong":
        return wire(FIN | PONG, draw(blobs), right)
    if kind == "close":
        code = draw(st.sampled_from([1000, 1001, 1011, 999, 4000]))
        return wire(FIN | CLOSE, struct.pack("!H", code) + b"bye", right)
    if kind == "big":  # over FAST_MAX, under max_size: websockets reads it, and it passes
        return wire(FIN | draw(st.sampled_from([TEXT, BINARY])), b"x" * (FAST_MAX + 10), right)
    if kind == "huge":  # over max_size: 1009
        return wire(FIN | TEXT, b"y" * (MAX_SIZE + 1), right)
    if kind == "long-form":  # a short payload in a 16- or 64-bit length
        return wire(FIN | TEXT, draw(texts), right, draw(st.sampled_from(["16", "64"])))
    if kind == "wrong-mask":
        return wire(FIN | TEXT, draw(texts), wrong)
    if kind == "rsv":
        return wire(FIN | 0x40 | TEXT, draw(texts), right)
    if kind == "bad-opcode":
        return wire(FIN | 0x3, draw(blobs), right)
    if kind == "stray-cont":
        return wire(FIN | CONT, draw(texts), right)
    return wire(FIN | PING, b"z" * 126, right)  # a control frame too long: 1002


def streams(from_client: bool) -> st.SearchStrategy[tuple[bytes, list[int]]]:
    @st.composite
    def build(draw: Any) -> tuple[bytes, list[int]]:
        parts = draw(st.lists(frames(from_client), min_size=1, max_size=12))
        data = b"".join(parts)
        whole = draw(st.booleans())  # a read per frame, as a paced peer's frames come
        if draw(st.booleans()):
            # Text that is not UTF-8 comes last: websockets parses a whole read before the link
            # decodes its text, so after such a frame the plain link may act on frames (a ping,
            # a frame over max_size) that the splitting link, failing at once with 1007, never
            # reads. That case has its own test below.
            mask = os.urandom(4) if from_client else None
            data += wire(FIN | TEXT, draw(bad_utf8), mask)
        if whole:
            return data, frame_ends(data)
        cuts = draw(st.lists(st.integers(0, len(data)), max_size=10))
        return data, sorted(set(cuts))

    return build()


def frame_ends(data: bytes) -> list[int]:
    """Where each frame of `data` ends (its headers are read as `header` writes them)."""
    ends, pos = [], 0
    while pos + 2 <= len(data):
        length, head = data[pos + 1] & 0x7F, pos + 2
        if length == 126:
            length, head = int.from_bytes(data[head : head + 2], "big"), head + 2
        elif length == 127:
            length, head = int.from_bytes(data[head : head + 8], "big"), head + 8
        pos = head + (4 if data[pos + 1] & 0x80 else 0) + length
        ends.append(min(pos, len(data)))
    return ends


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def open_server() -> ServerProtocol:
    ws = ServerProtocol(max_size=MAX_SIZE)
    ws.receive_data(HANDSHAKE)
    request = ws.events_received()[0]
    assert isinstance(request, Request)
    ws.send_response(ws.accept(request))
    ws.data_to_send()
    return ws


def collect(link: WebSocketLink) -> list[list[Message]]:
    reads: list[list[Message]] = []

    def receive(batch: list[Message]) -> None:
        reads.append(list(batch))

    link.attach(receive)
    return reads


def feed(link: WebSocketLink, chunks: list[bytes]) -> tuple[list[list[Message]], Transport]:
    reads = collect(link)
    transport = Transport()
    link.connection_made(transport)  # type: ignore[arg-type]
    for chunk in chunks:
        link.data_received(chunk)
    link.eof_received()
    return reads, transport


def written(transport: Transport, by_server: bool) -> list[tuple[int, bytes]]:
    """What a link wrote, parsed into frames (the client's masks are random)."""
    data = bytes(transport.written)
    eof = data.endswith(b"<EOF>")
    reader = open_client() if by_server else open_server()
    reader.receive_data(data.removesuffix(b"<EOF>"))
    frames = [e for e in reader.events_received() if isinstance(e, Frame)]
    return [(int(f.opcode), bytes(f.data)) for f in frames] + ([(-1, b"EOF")] if eof else [])


def same_writes(split: Transport, plain: Transport, by_server: bool) -> None:
    """The same frames written back, pongs and closes, in the same order."""
    assert written(split, by_server) == written(plain, by_server)


def outcome(ws: Protocol) -> tuple[Any, ...]:
    rcvd, sent = ws.close_rcvd, ws.close_sent
    return (
        ws.state,
        (rcvd.code, rcvd.reason) if rcvd else None,
        (sent.code, sent.reason) if sent else None,
    )


FAST = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))


@FAST
@given(streams(from_client=True))
def test_server_side_splitting_agrees_with_websockets(case: tuple[bytes, list[int]]) -> None:
    data, cuts = case

    async def both() -> None:
        split = WebSocketLink(open_server(), None)
        split.frame_from_here(MAX_SIZE)
        plain = WebSocketLink(open_server(), None)
        got = feed(split, pieces(data, cuts))
        want = feed(plain, pieces(data, cuts))
        assert got[0] == want[0]  # the same messages, in the same reads
        same_writes(got[1], want[1], by_server=True)
        assert outcome(split.ws) == outcome(plain.ws)

    run(both())


def open_client() -> ClientProtocol:
    ws = ClientProtocol(parse_uri("ws://127.0.0.1/stream"), max_size=MAX_SIZE)
    request = ws.connect()
    ws.send_request(request)
    ws.data_to_send()
    server = ServerProtocol()
    key = request.headers["Sec-WebSocket-Key"].encode()
    server.receive_data(HANDSHAKE.replace(b"dGhlIHNhbXBsZSBub25jZQ==", key))
    answer = server.events_received()[0]
    assert isinstance(answer, Request)
    server.send_response(server.accept(answer))
    ws.receive_data(b"".join(server.data_to_send()))
    assert isinstance(ws.events_received()[0], Response)
    return ws


@FAST
@given(streams(from_client=False))
def test_client_side_splitting_agrees_with_websockets(case: tuple[bytes, list[int]]) -> None:
    data, cuts = case

    async def both() -> None:
        split = WebSocketLink(open_client(), None)
        split.frame_from_here(MAX_SIZE)
        plain = WebSocketLink(open_client(), None)
        got = feed(split, pieces(data, cuts))
        want = feed(plain, pieces(data, cuts))
        assert got[0] == want[0]
        same_writes(got[1], want[1], by_server=False)
        assert outcome(split.ws) == outcome(plain.ws)

    run(both())


def test_frames_right_behind_the_upgrade_answer_are_split_by_the_link() -> None:
    """ClientLink gives websockets the answer's head only, then splits what follows it."""

    async def go() -> None:
        link = ClientLink("ws://127.0.0.1/stream", None, MAX_SIZE)
        reads = collect(link)
        transport = Transport()
        link.connection_made(transport)  # type: ignore[arg-type]
        request = bytes(transport.written)
        server = ServerProtocol()
        server.receive_data(request)
        answer = server.events_received()[0]
        assert isinstance(answer, Request)
        server.send_response(server.accept(answer))
        server.send_text(b"hello")
        server.send_binary(b"\x00\x01")
        both = b"".join(server.data_to_send())
        for i in range(len(both)):  # one byte per read: the head's end found wherever it falls
            link.data_received(both[i : i + 1])
        assert link.opened.done() and link.opened.exception() is None
        assert link.ws.state is State.OPEN
        assert [m for batch in reads for m in batch] == ["hello", b"\x00\x01"]
        assert link.framing  # the split path is the one under test

    run(go())


def test_a_frame_trickled_a_byte_at_a_time_is_held_bounded_and_read_once() -> None:
    async def go() -> None:
        link = WebSocketLink(open_server(), None)
        link.frame_from_here(MAX_SIZE)
        payload = b"m" * (FAST_MAX - 1)
        reads = collect(link)
        link.connection_made(Transport())  # type: ignore[arg-type]
        data = wire(FIN | TEXT, payload, b"\x0a\x0b\x0c\x0d")
        for i in range(len(data)):
            link.data_received(data[i : i + 1])
            assert link.held_bytes <= FAST_MAX + 14
        assert reads == [[payload.decode()]]

    run(go())


def test_text_that_is_not_utf8_fails_at_once_and_nothing_behind_it_is_read() -> None:
    async def go() -> None:
        link = WebSocketLink(open_server(), None)
        link.frame_from_here(MAX_SIZE)
        mask = b"\x01\x02\x03\x04"
        data = (
            wire(FIN | TEXT, b"before", mask)
            + wire(FIN | TEXT, b"\xff", mask)
            + wire(FIN | PING, b"p", mask)
            + wire(FIN | TEXT, b"after", mask)
            + wire(FIN | TEXT, b"y" * (MAX_SIZE + 1), mask)
        )
        reads, transport = feed(link, [data])
        assert reads == [["before"]]
        assert written(transport, by_server=True)[0] == (
            int(Opcode.CLOSE),
            (1007).to_bytes(2, "big") + b"invalid UTF-8 in a text frame",
        )
        assert not any(op == int(Opcode.PONG) for op, _ in written(transport, by_server=True))
        assert link.ws.close_sent is not None and link.ws.close_sent.code == 1007

    run(go())


def test_a_whole_text_frame_read_alone_inside_a_fragmented_message_fails_1002() -> None:
    async def go() -> None:
        mask = os.urandom(4)
        data = (
            wire(TEXT, b"first", mask)
            + wire(FIN | TEXT, b"intruder" * 20, mask)  # the shape of the link's usual read
            + wire(FIN | CONT, b"last", mask)
        )
        link = WebSocketLink(open_server(), None)
        link.frame_from_here(MAX_SIZE)
        reads, _ = feed(link, pieces(data, frame_ends(data)))
        assert reads == []
        assert link.ws.close_sent is not None and link.ws.close_sent.code == 1002

    run(go())
