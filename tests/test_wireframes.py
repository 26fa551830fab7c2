"""`wireframes.scan_text_frames` against websockets' own frame parser.

Frames are made by websockets (`Frame.serialize(mask=True)`, as a client sends them) and read
back by websockets (`Frame.parse` over a `StreamReader`): that parse is the oracle for where each
frame ends, what its unmasked payload is and what kind of frame it is. Only the rule for which
frames are *simple* (final, text, masked, no RSV bits, a 7- or 16-bit length within the limit,
valid UTF-8) is pstream's own and is written out here.
"""

from __future__ import annotations

import contextlib
import os
import struct
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ProtocolError
from websockets.frames import Close, Frame, Opcode
from websockets.streams import StreamReader
from websockets.utils import apply_mask as python_apply_mask

from plivo_stream_cli.adapters.server import WEBSOCKET_MAX_SIZE
from plivo_stream_cli.wireframes import Unmask, scan_text_frames

try:
    from websockets.speedups import apply_mask as c_apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    UNMASKS: list[Unmask] = [python_apply_mask]
else:
    UNMASKS = [c_apply_mask, python_apply_mask]

BOUNDARY_SIZES = [0, 1, 124, 125, 126, 127, 65535, 65536]


def scan(buf: bytes, limit: int, unmask: Unmask = python_apply_mask) -> tuple[list[str], int, bool]:
    """The texts `scan_text_frames` emits, in the order it emits them, and what it returns."""
    texts: list[str] = []
    used, other = scan_text_frames(buf, limit, unmask, texts.append)
    return texts, used, other


