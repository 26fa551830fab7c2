"""A WebSocket on an asyncio `Protocol`, driven by websockets' sans-I/O protocol: both links' core.

I/O. serve and the tap forward or handle every message, so per-message overhead is what they
cost: websockets' asyncio connection spends a future, a task switch and its message assembler
per received message and an async context and a drain per sent one. Here bytes go from the
socket to the sans-I/O protocol (public API: `receive_data`, `events_received`, `send_text`,
`data_to_send`...), which still does masking, size checks, ping answers and the closing
handshake; complete messages (fragments joined, text checked as UTF-8: 1007) are handed to a
callback, all those of one socket read in one list, and a message sent is framed and written in
one call. `plivolink` (serve's side: Plivo connects to it) and `clientlink` (the tap's side
to the bot, and simulate's calls) add their handshakes.

Ordering and holds: the callback may return an awaitable when handling a message must wait (a
recorder opened in a thread, a peer's socket to drain). Reading then pauses and later messages
are held, in order, until it is done; none is dropped or reordered. Backpressure on sends:
`send` returns False once the socket's write buffer is over its high-water mark, and
`drained()` waits until asyncio says it is writable again; a peer that reads slowly pauses its
writers, never the loop, and memory stays bounded.

Framing, once the handshake is over (`frame_from_here`): websockets' parser is a chain of
generators that costs more per 20 ms frame than everything else serve does with it, so the
link splits the byte stream into frames itself and reads the plainest kind on its own: a
complete, unfragmented text or binary frame, masked as the side requires, no extension bits,
within `FAST_MAX` bytes, while the connection is open and no fragmented message is under way.
Every other frame (control frames, fragments, wrong masking, reserved bits, oversized ones) is
handed to websockets whole, from its first byte, so it sees a byte stream that starts at a frame
boundary, as if it had read the skipped frames itself, and applies all its checks to it; once
the connection is no longer open, everything goes to websockets. The usual read of a paced
peer, one whole such text frame of 126 bytes or more (a media event), takes a shorter way.
The paths give the same messages and the same close codes (tests/test_wslink.py checks them
against websockets' own on random frame streams, cut at random points or frame by frame).
`benchmarks/link_bench.py` measures what it saves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import ClassVar, cast

from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, State
from websockets.server import ServerProtocol

try:  # websockets' own C unmasking, as its frame parser uses it
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - a build of websockets without its C extension
    from websockets.utils import apply_mask

Message = str | bytes
# Called with the complete messages of one socket read, in order; an awaitable it returns
# holds every later message (and pauses reading) until it is done.
Receiver = Callable[[list[Message]], Awaitable[None] | None]
CLOSE_TIMEOUT = 5.0
INTERNAL_ERROR = 1011
INVALID_DATA = 1007
FAST_MAX = 16 * 1024  # largest frame the link reads itself (and holds while it is incomplete)
_FIN_TEXT, _FIN_BINARY = 0x81, 0x82  # first byte: FIN, no reserved bits, the opcode
_MASKED_16 = 0xFE  # second byte: masked, a 16-bit length follows
_PLAIN = (_FIN_TEXT, _FIN_BINARY)


class WebSocketLink(asyncio.Protocol):
    """One WebSocket connection: the sans-I/O protocol `ws` on an asyncio transport."""

    # False: `frame_from_here` does nothing and websockets reads every byte (the reference
    # benchmarks/link_bench.py measures the split path against).
    splits_frames: ClassVar[bool] = True

    def __init__(
        self,
        ws: Protocol,
        on_messages: Receiver | None,
        *,
        close_timeout: float = CLOSE_TIMEOUT,
        write_limit: int | None = None,
    ) -> None:
        self.ws = ws
        self.on_messages = on_messages  # None: messages are held until `attach`
        self.close_timeout = close_timeout
        self.write_limit = write_limit
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.closed: asyncio.Future[None] = loop.create_future()  # the TCP connection is gone
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._on_writable: list[Callable[[], None]] = []
        self._parts: list[bytes] = []
        self._opcode = Opcode.TEXT
        self._held: deque[list[Message]] = deque()
        self._holding = on_messages is None
        self._idle = asyncio.Event()  # no message being handled or held
        self._idle.set()
        self._release_task: asyncio.Task[None] | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._framing = False  # the link splits frames itself (see the module's docstring)
        self._masked = 1 if isinstance(ws, ServerProtocol) else 0  # the MASK bit peers must set
        self._fast_max = FAST_MAX
        self._partial = bytearray()  # the start of a frame not yet complete
        self._to_ws = 0  # bytes websockets still needs to finish the frame it is reading

    # ------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (uvloop's is not an asyncio.Transport subclass, only alike)
        self.transport = stream = cast(asyncio.Transport, transport)
        if self.write_limit is not None:
            stream.set_write_buffer_limits(high=self.write_limit)
        # Reading goes on while messages are held: the handshake must be read, and the first
        # read that brings messages to hold pauses it (`_deliver`).

    def data_received(self, data: bytes) -> None:
        if self._framing:
            self._frames(data)
            return
        ws = self.ws
        ws.receive_data(data)
        self._handle(ws.events_received())
        self._flush()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._handle(self.ws.events_received())
        self._flush()
        return None  # never written to after EOF: the closing handshake is over or moot

    def connection_lost(self, exc: Exception | None) -> None:
        self.ws.receive_eof()
        self.resume_writing()  # nothing will drain now: writers waiting hear of it at once
        if self._close_timer is not None:
            self._close_timer.cancel()
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()
        waiting, self._on_writable = self._on_writable, []
        for callback in waiting:
            callback()

    # ------------------------------------------------------------ receiving

    def frame_from_here(self, max_size: int | None) -> None:
        """Split frames from now on: websockets has read exactly the handshake, no byte more.

        `max_size` is the limit websockets was given (frames over it are its to refuse).
        """
        if self.splits_frames and self.ws.state is State.OPEN:
            self._framing = True
            if max_size is not None:
                self._fast_max = min(FAST_MAX, max_size)

    def _frames(self, data: bytes) -> None:
        """One read while the link splits frames: plain ones read here, others by websockets."""
        ws = self.ws
        n = len(data)
        if (  # the usual read: one whole masked text frame of 126 bytes or more (a media event)
            n > 8
            and data[0] == _FIN_TEXT
            and data[1] == _MASKED_16
            and n == 8 + ((data[2] << 8) | data[3])
            and n - 8 <= self._fast_max
            and self._masked
            and not (self._to_ws or self._partial or self._parts)
            and ws.state is State.OPEN
        ):
            try:
                text = str(apply_mask(data[8:], data[4:8]), "utf-8")
            except UnicodeDecodeError:
                pass  # read again below, which fails the connection as it should
            else:
                self._deliver([text])
                return
        batch: list[Message] = []
        fed = False  # websockets was given bytes: it may have frames to send (pong, close)
        if self._to_ws:
            fed = True
            rest = self._to_ws
            if len(data) <= rest:
                self._to_ws = rest - len(data)
                ws.receive_data(data)
                data = b""
            else:
                self._to_ws = 0
                ws.receive_data(data[:rest])
                data = data[rest:]
            if not self._collect(ws.events_received(), batch):
                self._hand_over(data, batch)
                data = b""
        buf: bytes | bytearray = data
        if self._partial:
            self._partial += data
            buf = self._partial
        n = len(buf)
        pos = 0
        masked, limit = self._masked, self._fast_max
        # Only websockets changes its state, and only when given bytes (or failed): read once
        # here and again after each frame handed to it, not per frame.
        is_open = ws.state is State.OPEN
        while n - pos >= 2:
            if not is_open:  # closing: websockets has the rest, as it is
                self._hand_over(buf[pos:], batch)
                fed, pos = True, n
                break
            first, second = buf[pos], buf[pos + 1]
            length = second & 0x7F
            head = pos + 2
            if length == 126:
                if n - head < 2:
                    break
                length = (buf[head] << 8) | buf[head + 1]
                head += 2
            elif length == 127:
                if n - head < 8:
                    break
                length = int.from_bytes(buf[head : head + 8], "big")
                head += 8
            if second & 0x80:
                head += 4
            end = head + length
            if first in _PLAIN and second >> 7 == masked and length <= limit and not self._parts:
                if end > n:
                    break  # the rest of it in a later read
                payload = buf[head:end]
                if masked:
                    payload = apply_mask(payload, buf[head - 4 : head])
                pos = end
                if first == _FIN_BINARY:
                    batch.append(bytes(payload))
                    continue
                try:
                    batch.append(str(payload, "utf-8"))
                except UnicodeDecodeError:
                    ws.fail(INVALID_DATA, "invalid UTF-8 in a text frame")
                    self._hand_over(buf[pos:], batch)
                    fed, pos = True, n
                    break
                continue
            # Anything else is websockets' to read, from its first byte to its last.
            take = min(end, n)
            ws.receive_data(bytes(buf[pos:take]))
            fed, pos = True, take
            self._to_ws = end - take
            if not self._collect(ws.events_received(), batch):
                self._hand_over(buf[pos:], batch)
                pos = n
                break
            is_open = ws.state is State.OPEN
        if buf is self._partial:
            del self._partial[:pos]
        elif pos < n:
            self._partial = bytearray(buf[pos:])
        if batch:
            self._deliver(batch)
        if fed:
            self._flush()

    def _hand_over(self, rest: bytes | bytearray, batch: list[Message]) -> None:
        """Stop splitting: websockets reads `rest` and all after it (once the connection is
        closing or failing; a failing one discards it)."""
        self._framing = False
        self.ws.receive_data(bytes(rest))
        self._collect(self.ws.events_received(), batch)

    def _handle(self, events: Iterable[object]) -> None:
        """Frames to messages; messages to the receiver (or held); other events to `_event`."""
        batch: list[Message] = []
        self._collect(events, batch)
        if batch:
            self._deliver(batch)

    def _collect(self, events: Iterable[object], batch: list[Message]) -> bool:
        """Add the messages among websockets' `events` to `batch`; False once it failed 1007."""
        for event in events:
            if isinstance(event, Frame):
                opcode = event.opcode
                if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                    if not event.fin:
                        self._opcode, self._parts = opcode, [bytes(event.data)]
                        continue
                    data = bytes(event.data)
                elif opcode is Opcode.CONT:
                    self._parts.append(bytes(event.data))
                    if not event.fin:
                        continue
                    opcode, data, self._parts = self._opcode, b"".join(self._parts), []
                else:
                    continue  # ping, pong and close: the protocol answers them
                if opcode is Opcode.BINARY:
                    batch.append(data)
                    continue
                try:
                    batch.append(data.decode())
                except UnicodeDecodeError:
                    self.ws.fail(INVALID_DATA, "invalid UTF-8 in a text frame")
                    return False  # nothing after it is a message
            else:
                self._event(event)
        return True

    def _event(self, event: object) -> None:
        """A handshake event (Request or Response): the subclass's."""

    def _deliver(self, batch: list[Message]) -> None:
        if self._holding:
            self._held.append(batch)
            if self.transport is not None:
                self.transport.pause_reading()  # a bounded hold: one read's worth at most
            return
        receiver = self.on_messages
        assert receiver is not None
        try:
            pending = receiver(batch)
        except Exception:
            self._internal_error()
            raise
        if pending is not None:
            self._hold(pending)

    def _hold(self, pending: Awaitable[None] | None) -> None:
        self._holding = True
        self._idle.clear()
        if self.transport is not None:
            self.transport.pause_reading()
        self._release_task = self.loop.create_task(self._release(pending))

    async def _release(self, pending: Awaitable[None] | None) -> None:
        """Finish what is pending, then hand over the held messages in order; then read on."""
        try:
            if pending is not None:
                await pending
            while self._held:
                receiver = self.on_messages
                assert receiver is not None
                pending = receiver(self._held.popleft())
                if pending is not None:
                    await pending
        except Exception:
            self._internal_error()
            raise
        finally:
            self._holding = False
            self._idle.set()
            self._release_task = None
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.resume_reading()

    def _internal_error(self) -> None:
        """A receiver that raised: the connection cannot go on (like a handler that failed)."""
        self._held.clear()
        if self.ws.state is State.OPEN:
            self.ws.fail(INTERNAL_ERROR, "internal error")
            self._flush()

    def attach(self, on_messages: Receiver) -> None:
        """Start handing messages to `on_messages` (those held until now first)."""
        self.on_messages = on_messages
        if self._held:
            self._hold(None)
            return
        self._holding = False
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    async def finished(self) -> None:
        """Wait until the connection is gone and every message it brought was handled."""
        await asyncio.shield(self.closed)
        await self._idle.wait()

    # ------------------------------------------------------------ state

    @property
    def framing(self) -> bool:
        """The link splits frames itself (after `frame_from_here`, while the connection is open)."""
        return self._framing

    @property
    def held_bytes(self) -> int:
        """Bytes of an incomplete frame the link holds (at most `FAST_MAX` and a head)."""
        return len(self._partial)

    @property
    def is_open(self) -> bool:
        return self.ws.state is State.OPEN

    @property
    def close_code(self) -> int | None:
        """The close code once the connection is closed (None before, as websockets has it)."""
        return self.ws.close_code if self.ws.state is State.CLOSED else None

    @property
    def close_reason(self) -> str | None:
        return self.ws.close_reason if self.ws.state is State.CLOSED else None

    @property
    def remote_address(self) -> object:
        return self.transport.get_extra_info("peername") if self.transport else None

    @property
    def remote(self) -> str:
        """`host:port` of the peer (for logs and feed records)."""
        return address_text(self.remote_address)

    @property
    def local_address(self) -> object:
        return self.transport.get_extra_info("sockname") if self.transport else None

    # ------------------------------------------------------------ sending

    def send(self, message: Message) -> bool:
        """Frame and write one message; False while the socket's buffer is over its mark.

        Raises `ConnectionClosed` once the connection is closing or closed.
        """
        return self.send_many((message,))

    def send_many(self, messages: Iterable[Message]) -> bool:
        """Frame several messages and write them in one go; like `send` otherwise."""
        ws = self.ws
        if ws.state is not State.OPEN:
            raise self._closed()
        for message in messages:
            if isinstance(message, str):
                ws.send_text(message.encode())
            else:
                ws.send_binary(message)
        self._flush()
        return self._can_write.is_set()

    def _closed(self) -> ConnectionClosed:
        """What a send raises once the connection is closing or closed (as websockets')."""
        ws = self.ws
        if ws.state is State.CLOSED:
            return ws.close_exc
        # closing: websockets' close_exc is only for a closed connection
        return ConnectionClosed(ws.close_rcvd, ws.close_sent, ws.close_rcvd_then_sent)

    @property
    def writable(self) -> bool:
        return self._can_write.is_set()

    def when_writable(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the write buffer is under its low-water mark (now if it is)."""
        if self._can_write.is_set():
            callback()
        else:
            self._on_writable.append(callback)

    async def drained(self) -> None:
        """Wait until the write buffer is under its low-water mark (or the connection is gone)."""
        await self._can_write.wait()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """The closing handshake (bounded by `close_timeout`), then the socket is closed."""
        if self.ws.state is State.OPEN:
            self.ws.send_close(code, reason)
            self._flush()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.closed), self.close_timeout)
        if self.transport is not None:
            self.transport.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        ws = self.ws
        data = ws.data_to_send()
        if not data:
            return
        if len(data) == 1 and data[0]:
            transport.write(data[0])
        else:  # several frames: one write (one system call), as `send_many` promises
            parts: list[bytes] = []
            for chunk in data:
                if chunk:
                    parts.append(chunk)
                    continue
                if parts:
                    transport.write(b"".join(parts))
                    parts = []
                if transport.can_write_eof():  # b"": the end of what this side sends
                    transport.write_eof()
            if parts:
                transport.write(b"".join(parts))
        if ws.close_expected() and self._close_timer is None:
            # The peer should close the TCP connection now; one that does not is cut off.
            self._close_timer = self.loop.call_later(self.close_timeout, transport.abort)


def address_text(address: object) -> str:
    """A socket address as `host:port` (anything else as its text)."""
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address or "")


__all__ = [
    "CLOSE_TIMEOUT",
    "ConnectionClosed",
    "Message",
    "Receiver",
    "WebSocketLink",
    "address_text",
]
