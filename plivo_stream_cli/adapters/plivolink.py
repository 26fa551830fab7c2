"""serve's side of a connection Plivo (or anyone) opens: HTTP on the stream port, then the stream.

I/O. One `PlivoLink` per accepted TCP connection, from its first byte to its close: it reads
the first request, answers plain HTTP itself and hands WebSocket upgrades of the stream path
to websockets' sans-I/O `ServerProtocol` (handshake checks, masking, UTF-8 and size limits,
ping answers, closing handshake); once open, it is a `wslink.WebSocketLink` (each socket
read's complete messages to the stream in one call, holds, sends with backpressure).

- A GET is parsed by websockets. For the stream path it is accepted or refused (400/426) by
  websockets' own checks, and `on_open` gets the open link (the signature gate and the stream
  run there). Any other GET goes to `route`.
- Other methods (Plivo POSTs form-encoded webhooks; websockets parses only GET) are read
  here, `Content-Length` or chunked, at most `MAX_BODY_BYTES` of body, and go to `route`.
- A request that does not complete within `open_timeout` (not even a request line, a head cut
  short, a body that never comes) is cut off; so is a peer that does not close the TCP
  connection `close_timeout` after the closing handshake.

Every plain HTTP answer ends its connection (`Connection: close`), as websockets does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from http import HTTPStatus

from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from plivo_stream_cli.adapters.webhooks import (
    MAX_BODY_BYTES,
    MAX_HEAD_BYTES,
    BodyTooLarge,
    ChunkedBody,
    HttpRequest,
    HttpResponse,
    Route,
    from_websockets_request,
    parse_head,
    serialize,
    target_path,
)
from plivo_stream_cli.adapters.wslink import CLOSE_TIMEOUT, WebSocketLink

WRITE_LIMIT = 32 * 1024  # the write buffer's high-water mark (websockets' asyncio default)

__all__ = ["WRITE_LIMIT", "PlivoLink"]


class PlivoLink(WebSocketLink):
    """One accepted connection: its HTTP request, then (upgraded) its WebSocket."""

    def __init__(
        self,
        *,
        path: str,
        route: Route,
        on_open: Callable[[PlivoLink], None],
        open_timeout: float,
        max_size: int,
        close_timeout: float = CLOSE_TIMEOUT,
        write_limit: int = WRITE_LIMIT,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__(
            # no extensions: permessage-deflate is declined
            ServerProtocol(max_size=max_size, logger=logger),
            None,  # messages are held until the stream attaches
            close_timeout=close_timeout,
            write_limit=write_limit,
        )
        self.path = path
        self.route = route
        self.on_open = on_open
        self.open_timeout = open_timeout
        self.max_size = max_size
        self.request: Request | None = None  # the upgrade request, once accepted
        self._sniffing = True  # reading the first request (not yet a WebSocket)
        self._buffer = b""
        self._head: tuple[str, str, dict[str, str]] | None = None
        self._chunks: ChunkedBody | None = None
        self._open_timer: asyncio.TimerHandle | None = None
        self._route_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._open_timer = self.loop.call_later(self.open_timeout, self._open_expired)

    def data_received(self, data: bytes) -> None:
        if self._framing:  # an open stream: the per-frame case, spared a call
            self._frames(data)
        elif self._sniffing:
            self._sniff(data)
        else:
            super().data_received(data)

    def eof_received(self) -> bool | None:
        if self._route_task is not None:
            return True  # a complete request, its answer on the way: written, then closed
        if self._sniffing:
            return None  # a request cut short: nothing to answer
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_open_timer()
        super().connection_lost(exc)

    def _open_expired(self) -> None:
        self._open_timer = None
        if self._sniffing and self.transport is not None:
            self.transport.abort()

    def _stop_open_timer(self) -> None:
        if self._open_timer is not None:
            self._open_timer.cancel()
            self._open_timer = None

    # ------------------------------------------------------------ the first request

    def _sniff(self, data: bytes) -> None:
        self._buffer += data
        if self._head is None:
            buffer = self._buffer
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    self._reply(HttpResponse(431, "request head too large\n"))
                return
            if buffer.split(b" ", 1)[0] == b"GET":
                self._get(buffer[: end + 4], buffer[end + 4 :])
                return
            self._head = parse_head(buffer[:end])
            self._buffer = buffer[end + 4 :]
        self._maybe_dispatch()

    def _get(self, head: bytes, rest: bytes) -> None:
        """A GET's head: websockets parses it; the stream path upgrades, others are routed."""
        self._buffer = b""
        ws = self.ws
        assert isinstance(ws, ServerProtocol)
        ws.receive_data(head)
        request = next((e for e in ws.events_received() if isinstance(e, Request)), None)
        if request is None:  # not a request websockets accepts (it answered or will close)
            self._sniffing = False
            self._stop_open_timer()
            self._flush()
            self._end()
            return
        if target_path(request.path) != self.path:
            self._dispatch(from_websockets_request(request, self.remote))
            return
        response = ws.accept(request)
        ws.send_response(response)
        self._sniffing = False
        self._stop_open_timer()
        self._flush()
        if ws.state is not State.OPEN:  # refused by websockets' checks (400, 426...)
            self._end()
            return
        self.request = request
        self.frame_from_here(self.max_size)  # websockets was given the head and no byte more
        self.on_open(self)
        if rest:  # frames the peer sent right behind its request
            super().data_received(rest)

    def _maybe_dispatch(self) -> None:
        assert self._head is not None
        method, target, headers = self._head
        if "transfer-encoding" in headers:
            body = self._chunked_body(headers)
            if body is None:
                return
        else:
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY_BYTES:
                self._reply(HttpResponse(413, "bad or too large Content-Length\n"))
                return
            if len(self._buffer) < length:
                return
            body, self._buffer = self._buffer[:length], b""
        self._head = None
        self._dispatch(HttpRequest(method, target, headers, body, self.remote))

    def _chunked_body(self, headers: dict[str, str]) -> bytes | None:
        """The body of a chunked request once complete (None: not yet, or refused)."""
        if self._chunks is None:
            if headers["transfer-encoding"].strip().lower() != "chunked":
                self._reply(HttpResponse(501, "only chunked Transfer-Encoding is supported\n"))
                return None
            if "content-length" in headers:  # ambiguous framing: how requests are smuggled
                self._reply(HttpResponse(400, "both Content-Length and Transfer-Encoding\n"))
                return None
            self._chunks = ChunkedBody(MAX_BODY_BYTES)
        data, self._buffer = self._buffer, b""
        try:
            if not self._chunks.feed(data):
                return None
        except BodyTooLarge:
            self._reply(HttpResponse(413, "request body too large\n"))
            return None
        except ValueError as exc:
            self._reply(HttpResponse(400, f"bad chunked body: {exc}\n"))
            return None
        return bytes(self._chunks.body)

    def _dispatch(self, request: HttpRequest) -> None:
        """Answer a plain HTTP request with `route` (nothing more is read from this peer)."""
        self._stop_open_timer()
        self._buffer = b""
        if self.transport is not None:
            self.transport.pause_reading()
        # held here so the task is not garbage-collected mid-flight
        self._route_task = self.loop.create_task(self._answer(request))

    async def _answer(self, request: HttpRequest) -> None:
        try:
            response = await self.route(request)
        except Exception as exc:  # a bug in a route must not kill the server
            response = HttpResponse(500, f"internal error: {type(exc).__name__}\n")
        self._reply(response or HttpResponse(HTTPStatus.NOT_FOUND, "not found\n"))

    def _reply(self, response: HttpResponse) -> None:
        self._sniffing = False
        self._stop_open_timer()
        if self.transport is None:
            return
        with contextlib.suppress(Exception):
            self.transport.write(serialize(response))
        self._end()

    def _end(self) -> None:
        """Close after what is buffered is written (a plain HTTP answer, a refused upgrade)."""
        if self.transport is not None:
            self.transport.close()

    # ------------------------------------------------------------ for the stream

    @property
    def opening(self) -> bool:
        """Still reading or answering its first request (not a WebSocket yet)."""
        return self.ws.state is State.CONNECTING
