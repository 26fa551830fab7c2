"""A client WebSocket: websockets' sans-I/O `ClientProtocol` on `wslink.WebSocketLink`.

I/O. Two users: the tap's socket to the bot (every message forwarded both ways) and each of
`simulate`'s calls (20 ms frames by the hundred). Framing, message assembly, holds and
backpressure are `wslink`'s; this module opens the TCP (or TLS) connection, directly or
through a proxy, sends the upgrade request with the headers its user passes, and reports the
server's answer. The protocol (public sans-I/O API) still does the handshake, masking, UTF-8 and
size checks, ping answers and the closing handshake.

Proxies: an HTTP(S) proxy by `CONNECT`, a SOCKS one with `python-socks` (as websockets' own
`connect` does; `proxy_for` picks the proxy the same way from the standard library's
settings, read once per process). websockets' proxy support lives in its asyncio `connect`,
which this link replaces, so the `CONNECT` request is written here.
"""

from __future__ import annotations

import asyncio
import base64
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
from websockets.http11 import Response
from websockets.uri import WebSocketURI, parse_uri

from plivo_stream_cli.adapters.wslink import CLOSE_TIMEOUT, Message, Receiver, WebSocketLink

__all__ = ["CLOSE_TIMEOUT", "ClientLink", "Message", "open_link", "proxy_for"]
MAX_PROXY_ANSWER = 65536  # bytes of a proxy's answer to CONNECT before giving up on it
MAX_ANSWER_HEAD = 65536  # bytes of the upgrade's answer kept apart before websockets has it all


class ClientLink(WebSocketLink):
    """One open (or opening) client WebSocket."""

    def __init__(
        self,
        url: str,
        on_messages: Receiver | None,
        max_size: int | None,
        *,
        headers: list[tuple[str, str]] | None = None,
        user_agent: str | None = None,
    ) -> None:
        super().__init__(ClientProtocol(parse_uri(url), max_size=max_size), on_messages)
        self.url = url
        self.opened: asyncio.Future[None] = self.loop.create_future()
        self.connect_s: float | None = None  # from the connect to the upgrade's answer
        self._request_headers = headers or []
        self._user_agent = user_agent
        self._max_size = max_size
        self._answer: bytes | None = b""  # the upgrade's answer until its head is complete

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        ws = self.ws
        assert isinstance(ws, ClientProtocol)
        request = ws.connect()
        headers = Headers(request.headers)
        for key, value in self._request_headers:
            headers[key] = value
        if self._user_agent:
            headers["User-Agent"] = self._user_agent
        request.headers = headers
        ws.send_request(request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        if self._answer is None:
            super().data_received(data)
            return
        # websockets gets the answer's head and no byte more, so that frames sent right
        # behind it are split by the link (`frame_from_here`)
        answer = self._answer + data
        end = answer.find(b"\r\n\r\n")
        if end < 0:
            if len(answer) <= MAX_ANSWER_HEAD:
                self._answer = answer
                return
            end = len(answer) - 4  # not HTTP, or a head too long: websockets says so
        self._answer = None
        super().data_received(answer[: end + 4])
        self.frame_from_here(self._max_size)
        if end + 4 < len(answer):
            self.data_received(answer[end + 4 :])

    def eof_received(self) -> bool | None:
        self._give_answer()
        return super().eof_received()

    def _give_answer(self) -> None:
        """The connection ends inside the answer's head: websockets reads what came of it."""
        answer, self._answer = self._answer, None
        if answer:
            super().data_received(answer)

    def _event(self, event: object) -> None:
        if isinstance(event, Response) and not self.opened.done():
            if self.ws.handshake_exc is not None:
                self.opened.set_exception(self.ws.handshake_exc)
            else:
                self.opened.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._give_answer()
        super().connection_lost(exc)
        if not self.opened.done():
            # a parse failure of the answer (websockets' InvalidMessage) says more than the loss
            failure = self.ws.handshake_exc or exc or ConnectionError("closed during the upgrade")
            self.opened.set_exception(failure)

    @property
    def close_reason(self) -> str:
        return self.ws.close_reason or ""

    def listen(self, on_message: Callable[[Message], None]) -> None:
        """Hand each message to `on_message` from now on, those held until now first."""

        def each(batch: list[Message]) -> None:
            for message in batch:
                on_message(message)

        self.attach(each)


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
    on_messages: Receiver | None,
    *,
    headers: list[tuple[str, str]],
    user_agent: str | None,
    timeout: float,
    max_size: int | None,
    proxy: str | None = None,
) -> ClientLink:
    """Connect (through `proxy` if given) and upgrade; `on_messages` None holds the messages
    until `attach`/`listen`. Raises what websockets' `connect` would (OSError, TimeoutError,
    InvalidStatus, InvalidHandshake, InvalidProxy*)."""
    link = ClientLink(url, on_messages, max_size, headers=headers, user_agent=user_agent)
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
    except BaseException:
        link.abort()
        raise
    link.connect_s = time.monotonic() - began
    return link