def text_frame(text: str | bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return Frame(Opcode.TEXT, data, fin=fin).serialize(mask=mask)


def long_length_frame(data: bytes, first_byte: int = 0x81) -> bytes:
    """A masked frame whose length is sent in 64 bits however small it is (which websockets'
    parser accepts, and `Frame.serialize` never writes for short payloads)."""
    key = os.urandom(4)
    return (
        struct.pack("!BBQ", first_byte, 0x80 | 127, len(data)) + key + python_apply_mask(data, key)
    )


def short16_length_frame(data: bytes) -> bytes:
    """A masked text frame whose (short) length is sent in 16 bits: also accepted by websockets."""
    key = os.urandom(4)
    return struct.pack("!BBH", 0x81, 0x80 | 126, len(data)) + key + python_apply_mask(data, key)


def header_size(wire: bytes) -> int:
    """Bytes before the payload (lengths and masking key): once they are all there, a frame's
    kind, length and masking are known. Used only to decide how strict an expectation is."""
    extra = {126: 2, 127: 8}.get(wire[1] & 0x7F, 0)
    return 2 + extra + (4 if wire[1] & 0x80 else 0)


# ------------------------------------------------------------------ the oracle


@dataclass(frozen=True)
class Seen:
    """One frame as websockets' parser reads it from the front of the stream."""

    start: int
    end: int
    text: str | None  # set for a simple frame
    payload_only: bool  # not simple only because its payload is not UTF-8


def websockets_reads(frames: list[bytes], limit: int) -> list[Seen]:
    """Parse the frames' concatenation with websockets, up to and including the first frame
    that is not simple (when websockets refuses it outright, that one too)."""
    reader = StreamReader()
    reader.feed_data(b"".join(frames))
    seen: list[Seen] = []
    pos = 0
    for wire in frames:
        before = len(reader.buffer)
        parser = Frame.parse(reader.read_exact, mask=True, max_size=None, extensions=None)
        try:
            next(parser)
        except StopIteration as done:
            frame: Frame = done.value
        except ProtocolError:  # unmasked, RSV bits without an extension, bad control frame...
            seen.append(Seen(pos, pos + len(wire), None, payload_only=False))
            return seen
        else:
            raise AssertionError("websockets wanted more bytes than the frame has")
        used = before - len(reader.buffer)
        assert used == len(wire), "websockets and the frame's maker disagree on its extent"
        data = bytes(frame.data)
        shape_ok = (
            frame.opcode is Opcode.TEXT
            and frame.fin
            and not (frame.rsv1 or frame.rsv2 or frame.rsv3)
            and used - len(data) in (6, 8)  # masked, 7- or 16-bit length (not 64-bit)
            and len(data) <= limit
        )
        text: str | None = None
        if shape_ok:
            with contextlib.suppress(UnicodeDecodeError):
                text = data.decode("utf-8")
        seen.append(Seen(pos, pos + used, text, payload_only=shape_ok and text is None))
        if text is None:
            return seen
        pos += used
    return seen


def check_scan(frames: list[bytes], cut: int, limit: int, unmask: Unmask) -> None:
    """`scan_text_frames` on the first `cut` bytes of the frames agrees with websockets."""
    buf = b"".join(frames)[:cut]
    texts, used, other = scan(buf, limit, unmask)
    expected_texts: list[str] = []
    for index, frame in enumerate(websockets_reads(frames, limit)):
        if frame.start >= cut:  # nothing of this frame in the buffer
            assert (texts, used, other) == (expected_texts, frame.start, False)
            return
        if frame.end <= cut:  # complete in the buffer
            if frame.text is not None:
                expected_texts.append(frame.text)
                continue
            assert (texts, used, other) == (expected_texts, frame.start, True)
            return
        # cut inside this frame: nothing of it is emitted and it is left whole in the buffer
        assert (texts, used) == (expected_texts, frame.start)
        present = cut - frame.start
        if frame.text is not None:
            assert other is False  # a simple frame still arriving
        elif not frame.payload_only and present >= header_size(frames[index]):
            assert other is True  # its header already shows it is not simple
        return
    assert (texts, used, other) == (expected_texts, cut, False)  # every frame simple


# ------------------------------------------------------------------ strategies


@st.composite
def utf8_text(draw: st.DrawFn, size: int) -> str:
    """Random unicode that encodes to exactly `size` bytes (padded with ASCII)."""
    head = draw(st.text(max_size=40))
    while len(head.encode()) > size:
        head = head[:-1]
    return head + "a" * (size - len(head.encode()))


text_sizes = st.one_of(
    st.sampled_from(BOUNDARY_SIZES),
    st.integers(0, 300),
    st.integers(0, 70_000),
)
small_bytes = st.binary(max_size=125)


@st.composite
def simple_frames(draw: st.DrawFn) -> bytes:
    text = draw(utf8_text(draw(text_sizes)))
    return text_frame(text)


@st.composite
def other_frames(draw: st.DrawFn) -> bytes:
    kind = draw(
        st.sampled_from(
            [
                "binary",
                "ping",
                "pong",
                "close",
                "continuation",
                "text-not-fin",
                "text-rsv",
                "text-unmasked",
                "text-bad-utf8",
                "text-64bit-length",
                "text-16bit-short",
            ]
        )
    )
    data = draw(small_bytes)
    if kind == "binary":
        return Frame(Opcode.BINARY, data).serialize(mask=True)
    if kind == "ping":
        return Frame(Opcode.PING, data).serialize(mask=True)
    if kind == "pong":
        return Frame(Opcode.PONG, data).serialize(mask=True)
    if kind == "close":
        reason = draw(st.text(max_size=20))
        return Frame(Opcode.CLOSE, Close(1000, reason).serialize()).serialize(mask=True)
    if kind == "continuation":
        return Frame(Opcode.CONT, data, fin=draw(st.booleans())).serialize(mask=True)
    if kind == "text-not-fin":
        return text_frame(draw(utf8_text(draw(text_sizes))), fin=False)
    if kind == "text-rsv":
        wire = bytearray(text_frame(draw(utf8_text(draw(st.integers(0, 300))))))
        wire[0] |= draw(st.sampled_from([0x40, 0x20, 0x10]))  # Frame refuses to write these
        return bytes(wire)
    if kind == "text-unmasked":
        return text_frame(draw(utf8_text(draw(st.integers(0, 300)))), mask=False)
    if kind == "text-bad-utf8":
        good = draw(utf8_text(draw(st.integers(0, 200)))).encode()
        bad = draw(st.sampled_from([b"\xff", b"\x80", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf"]))
        return text_frame(good + bad + draw(st.sampled_from([b"", b"tail"])))
    if kind == "text-64bit-length":
        return long_length_frame(draw(utf8_text(draw(st.integers(0, 300)))).encode())
    # 16-bit length for a payload that fits 7 bits: not minimal, but websockets reads it as text
    return short16_length_frame(draw(utf8_text(draw(st.integers(0, 125)))).encode())


frame_lists = st.lists(
    st.one_of(simple_frames(), simple_frames(), simple_frames(), other_frames()),
    max_size=8,
)
limits = st.one_of(
    st.just(WEBSOCKET_MAX_SIZE),
    st.sampled_from(BOUNDARY_SIZES),
    st.integers(0, 70_000),
)
SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ------------------------------------------------------------------ properties


@pytest.mark.parametrize("unmask", UNMASKS, ids=["c", "python"][-len(UNMASKS) :])
@SETTINGS
@given(frames=frame_lists, limit=limits, data=st.data())
def test_scan_agrees_with_websockets_on_any_cut(
    unmask: Unmask, frames: list[bytes], limit: int, data: st.DataObject
) -> None:
    total = sum(map(len, frames))
    cut = data.draw(st.integers(0, total), label="cut")
    check_scan(frames, cut, limit, unmask)


@SETTINGS
@given(frames=frame_lists, limit=limits, data=st.data())
def test_cut_near_each_frame_boundary(frames: list[bytes], limit: int, data: st.DataObject) -> None:
    # Cuts in and around headers are where length fields are half there.
    starts = [sum(map(len, frames[:i])) for i in range(len(frames) + 1)]
    base = data.draw(st.sampled_from(starts), label="frame start")
    cut = min(base + data.draw(st.integers(-3, 15), label="offset"), starts[-1])
    check_scan(frames, max(cut, 0), limit, python_apply_mask)


@SETTINGS
@given(frames=frame_lists, data=st.data())
def test_incremental_reads_emit_each_text_once(frames: list[bytes], data: st.DataObject) -> None:
    # The way the server uses it: each read is scanned after the partial frame kept from the last.
    stream = b"".join(frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12), label="cuts"))
    reads = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    seen = websockets_reads(frames, WEBSOCKET_MAX_SIZE)
    texts: list[str] = []
    held, offset, stopped_at = b"", 0, None
    for read in reads:
        buf = held + read
        used, other = scan_text_frames(buf, WEBSOCKET_MAX_SIZE, python_apply_mask, texts.append)
        offset += used
        if other:
            stopped_at = offset
            break
        held = buf[used:]
    simple = [frame.text for frame in seen if frame.text is not None]
    assert texts == simple
    # The last read ends the stream, so a frame that is not simple has been seen whole.
    first_other = next((frame.start for frame in seen if frame.text is None), None)
    if first_other is None:
        assert (stopped_at, offset, held) == (None, len(stream), b"")
    else:
        assert stopped_at == first_other


# ------------------------------------------------------------------ edge cases


def test_empty_buffer() -> None:
    assert scan(b"", WEBSOCKET_MAX_SIZE) == ([], 0, False)


def test_one_byte_is_not_consumed() -> None:
    assert scan(b"\x81", WEBSOCKET_MAX_SIZE) == ([], 0, False)
    for first in (b"\x82", b"\x89", b"\x88", b"\x01"):  # kinds a second byte would refuse
        texts, used, _ = scan(first, WEBSOCKET_MAX_SIZE)
        assert (texts, used) == ([], 0)


def test_zero_length_text_frame() -> None:
    assert scan(text_frame("") * 2, 10) == (["", ""], 12, False)


@pytest.mark.parametrize("keep", [1, 2, 3, 4, 7])
def test_16bit_header_cut_short_waits(keep: int) -> None:
    first, second = text_frame("x" * 10), text_frame("é" * 100)  # 200 bytes: 16-bit length
    assert second[1] & 0x7F == 126
    assert scan(first + second[:keep], WEBSOCKET_MAX_SIZE) == (["x" * 10], len(first), False)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 1000, 65535])
