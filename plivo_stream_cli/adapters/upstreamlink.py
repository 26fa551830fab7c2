"""The tap's WebSocket to the bot: websockets' sans-I/O `ClientProtocol` on an asyncio `Protocol`.

I/O. The tap forwards every message both ways, so per-message overhead is what it costs: the
asyncio `ClientConnection` spends a context manager, futures and a task switch on each
message. Here bytes go from the socket to the protocol and frames to a callback, and a message
to the bot is framed and written in one call. The protocol (public sans-I/O API) still does
the handshake, masking, UTF-8 and size checks, ping answers and the closing handshake.

Backpressure: `send` returns False while the socket's write buffer is over its high-water mark
(`drained()` waits for it); the tap pauses reading the bot (`pause`/`resume`) while Plivo's
side is slower than the bot.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable

from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

Message = str | bytes
CLOSE_TIMEOUT = 5.0


class UpstreamLink(asyncio.Protocol):
    """One open (or opening) WebSocket to the bot."""

    def __init__(self, url: str, on_message: Callable[[Message], None], max_size: int) -> None:
        self.url = url
        self.ws = ClientProtocol(parse_uri(url), max_size=max_size)
        self.on_message = on_message
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._can_write: asyncio.Event = asyncio.Event()
        self._can_write.set()
        self._parts: list[bytes] = []
        self._opcode = Opcode.TEXT
        self._request_headers: list[tuple[str, str]] = []
        self._user_agent: str | None = None

    # ------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        request = self.ws.connect()
        headers = Headers(request.headers)
        for key, value in self._request_headers:
            headers[key] = value
        if self._user_agent:
            headers["User-Agent"] = self._user_agent
        request.headers = headers
        self.ws.send_request(request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Frame):
                self._frame(event)
            elif isinstance(event, Response) and not self.opened.done():
                if ws.handshake_exc is not None:
                    self.opened.set_exception(ws.handshake_exc)
                else:
                    self.opened.set_result(None)
        self._flush()

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                self._deliver(opcode, bytes(frame.data))
                return
            self._opcode, self._parts = opcode, [bytes(frame.data)]
        elif opcode is Opcode.CONT:
            self._parts.append(bytes(frame.data))
            if frame.fin:
                data, self._parts = b"".join(self._parts), []
                self._deliver(self._opcode, data)

    def _deliver(self, opcode: Opcode, data: bytes) -> None:
        if opcode is Opcode.BINARY:
            self.on_message(data)
            return
        try:
            text = data.decode()
        except UnicodeDecodeError:
            self.ws.fail(1007, "invalid UTF-8 in a text frame")
            return
        self.on_message(text)

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.ws.receive_eof()
        self._can_write.set()
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the upgrade"))
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    # ------------------------------------------------------------ for the tap

    @property
    def is_open(self) -> bool:
        return self.ws.state is State.OPEN

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code if self.ws.state is State.CLOSED else None

    @property
    def close_reason(self) -> str:
        return self.ws.close_reason or ""

    def send(self, message: Message) -> bool:
        """Frame and write one message; False while the socket's buffer is full (or closed)."""
        ws = self.ws
        if ws.state is not State.OPEN:
            return False
        if isinstance(message, str):
            ws.send_text(message.encode())
        else:
            ws.send_binary(message)
        self._flush()
        return self._can_write.is_set()

    async def drained(self) -> None:
        await self._can_write.wait()

    def pause(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    async def close(self, code: int, reason: str) -> None:
        """The closing handshake (bounded by `CLOSE_TIMEOUT`), then the socket is closed."""
        if self.ws.state is State.OPEN:
            self.ws.send_close(code, reason)
            self._flush()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.closed), CLOSE_TIMEOUT)
        if self.transport is not None:
            self.transport.abort()

    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        for data in self.ws.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                transport.write_eof()
        if self.ws.close_expected() and self.ws.state is State.CLOSED:
            transport.close()


async def open_link(
    url: str,
    on_message: Callable[[Message], None],
    *,
    headers: list[tuple[str, str]],
    user_agent: str | None,
    timeout: float,
    max_size: int,
) -> UpstreamLink:
    """Connect and upgrade; raises what `connect` would (OSError, TimeoutError, InvalidStatus)."""
    link = UpstreamLink(url, on_message, max_size)
    link._request_headers = headers
    link._user_agent = user_agent
    uri = parse_uri(url)
    context = ssl.create_default_context() if uri.secure else None
    loop = asyncio.get_running_loop()

    async def upgrade() -> None:
        await loop.create_connection(
            lambda: link,
            uri.host,
            uri.port,
            ssl=context,
            server_hostname=uri.host if context else None,
        )
        await link.opened

    try:
        await asyncio.wait_for(upgrade(), timeout)
    except BaseException:
        if link.transport is not None:
            link.transport.abort()
        raise
    return link
