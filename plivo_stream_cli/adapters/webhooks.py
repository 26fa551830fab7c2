"""Plain HTTP on the stream server's own port: `/healthz`, the Answer URL and status callbacks.

Plivo needs the Answer URL and the stream on one public host (one tunnel), so HTTP shares the
WebSocket port; `Routes` answers the requests. `plivolink.PlivoLink` reads each connection's
first request (GETs through websockets' parser, other methods with `parse_head` and
`ChunkedBody` here) and hands every request that is not the stream's upgrade to `Routes.route`
as an `HttpRequest`; the `HttpResponse` goes back `serialize`d, and the connection closes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from websockets.http11 import Request

from plivo_stream_cli.feed import Record, note_record
from plivo_stream_cli.signature import valid_host

if TYPE_CHECKING:
    from plivo_stream_cli.adapters.gate import SignatureGate
    from plivo_stream_cli.adapters.server import ServeConfig

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 256 * 1024


@dataclass
class HttpRequest:
    """One plain HTTP request, whichever path it came in by."""

    method: str
    target: str  # path with query, as sent
    headers: dict[str, str]  # keys lower-cased
    body: bytes = b""
    remote: str = ""

    @property
    def path(self) -> str:
        return target_path(self.target)

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(self.target.partition("?")[2].partition("#")[0], keep_blank_values=True)

    @property
    def form(self) -> dict[str, list[str]]:
        """Form fields of a urlencoded POST body (empty otherwise)."""
        ctype = self.headers.get("content-type", "")
        if self.body and "application/x-www-form-urlencoded" in ctype:
            return parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)
        return {}


@dataclass
class HttpResponse:
    status: int
    body: str = ""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


Route = Callable[[HttpRequest], Awaitable[HttpResponse | None]]


def target_path(target: str) -> str:
    """The path of a request target, whatever the peer sent (`urlsplit` raises on some)."""
    try:
        return urlsplit(target).path
    except ValueError:  # e.g. an absolute-form target with broken IPv6 brackets
        return target.partition("?")[0].partition("#")[0]


def from_websockets_request(request: Request, remote: str) -> HttpRequest:
    headers = {k.lower(): v for k, v in request.headers.raw_items()}
    method = getattr(request, "method", "GET")  # websockets < 14 has no Request.method
    return HttpRequest(method, request.path, headers, b"", remote)


def serialize(response: HttpResponse) -> bytes:
    body = response.body.encode()
    status = HTTPStatus(response.status)
    lines = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in response.headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class BodyTooLarge(ValueError):
    """A chunked body grew past its limit."""


_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
MAX_CHUNK_LINE = 4096  # a size line (with extensions) or a trailer line


class ChunkedBody:
    """Decodes a `Transfer-Encoding: chunked` body as it arrives, at most `limit` bytes of it.

    `feed` returns True once the last chunk and the trailers have arrived (`body` is then the
    whole body); it raises `BodyTooLarge`, or `ValueError` for a malformed body. Incremental, so
    a body trickled a byte at a time costs linear time. Extensions and trailers are skipped.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.body = bytearray()
        self._pending = b""  # bytes not yet decoded
        self._state = "size"  # size | data | crlf | trailer | done
        self._left = 0  # bytes of the current chunk still to come
        self._trailers = 0

    def feed(self, data: bytes) -> bool:
        buf = self._pending + data if self._pending else data
        while self._state != "done":
            if self._state == "data":
                take = buf[: self._left]
                self.body += take
                self._left -= len(take)
                buf = buf[len(take) :]
                if self._left:
                    break
                self._state = "crlf"
            elif self._state == "crlf":
                if len(buf) < 2:
                    break
                if buf[:2] != b"\r\n":
                    raise ValueError("a chunk does not end with CRLF")
                buf, self._state = buf[2:], "size"
            else:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > MAX_CHUNK_LINE:
                        raise ValueError("a chunk line is too long")
                    break
                line, buf = buf[:end], buf[end + 2 :]
                if self._state == "size":
                    self._size_line(line)
                elif not line:
                    self._state = "done"
                else:
                    self._trailers += len(line) + 2
                    if self._trailers > MAX_CHUNK_LINE:
                        raise ValueError("trailers too long")
        self._pending = buf if self._state != "done" else b""
        return self._state == "done"

    def _size_line(self, line: bytes) -> None:
        size_text = line.split(b";", 1)[0].strip(b" \t")
        if not _CHUNK_SIZE.fullmatch(size_text):
            raise ValueError(f"bad chunk size {size_text[:20]!r}")
        size = int(size_text, 16)
        if size == 0:
            self._state = "trailer"
            return
        if len(self.body) + size > self.limit:
            raise BodyTooLarge(f"body over {self.limit} bytes")
        self._left, self._state = size, "data"


def parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    method = parts[0] if parts else ""
    target = parts[1] if len(parts) > 1 else "/"
    headers: dict[str, str] = {}
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip().lower()] = value.strip()
    return method, target, headers


class Routes:
    """serve's plain HTTP routes: `/healthz`, the Answer URL, status callbacks, and extras.

    Webhooks pass the signature gate first (form fields of a POST are signed too); a refusal
    is a 403, published and counted like a refused stream.
    """

    def __init__(
        self,
        config: ServeConfig,
        gate: SignatureGate,
        publish: Callable[[Record], None],
        refused: Callable[[], None],
        local_base: Callable[[], str],
    ) -> None:
        self.config = config
        self.gate = gate
        self.publish = publish
        self._refused = refused
        self._local_base = local_base  # host:port serve listens on, for a request without Host

    async def route(self, request: HttpRequest) -> HttpResponse | None:
        if request.path == "/healthz":
            return HttpResponse(200, "ok\n")
        builtin: dict[str, Route] = {"/answer": self._answer, "/status": self._status}
        route = self.config.extra_routes.get(request.path) or builtin.get(request.path)
        if route is None:
            return HttpResponse(HTTPStatus.NOT_FOUND, "not found\n")
        if request.method not in ("GET", "POST"):
            return HttpResponse(HTTPStatus.METHOD_NOT_ALLOWED, "use GET or POST\n")
        return await route(request)

    def public_base(self, host: str) -> str:
        """https://public-host when known, else http://<Host header> (local testing)."""
        if self.config.public_url:
            public = urlsplit(self.config.public_url)
            scheme = {"wss": "https", "ws": "http"}.get(public.scheme, public.scheme)
            return f"{scheme}://{public.netloc}"
        host = host if valid_host(host) else ""  # a broken Host must not reach the XML
        return f"http://{host or self._local_base()}"

    def answer_xml(self, host: str = "") -> str:
        """The Stream XML that points Plivo at this server's own stream path."""
        from plivo_stream_cli.streamxml import StreamOptions, build_xml

        base = self.public_base(host)
        ws_base = "wss" + base[5:] if base.startswith("https") else "ws" + base[4:]
        template = self.config.answer or StreamOptions(url="")
        options = replace(
            template,
            url=ws_base + self.config.path,
            status_callback_url=template.status_callback_url or f"{base}/status",
        )
        return build_xml(options, speak=self.config.speak)

    async def _webhook_refused(self, request: HttpRequest) -> HttpResponse | None:
        params = {k: v for k, v in request.form.items()} if request.method == "POST" else None
        ok, why = await self.gate.check(request.method, request.target, request.headers, params)
        if ok:
            return None
        self._refused()
        self.publish(
            note_record(
                "rejected",
                t=time.time(),
                remote=request.remote,
                reason=f"{request.path}: {why}",
                action="HTTP 403",
            )
        )
        return HttpResponse(HTTPStatus.FORBIDDEN, "invalid signature\n")

    async def _answer(self, request: HttpRequest) -> HttpResponse:
        refused = await self._webhook_refused(request)
        if refused is not None:
            return refused
        fields = _first_values(request.form or request.query)
        self.publish(
            note_record(
                "answer",
                t=time.time(),
                remote=request.remote,
                call=fields.get("CallUUID"),
                caller=fields.get("From"),
                to=fields.get("To"),
            )
        )
        xml = self.answer_xml(request.headers.get("host", ""))
        return HttpResponse(200, xml, content_type="application/xml; charset=utf-8")

    async def _status(self, request: HttpRequest) -> HttpResponse:
        refused = await self._webhook_refused(request)
        if refused is not None:
            return refused
        fields = _first_values(request.form or request.query)
        stream = fields.get("StreamID") or fields.get("StreamId") or ""
        self.publish(note_record("status", t=time.time(), stream=stream, fields=fields))
        return HttpResponse(200, "ok\n")


def _first_values(fields: dict[str, list[str]]) -> dict[str, str]:
    return {key: values[0] if values else "" for key, values in fields.items()}