def test_limit_is_inclusive(size: int) -> None:
    wire = text_frame("z" * size)
    assert scan(wire, size) == (["z" * size], len(wire), False)
    if size:
        assert scan(wire, size - 1) == ([], 0, True)


def test_limit_checked_from_the_header_alone() -> None:
    wire = text_frame("z" * 300)
    assert scan(wire[:4], 299) == ([], 0, True)  # the rest need not arrive to refuse it
    assert scan(wire[:4], 300) == ([], 0, False)


@pytest.mark.parametrize(
    "wire",
    [
        text_frame("q" * 65536),  # websockets' own 64-bit length
        long_length_frame(b'{"event":"media"}'),  # 64-bit length for a small payload
    ],
    ids=["65536", "small"],
)
def test_64bit_length_is_other(wire: bytes) -> None:
    lead = text_frame("before")
    assert scan(lead + wire, 2**40) == (["before"], len(lead), True)
    assert scan(lead + wire[:2], 2**40) == (["before"], len(lead), True)


def test_16bit_length_of_a_short_payload_is_read() -> None:
    wire = short16_length_frame(b"short")
    assert scan(wire, WEBSOCKET_MAX_SIZE) == (["short"], len(wire), False)


def test_unmasked_frame_is_other() -> None:
    lead = text_frame("ok")
    unmasked = text_frame("hello", mask=False)
    assert scan(lead + unmasked + lead, WEBSOCKET_MAX_SIZE) == (["ok"], len(lead), True)


