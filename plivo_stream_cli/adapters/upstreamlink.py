"""The tap's WebSocket to the bot: websockets' sans-I/O `ClientProtocol` on an asyncio `Protocol`.

I/O. The client side of `wslink.WebSocketLink` (framing, message assembly, holds and
backpressure are there): this module opens the TCP (or TLS) connection, sends the upgrade
request with the headers the tap passes on, and reports the bot's answer. The protocol
(public sans-I/O API) still does the handshake, masking, UTF-8 and size checks, ping answers
and the closing handshake.
"""

from __future__ import annotations

import asyncio
import ssl

from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.http11 import Response
from websockets.uri import parse_uri

from plivo_stream_cli.adapters.wslink import CLOSE_TIMEOUT, Message, Receiver, WebSocketLink

__all__ = ["CLOSE_TIMEOUT", "Message", "UpstreamLink", "open_link"]


class UpstreamLink(WebSocketLink):
    """One open (or opening) WebSocket to the bot."""

    def __init__(
        self,
        url: str,
        on_messages: Receiver,
        max_size: int,
        *,
        headers: list[tuple[str, str]] | None = None,
        user_agent: str | None = None,
    ) -> None:
        super().__init__(ClientProtocol(parse_uri(url), max_size=max_size), on_messages)
        self.url = url
        self.opened: asyncio.Future[None] = self.loop.create_future()
        self._request_headers = headers or []
        self._user_agent = user_agent

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

    def _event(self, event: object) -> None:
        if isinstance(event, Response) and not self.opened.done():
            if self.ws.handshake_exc is not None:
                self.opened.set_exception(self.ws.handshake_exc)
            else:
                self.opened.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the upgrade"))

    @property
    def close_reason(self) -> str:
        return self.ws.close_reason or ""


async def open_link(
    url: str,
    on_messages: Receiver,
    *,
    headers: list[tuple[str, str]],
    user_agent: str | None,
    timeout: float,
    max_size: int,
) -> UpstreamLink:
    """Connect and upgrade; raises what `connect` would (OSError, TimeoutError, InvalidStatus)."""
    link = UpstreamLink(url, on_messages, max_size, headers=headers, user_agent=user_agent)
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
        link.abort()
        raise
    return link
