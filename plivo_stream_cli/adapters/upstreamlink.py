"""A client WebSocket on websockets' sans-I/O `ClientProtocol`, driven by an asyncio `Protocol`.

I/O. Two users: the tap's socket to the bot (every message forwarded both ways) and each of
`simulate`'s calls (20 ms frames by the hundred). Both pay per message, and the asyncio
`ClientConnection` spends a context manager, futures and a task switch on each one. Here bytes
go from the socket to the protocol and messages to a callback, and a message out is framed and
written in one synchronous call. The protocol (public sans-I/O API) still does the handshake,
masking, UTF-8 and size checks, ping answers and the closing handshake.

Backpressure: `send` returns False while the socket's write buffer is over its high-water mark
(nothing is dropped: the transport keeps it); `drained()` waits for it, `when_writable` calls
back then. The tap pauses reading the bot (`pause`/`resume`) while Plivo's side is slower.

`open_link` connects directly or through a proxy: an HTTP(S) proxy by `CONNECT`, a SOCKS one
with `python-socks` (as websockets' own `connect` does; `proxy_for` picks the proxy the same way
from the standard library's settings, read once per process).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import importlib
import ssl
import time
import urllib.parse
import urllib.request
from collections.abc import Callable

from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.exceptions import InvalidProxyMessage, InvalidProxyStatus
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import WebSocketURI, parse_uri

Message = str | bytes
CLOSE_TIMEOUT = 5.0
MAX_PROXY_ANSWER = 65536  # bytes of a proxy's answer to CONNECT before giving up on it


class ClientLink(asyncio.Protocol):
    """One open (or opening) client WebSocket."""

    def __init__(
        self,
        url: str,
        on_message: Callable[[Message], None] | None,
        max_size: int | None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.url = url
        self.ws = ClientProtocol(parse_uri(url), max_size=max_size)
        self.on_message = on_message  # None: messages wait in order for `listen`
        self._held: list[Message] = []
        self.on_close = on_close
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._can_write: asyncio.Event = asyncio.Event()
        self._can_write.set()
        self._on_writable: list[Callable[[], None]] = []
        self._parts: list[bytes] = []
        self._opcode = Opcode.TEXT
        self._request_headers: list[tuple[str, str]] = []
        self._user_agent: str | None = None
        self.connect_s: float | None = None  # from the connect to the upgrade's answer

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
        message: Message = data
        if opcode is not Opcode.BINARY:
            try:
                message = data.decode()
            except UnicodeDecodeError:
                self.ws.fail(1007, "invalid UTF-8 in a text frame")
                return
        if self.on_message is None:
            self._held.append(message)
        else:
            self.on_message(message)

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.ws.receive_eof()
        self.resume_writing()
        if not self.opened.done():
            # a parse failure of the answer (websockets' InvalidMessage) says more than the loss
            failure = self.ws.handshake_exc or exc or ConnectionError("closed during the upgrade")
            self.opened.set_exception(failure)
        if not self.closed.done():
            self.closed.set_result(None)
        if self.on_close is not None:
            self.on_close()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()
        waiting, self._on_writable = self._on_writable, []
        for callback in waiting:
            callback()

    # ------------------------------------------------------------ for the link's user

    @property
    def is_open(self) -> bool:
        return self.ws.state is State.OPEN

    def listen(self, on_message: Callable[[Message], None]) -> None:
        """Hand every message to `on_message` from now on, first those that waited."""
        self.on_message = on_message
        held, self._held = self._held, []
        for message in held:
            on_message(message)

    @property
    def local_address(self) -> tuple[str, int] | None:
        return self.transport.get_extra_info("sockname") if self.transport else None

    @property
    def writable(self) -> bool:
        """False while the socket's write buffer is over its high-water mark."""
        return self._can_write.is_set()

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
        transport = self.transport
        if transport is not None:  # `_flush` without its closing checks: the socket is open
            for data in ws.data_to_send():
                transport.write(data)
        return self._can_write.is_set()

    async def drained(self) -> None:
        await self._can_write.wait()

    def when_writable(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the write buffer is below its low-water mark (now if it is)."""
        if self._can_write.is_set():
            callback()
        else:
            self._on_writable.append(callback)

    def pause(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    async def close(self, code: int = 1000, reason: str = "") -> None:
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


UpstreamLink = ClientLink  # the tap's name for it


@functools.lru_cache(maxsize=1)
def _default_context() -> ssl.SSLContext:
    # loading the system's CA store costs milliseconds: once per process, not per call
    return ssl.create_default_context()


@functools.lru_cache(maxsize=1)
def _proxies() -> dict[str, str]:
    # the environment and the system's settings, scanned once (it cost 100 frames' CPU a call)
    return urllib.request.getproxies()


@functools.lru_cache(maxsize=256)
def proxy_for(host: str, port: int, secure: bool) -> str | None:
    """The proxy websockets' `connect` would use for this server, or None (no proxy, or the
    server is in `no_proxy`): a SOCKS proxy first, else the HTTPS one, else the HTTP one; a
    `ws`/`wss` entry before all (RFC 6455's order, as websockets has it)."""
    proxies = _proxies()
    if not proxies or urllib.request.proxy_bypass(f"{host}:{port}"):
        return None
    schemes = ["wss", "socks", "https"] if secure else ["ws", "socks", "https", "http"]
    for scheme in schemes:
        proxy = proxies.get(scheme)
        if proxy is not None:
            if scheme == "socks" and proxy.startswith("http://"):
                proxy = "socks5h://" + proxy[7:]
            return proxy
    return None


class _Tunnel(asyncio.Protocol):
    """Asks an HTTP proxy to `CONNECT` and waits for its answer."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.answer.done():
            return
        self._buffer += data
        head, found, rest = self._buffer.partition(b"\r\n\r\n")
        if not found:
            if len(self._buffer) > MAX_PROXY_ANSWER:
                self.answer.set_exception(InvalidProxyMessage("the proxy's answer is too long"))
            return
        try:
            status_line, *lines = head.decode("iso-8859-1").split("\r\n")
            version, status, *reason = status_line.split(" ", 2)
            code = int(status)
            if not version.startswith("HTTP/1.") or not 100 <= code <= 599:
                raise ValueError(status_line)
        except ValueError:
            message = "did not receive a valid HTTP response from proxy"
            self.answer.set_exception(InvalidProxyMessage(message))
            return
        if not 200 <= code < 300:
            headers = Headers()
            for line in lines:
                name, _, value = line.partition(":")
                headers[name.strip()] = value.strip()
            phrase = reason[0] if reason else ""
            self.answer.set_exception(InvalidProxyStatus(Response(code, phrase, headers)))
            return
        self.answer.set_result(rest)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            message = "did not receive a valid HTTP response from proxy"
            self.answer.set_exception(InvalidProxyMessage(message))


def _connect_request(
    uri: WebSocketURI, proxy: urllib.parse.SplitResult, agent: str | None
) -> bytes:
    host = f"[{uri.host}]" if ":" in uri.host else uri.host
    default = 443 if uri.secure else 80
    lines = [f"CONNECT {host}:{uri.port} HTTP/1.1", f"Host: {host}:{uri.port}"]
    if uri.port == default:
        lines[1] = f"Host: {host}"
    if agent:
        lines.append(f"User-Agent: {agent}")
    if proxy.username is not None:
        user = urllib.parse.unquote(proxy.username)
        password = urllib.parse.unquote(proxy.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        lines.append(f"Proxy-Authorization: Basic {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _via_proxy(
    link: ClientLink,
    uri: WebSocketURI,
    proxy: str,
    context: ssl.SSLContext | None,
    agent: str | None,
) -> None:
    """Open `link`'s connection through `proxy` (its handshake then starts as usual)."""
    loop = asyncio.get_running_loop()
    parsed = urllib.parse.urlsplit(proxy)
    scheme = parsed.scheme.lower()
    if scheme.startswith("socks"):
        try:
            socks = importlib.import_module("python_socks.async_.asyncio")
        except ImportError:
            raise ImportError("connecting through a SOCKS proxy requires python-socks") from None
        rdns = scheme in ("socks5h", "socks4a")
        sock = await socks.Proxy.from_url(proxy, rdns=rdns).connect(uri.host, uri.port)
        await loop.create_connection(
            lambda: link, sock=sock, ssl=context, server_hostname=uri.host if context else None
        )
        return
    if scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"unsupported proxy {proxy!r}")
    tunnel = _Tunnel(_connect_request(uri, parsed, agent))
    secure_proxy = scheme == "https"
    transport, _ = await loop.create_connection(
        lambda: tunnel,
        parsed.hostname,
        parsed.port or (443 if secure_proxy else 80),
        ssl=_default_context() if secure_proxy else None,
        server_hostname=parsed.hostname if secure_proxy else None,
    )
    try:
        early = await tunnel.answer
        if context is not None:
            started = await loop.start_tls(transport, tunnel, context, server_hostname=uri.host)
            assert started is not None
            transport = started
    except BaseException:
        transport.abort()
        raise
    transport.set_protocol(link)
    link.connection_made(transport)
    if early:  # the server spoke first, in the proxy's packet (plain ws only)
        link.data_received(early)