@pytest.mark.parametrize(
    "bad",
    [b"\xff", b"abc\x80", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80"],
    ids=["ff", "lone-continuation", "truncated", "surrogate", "overlong", "above-max"],
)
def test_invalid_utf8_is_other_and_stops_the_scan(bad: bytes) -> None:
    with pytest.raises(UnicodeDecodeError):  # what websockets' own path would refuse (1007)
        bad.decode("utf-8")
    lead, after = text_frame("first"), text_frame("after")
    assert scan(lead + text_frame(bad) + after, WEBSOCKET_MAX_SIZE) == (
        ["first"],
        len(lead),
        True,
    )


@pytest.mark.parametrize(
    "wire",
    [
        Frame(Opcode.BINARY, b"bin").serialize(mask=True),
        Frame(Opcode.PING, b"p").serialize(mask=True),
        Frame(Opcode.PONG, b"p").serialize(mask=True),
        Frame(Opcode.CLOSE, Close(1000, "").serialize()).serialize(mask=True),
        Frame(Opcode.CONT, b"c").serialize(mask=True),
        text_frame("frag", fin=False),
        bytes([0x81 | 0x40]) + text_frame("rsv1")[1:],
    ],
    ids=["binary", "ping", "pong", "close", "continuation", "not-fin", "rsv1"],
)
def test_other_kinds_stop_the_scan_before_them(wire: bytes) -> None:
    lead = text_frame("a") + text_frame("b")
    assert scan(lead + wire + text_frame("c"), WEBSOCKET_MAX_SIZE) == (
        ["a", "b"],
        len(lead),
        True,
    )


def test_emit_is_called_in_order_as_frames_are_read() -> None:
    calls: list[tuple[str, int]] = []
    texts = [f"message {i} ü" for i in range(50)] + ["y" * 5000]
    stream = b"".join(text_frame(t) for t in texts)

    def emit(text: str) -> None:
        calls.append((text, len(calls)))

    used, other = scan_text_frames(stream, WEBSOCKET_MAX_SIZE, python_apply_mask, emit)
    assert (used, other) == (len(stream), False)
    assert calls == [(t, i) for i, t in enumerate(texts)]


@pytest.mark.parametrize("unmask", UNMASKS, ids=["c", "python"][-len(UNMASKS) :])
def test_unmask_with_either_apply_mask(unmask: Unmask) -> None:
    texts = ["", "ascii", "ünïcödé 😀", "m" * 125, "n" * 126, "o" * 65535]
    stream = b"".join(text_frame(t) for t in texts)
    assert scan(stream, WEBSOCKET_MAX_SIZE, unmask) == (texts, len(stream), False)
