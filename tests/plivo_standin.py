"""A real HTTP server on 127.0.0.1 that stands in for Plivo's REST API in tests.

It is strict the way Plivo is: a request must match a scripted (method, path) exactly, trailing
slash included, carry Basic auth with the stand-in's credentials, and (when it has a body) send a
JSON object. Everything is recorded. Each route answers from a script of `Reply`s, the last one
repeating: any status and body, extra headers (Retry-After), or `hang=True` to hold the request
unanswered until the server stops.

Usage (any test file; pytest puts tests/ on sys.path):

    from plivo_standin import PlivoStandIn, Reply

    with PlivoStandIn() as api:
        api.route("GET", f"/v1/Account/{api.auth_id}/Call/abc/Stream/", Reply(200, {...}))
        ... point the code at api.url with api.auth_id / api.auth_token ...
        assert api.requests[0].json == {...}
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

AUTH_ID = "MASTANDIN0000000000X"
AUTH_TOKEN = "standin-token-c0ffee-DO-NOT-PRINT"
HANG_LIMIT = 30.0  # a hanging request is released at the latest after this, or when stopped


@dataclass(frozen=True)
class Reply:
    """One scripted answer. `body` is JSON-encoded unless it is a str (sent as is)."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


@dataclass(frozen=True)
class Recorded:
    """A request as the stand-in saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


class PlivoStandIn:
    """The server; use as a context manager (or start()/stop())."""

    def __init__(self, auth_id: str = AUTH_ID, auth_token: str = AUTH_TOKEN) -> None:
        self.auth_id = auth_id
        self.auth_token = auth_token
        self.requests: list[Recorded] = []
        self._routes: dict[tuple[str, str], deque[Reply]] = {}
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def account_path(self, *parts: str) -> str:
        """A path under this account, written out with its trailing slash."""
        return "/".join(("/v1/Account", self.auth_id, *parts)) + "/"

    def route(self, method: str, path: str, *replies: Reply) -> None:
        """Answer `method path` with `replies` in turn; the last one repeats."""
        with self._lock:
            self._routes[(method.upper(), path)] = deque(replies or (Reply(),))

    def requests_to(self, method: str, path: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if (r.method, r.path) == (method.upper(), path)]

    def start(self) -> PlivoStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> PlivoStandIn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- called from the handler threads -------------------------------------------------

    def _answer(self, request: Recorded) -> Reply:
        with self._lock:
            self.requests.append(request)
            refusal = self._check(request)
            if refusal is not None:
                return refusal
            script = self._routes.get((request.method, request.path))
            if script is None:
                known = any(path == request.path for _, path in self._routes)
                return Reply(405 if known else 404, {"error": "not found (stand-in)"})
            return script.popleft() if len(script) > 1 else script[0]

    def _check(self, request: Recorded) -> Reply | None:
        expected = base64.b64encode(f"{self.auth_id}:{self.auth_token}".encode()).decode()
        if request.header("Authorization") != f"Basic {expected}":
            return Reply(401, {"error": "Authentication failed"})
        if request.body:
            if not (request.header("Content-Type") or "").startswith("application/json"):
                return Reply(400, {"error": "stand-in expects a JSON body"})
            try:
                doc = json.loads(request.body)
            except ValueError:
                doc = None
            if not isinstance(doc, dict):
                return Reply(400, {"error": "stand-in expects a JSON object"})
        return None


def _handler_for(standin: PlivoStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            recorded = Recorded(
                self.command, self.path, dict(self.headers.items()), body, time.monotonic()
            )
            reply = standin._answer(recorded)
            if reply.hang:
                standin._released.wait(HANG_LIMIT)
                self.close_connection = True
                return
            self._reply(reply)

        def _reply(self, reply: Reply) -> None:
            if reply.body is None:
                payload = b""
            elif isinstance(reply.body, str):
                payload = reply.body.encode()
            else:
                payload = json.dumps(reply.body).encode()
            self.send_response(reply.status)
            if payload:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_DELETE = do_PUT = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean; requests are recorded instead

    return Handler