async def open_link(
    url: str,
    on_message: Callable[[Message], None] | None,
    *,
    headers: list[tuple[str, str]],
    user_agent: str | None,
    timeout: float,
    max_size: int | None,
    proxy: str | None = None,
    on_close: Callable[[], None] | None = None,
) -> ClientLink:
    """Connect (through `proxy` if given) and upgrade; `on_message` None holds the messages
    until `listen`. Raises what `connect` would (OSError,
    TimeoutError, InvalidStatus, InvalidHandshake, InvalidProxy*)."""
    link = ClientLink(url, on_message, max_size, on_close)
    link._request_headers = headers
    link._user_agent = user_agent
    uri = parse_uri(url)
    context = _default_context() if uri.secure else None
    loop = asyncio.get_running_loop()

    async def upgrade() -> None:
        if proxy is not None:
            await _via_proxy(link, uri, proxy, context, user_agent)
        else:
            await loop.create_connection(
                lambda: link,
                uri.host,
                uri.port,
                ssl=context,
                server_hostname=uri.host if context else None,
            )
        await link.opened

    began = time.monotonic()
    try:
        await asyncio.wait_for(upgrade(), timeout)
        link.connect_s = time.monotonic() - began
    except BaseException:
        if link.transport is not None:
            link.transport.abort()
        raise
    return link
