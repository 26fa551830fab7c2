"""The control and monitor channel of a running `pstream serve`, and the client other terminals use.

I/O. A second WebSocket server bound to 127.0.0.1 only, on its own port: never the public port, so
it is never reachable through a tunnel. Every upgrade must carry `Authorization: Bearer TOKEN`
(a random `secrets.token_urlsafe`, compared with `hmac.compare_digest`); any other request gets
HTTP 401 and a `control-refused` note in serve's feed. serve publishes the URL and token in a
per-user state file (see `statefile`), which is how `pstream tail/play/clear/...` find it.

Protocol: JSON text messages. A request is `{"id": N, "op": OP, ...}`; each gets one
`{"type": "reply", "id": N, "ok": true, ...}` or `{"type": "reply", "id": N, "ok": false,
"code": CODE, "error": TEXT, "streams": [live stream ids]}`. Ops:

- `streams`: `{"streams": [snapshot, ...]}` (the live view's per-stream counters).
- `play` `{"stream"?, "pcm": base64 16-bit mono PCM, "rate": Hz, "checkpoint"?}`: converted to
  the stream's format here and queued with `start_playback`; replies `{"stream", "bytes",
  "seconds", "checkpoint"}`. The client loads the file: the path is resolved where the user typed
  it, a bad file fails there before anything is sent, and serve never opens a path a peer names.
- `clear` `{"stream"?}` (playback cancelled, `clearAudio` sent), `checkpoint` `{"stream"?, "name"}`.
- `monitor` `{"media"?: bool}`: replies `{"serve": {...}}`, then pushes `{"type": "record",
  "record": {...}}` for every feed record and `{"type": "snapshot", "streams": [...],
  "totals": {...}}` every `SNAPSHOT_INTERVAL` seconds, so `tail` renders the same live view
  without per-frame work. A monitor that cannot keep up loses records (a `monitor-dropped` note
  says how many), never slows the streams.

`stream` may be omitted when exactly one stream is live, and may be a unique prefix of an id.
Codes: `no-stream`, `ambiguous`, `unknown-stream`, `bad-request`, `failed`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from plivo_stream_cli import codec
from plivo_stream_cli.adapters import statefile
from plivo_stream_cli.adapters.server import quiet_logger, remote_of
from plivo_stream_cli.errors import ConfigError, NetworkError, UsageError
from plivo_stream_cli.feed import Record, note_record
from plivo_stream_cli.session import SessionState

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection
    from websockets.asyncio.server import Server, ServerConnection
    from websockets.http11 import Request, Response

    from plivo_stream_cli.adapters.server import LiveStream, StreamServer

T = TypeVar("T")
CONTROL_HOST = "127.0.0.1"
CONTROL_PATH = "/control"
SNAPSHOT_INTERVAL = 0.5
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # a play request carries the whole file as base64
MONITOR_QUEUE = 2000
MAX_CHECKPOINT_CHARS = 256
GOING_AWAY = 1001
DRAIN_SECONDS = 0.25  # at shutdown, for monitors to receive the last records
CLOSE_TIMEOUT = 0.25  # for a monitor to answer the closing handshake


class ControlRequestError(UsageError):
    """The serve refused a control request; `code` says why, `streams` lists the live streams."""

    def __init__(self, message: str, *, code: str, streams: list[str]) -> None:
        super().__init__(message)
        self.code = code
        self.streams = streams


# ---------------------------------------------------------------- server side


class _Refusal(Exception):
    def __init__(self, code: str, message: str, streams: list[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.streams = streams or []


class ControlServer:
    """The control/monitor WebSocket server of one `StreamServer` (same event loop)."""

    def __init__(
        self,
        server: StreamServer,
        *,
        port: int = 0,
        token: str | None = None,
        snapshot_interval: float = SNAPSHOT_INTERVAL,
    ) -> None:
        self.server = server
        self.token = token or secrets.token_urlsafe(32)
        self.port = port
        self.snapshot_interval = snapshot_interval
        self.entry: statefile.ServeEntry | None = None
        self._ws_server: Server | None = None
        self._monitors: set[_Monitor] = set()

    @property
    def url(self) -> str:
        return f"ws://{CONTROL_HOST}:{self.port}{CONTROL_PATH}"

    @property
    def monitor_count(self) -> int:
        return len(self._monitors)

    async def start(self) -> None:
        from websockets.asyncio.server import serve

        try:
            self._ws_server = await serve(
                self._handle,
                CONTROL_HOST,
                self.port,
                process_request=self._authorize,
                max_size=MAX_MESSAGE_BYTES,
                compression=None,
                ping_interval=None,  # loopback: TCP reports a dead peer
                close_timeout=CLOSE_TIMEOUT,
                logger=quiet_logger("pstream.control"),
            )
        except OSError as exc:
            raise UsageError(
                f"cannot listen for control on {CONTROL_HOST}:{self.port}: "
                f"{exc.strerror or exc}; pick another --control-port"
            ) from None
        self.port = next(iter(self._ws_server.sockets)).getsockname()[1]

    def register(self) -> statefile.ServeEntry:
        """Publish URL and token in this user's state directory (mode 0600)."""
        self.entry = statefile.register_serve(
            control_url=self.url,
            token=self.token,
            local_url=self.server.local_url,
            public_url=self.server.config.public_url,
        )
        return self.entry

    async def close(self) -> None:
        """Unpublish, let monitors receive the last records, then disconnect everyone."""
        if self.entry is not None:
            statefile.remove(self.entry.name)
            self.entry = None
        # Together and bounded: a monitor that stopped reading must not hold serve's exit.
        await asyncio.gather(*(m.drain(timeout=DRAIN_SECONDS) for m in list(self._monitors)))
        if self._ws_server is not None:
            self._ws_server.close(close_connections=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws_server.wait_closed(), CLOSE_TIMEOUT)
            self._ws_server = None

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ connections

    async def _authorize(self, connection: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path != CONTROL_PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        presented = _bearer(request.headers.get("Authorization"))
        if presented is not None and hmac.compare_digest(
            presented.encode("utf-8", "replace"), self.token.encode()
        ):
            return None
        reason = "no token" if presented is None else "wrong token"
        self._note("control-refused", remote=remote_of(connection), reason=reason)
        return connection.respond(HTTPStatus.UNAUTHORIZED, f"control channel: {reason}\n")

    async def _handle(self, ws: ServerConnection) -> None:
        from websockets.exceptions import ConnectionClosed

        monitor: _Monitor | None = None
        try:
            async for message in ws:
                reply, wants_monitor = await self.dispatch(message, remote_of(ws))
                if wants_monitor is not None and monitor is None:
                    monitor = _Monitor(self, ws, media=wants_monitor)
                    self._monitors.add(monitor)
                await ws.send(_encode(reply))
                if monitor is not None and not monitor.running:
                    monitor.begin()
        except ConnectionClosed:
            pass
        finally:
            if monitor is not None:
                self._monitors.discard(monitor)
                await monitor.stop()

    async def dispatch(
        self, message: str | bytes, remote: str
    ) -> tuple[dict[str, Any], bool | None]:
        """The reply to one request, and the media flag when it subscribes a monitor."""
        try:
            request = json.loads(message)
        except ValueError:  # UnicodeDecodeError included
            return _error_reply(None, "bad-request", "not JSON", []), None
        except RecursionError:
            return _error_reply(None, "bad-request", "JSON nested too deeply", []), None
        try:
            if not isinstance(request, dict):
                raise _Refusal("bad-request", "a request is a JSON object")
            op = request.get("op")
            if op == "monitor":
                self._note("control", action="monitor", remote=remote)
                return self._ok(request, serve=self._serve_info()), bool(request.get("media"))
            if op not in OPS:
                raise _Refusal("bad-request", f"unknown op {op!r}: use {', '.join(OPS)}")
            if op in STREAM_OPS and self.server.peers is not None:
                forwarded = await self._forward(request)
                if forwarded is not None:
                    return forwarded, None
            handler = getattr(self, f"_op_{op}")
            return self._ok(request, **await handler(request, remote)), None
        except _Refusal as exc:
            return _error_reply(request, exc.code, str(exc), exc.streams), None
        except Exception as exc:  # a bug in one request must not end the session or the serve
            why = f"internal error: {type(exc).__name__}: {exc}"
            return _error_reply(request, "failed", why, self.live_ids()), None

    async def _forward(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """The reply of the worker holding the request's stream (`serve --workers`), or None
        when the stream is this process's own (the request then names it in full)."""
        peers = self.server.peers
        assert peers is not None
        held = peers.live_ids()
        holders: dict[str, object | None] = {**dict.fromkeys(self._live()), **held}
        sid = resolve_stream({sid: sid for sid in holders}, request.get("stream"))
        request["stream"] = sid
        holder = holders[sid]
        if holder is None:
            return None
        try:
            reply = await peers.forward(holder, request)
        except (ConnectionError, asyncio.TimeoutError) as exc:
            why = f"stream {sid}: {exc or 'its worker did not answer'}"
            raise _Refusal("failed", why, self.live_ids()) from None
        reply["id"] = request.get("id")
        return reply

    def _ok(self, request: dict[str, Any], **fields: Any) -> dict[str, Any]:
        return {"type": "reply", "id": request.get("id"), "ok": True, **fields}

    def _serve_info(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "local_url": self.server.local_url,
            "public_url": self.server.config.public_url,
        }

    def _note(self, kind: str, **fields: Any) -> None:
        self.server.publish(note_record(kind, t=time.time(), **fields))

    # ------------------------------------------------------------ ops

    async def _op_streams(self, request: dict[str, Any], remote: str) -> dict[str, Any]:
        return {"streams": self.server.snapshot()}

    async def _op_play(self, request: dict[str, Any], remote: str) -> dict[str, Any]:
        live = self._resolve(request)
        pcm, rate = _pcm_of(request)
        checkpoint = _checkpoint_name(request.get("checkpoint"), required=False)
        fmt = live.media_format
        wire = codec.encode(codec.resample(pcm, rate, fmt.sample_rate), fmt)
        live.start_playback(wire, checkpoint)  # the stream is live: its start event has come
        seconds = round(fmt.seconds(len(wire)), 3)
        self._note("control", stream=live.stream_id, action="play", seconds=seconds, remote=remote)
        return {
            "stream": live.stream_id,
            "bytes": len(wire),
            "seconds": seconds,
            "checkpoint": checkpoint,
        }

    async def _op_clear(self, request: dict[str, Any], remote: str) -> dict[str, Any]:
        live = self._resolve(request)
        self._note("control", stream=live.stream_id, action="clear", remote=remote)
        await self._send(live, live.clear())
        return {"stream": live.stream_id}

    async def _op_checkpoint(self, request: dict[str, Any], remote: str) -> dict[str, Any]:
        live = self._resolve(request)
        name = _checkpoint_name(request.get("name"), required=True)
        assert name is not None
        self._note("control", stream=live.stream_id, action="checkpoint", remote=remote)
        await self._send(live, live.send_checkpoint(name))
        return {"stream": live.stream_id, "name": name}

    async def _send(self, live: LiveStream, sending: Awaitable[None]) -> None:
        from websockets.exceptions import ConnectionClosed

        from plivo_stream_cli.session import SessionStateError

        try:
            await sending
        except (SessionStateError, ConnectionClosed) as exc:
            why = str(exc) if isinstance(exc, SessionStateError) else "the stream has closed"
            raise _Refusal("failed", f"stream {live.stream_id}: {why}", self.live_ids()) from None

    # ------------------------------------------------------------ stream lookup

    def _live(self) -> dict[str, LiveStream]:
        return {
            sid: live
            for sid, live in list(self.server.streams.items())
            if live.session.start is not None and live.session.state is not SessionState.STOPPED
        }

    def live_ids(self) -> list[str]:
        """Every live stream's id, the workers' too."""
        peers = self.server.peers
        return sorted([*self._live(), *(peers.live_ids() if peers is not None else ())])

    def _resolve(self, request: dict[str, Any]) -> LiveStream:
        return resolve_stream(self._live(), request.get("stream"))


OPS = ("streams", "play", "clear", "checkpoint", "monitor")
STREAM_OPS = ("play", "clear", "checkpoint")  # ops on one stream: forwarded to its worker


def resolve_stream(live: dict[str, T], wanted: object) -> T:
    """The live stream `wanted` names (an id or a unique prefix; None when only one is live)."""
    ids = sorted(live)
    if not ids:
        raise _Refusal("no-stream", "no live stream (waiting for a call)", [])
    if wanted is None or wanted == "":
        if len(ids) == 1:
            return live[ids[0]]
        raise _Refusal("ambiguous", f"{len(ids)} live streams: say which one", ids)
    if not isinstance(wanted, str):
        raise _Refusal("bad-request", "stream: expected a string", ids)
    if wanted in live:
        return live[wanted]
    matches = [sid for sid in ids if sid.startswith(wanted)]
    if len(matches) == 1:
        return live[matches[0]]
    if matches:
        raise _Refusal("ambiguous", f"{wanted!r} matches {len(matches)} live streams", matches)
    raise _Refusal("unknown-stream", f"no live stream {wanted!r}", ids)


def _pcm_of(request: dict[str, Any]) -> tuple[bytes, int]:
    rate = request.get("rate")
    if not isinstance(rate, int) or isinstance(rate, bool) or not 1000 <= rate <= 384_000:
        raise _Refusal("bad-request", "rate: expected a sample rate in Hz (1000-384000)")
    try:
        pcm = base64.b64decode(str(request.get("pcm", "")), validate=True)
    except (binascii.Error, ValueError):
        raise _Refusal("bad-request", "pcm: not valid base64") from None
    if not pcm or len(pcm) % 2:
        raise _Refusal("bad-request", "pcm: expected non-empty 16-bit PCM (an even byte count)")
    return pcm, rate


def _checkpoint_name(value: object, *, required: bool) -> str | None:
    if value is None or value == "":
        if required:
            raise _Refusal("bad-request", "name: a checkpoint needs a name")
        return None
    if not isinstance(value, str) or len(value) > MAX_CHECKPOINT_CHARS:
        raise _Refusal("bad-request", f"checkpoint name: a string of {MAX_CHECKPOINT_CHARS} chars")
    return value


def _encode(reply: dict[str, Any]) -> str:
    """A reply as JSON; one echoing an `id` too deep (or odd) to encode drops that id."""
    try:
        return json.dumps(reply, separators=(",", ":"))
    except (ValueError, TypeError, RecursionError):
        return json.dumps({**reply, "id": None}, separators=(",", ":"))


def _error_reply(request: Any, code: str, message: str, streams: list[str]) -> dict[str, Any]:
    request_id = request.get("id") if isinstance(request, dict) else None
    return {
        "type": "reply",
        "id": request_id,
        "ok": False,
        "code": code,
        "error": message,
        "streams": streams,
    }


class _Monitor:
    """One subscribed client: a bounded queue of feed records and a snapshot ticker."""

    def __init__(self, control: ControlServer, ws: ServerConnection, *, media: bool) -> None:
        self.control = control
        self.ws = ws
        self.queue: asyncio.Queue[Record] = asyncio.Queue(MONITOR_QUEUE)
        self.dropped = 0
        self.running = False
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe = control.server.subscribe(self._on_record, media=media)

    def _on_record(self, record: Record) -> None:
        try:
            self.queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped += 1

    def begin(self) -> None:
        self.running = True
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._pump()), loop.create_task(self._tick())]

    async def _pump(self) -> None:
        while True:
            record = await self.queue.get()
            try:
                if self.dropped:
                    lost, self.dropped = self.dropped, 0
                    await self._push("record", record=_dropped_note(lost))
                await self._push("record", record=record)
            finally:
                self.queue.task_done()

    async def _tick(self) -> None:
        server = self.control.server
        while True:
            await self._push("snapshot", streams=server.snapshot(), totals=server.all_totals())
            await asyncio.sleep(self.control.snapshot_interval)

    async def _push(self, kind: str, **fields: Any) -> None:
        message = {"type": kind, "t": round(time.time(), 3), **fields}
        await self.ws.send(json.dumps(message, separators=(",", ":"), default=str))

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) until queued records have been sent: the last `closed` notes matter."""
        if self.running:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.queue.join(), timeout)

    async def stop(self) -> None:
        self._unsubscribe()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _dropped_note(count: int) -> Record:
    return note_record("monitor-dropped", t=time.time(), count=count)


async def start_control(server: StreamServer, *, port: int = 0) -> ControlServer:
    """Start the control channel of a bound `server` and publish it in the state directory."""
    control = ControlServer(server, port=port)
    await control.start()
    try:
        control.register()
    except ConfigError:
        await control.close()
        raise
    return control


# ---------------------------------------------------------------- client side


@dataclass(frozen=True)
class Target:
    """Where a control command connects."""

    url: str
    token: str
    label: str


def find_serve(control: str | None = None, token: str | None = None) -> Target:
    """The serve to talk to: `--control URL [--token T]`, else the only live serve."""
    serves = statefile.live_serves()
    if control:
        url = control.rstrip("/")
        if not url.endswith(CONTROL_PATH):
            url += CONTROL_PATH
        if token:
            return Target(url, token, url)
        for entry in serves:
            if entry.control_url == url:
                return Target(url, entry.token, entry.describe())
        raise ConfigError(f"no token for {url}: pass --token (or set PSTREAM_CONTROL_TOKEN)")
    if token:
        raise UsageError("--token needs --control URL")
    if not serves:
        raise ConfigError(
            "no running pstream serve found: start `pstream serve` first "
            "(or pass --control URL --token TOKEN)"
        )
    if len(serves) > 1:
        listing = "; ".join(entry.describe() for entry in serves)
        raise UsageError(
            f"{len(serves)} pstream serves are running; choose one with --control URL: {listing}"
        )
    entry = serves[0]
    return Target(entry.control_url, entry.token, entry.describe())


class ControlClient:
    """A connection to a serve's control channel: `request()`, or `monitor()` then `pushes()`."""

    def __init__(self, target: Target, *, open_timeout: float = 5.0) -> None:
        self.target = target
        self.open_timeout = open_timeout
        self._ws: ClientConnection | None = None
        self._next_id = 0

    async def __aenter__(self) -> ControlClient:
        self._ws = await _connect(self.target, self.open_timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            await self._ws.close()

    @property
    def ws(self) -> ClientConnection:
        assert self._ws is not None, "use `async with ControlClient(...)`"
        return self._ws

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request and return its reply; raises `ControlRequestError` on refusal."""
        from websockets.exceptions import ConnectionClosed

        self._next_id += 1
        request_id = self._next_id
        body = {"id": request_id, "op": op, **{k: v for k, v in fields.items() if v is not None}}
        try:
            await self.ws.send(json.dumps(body, separators=(",", ":")))
            while True:
                message = json.loads(await self.ws.recv())
                if not isinstance(message, dict):
                    continue
                if message.get("type") == "reply" and message.get("id") == request_id:
                    break
        except ConnectionClosed:
            raise NetworkError(f"{self.target.url}: the serve closed the connection") from None
        if not message.get("ok"):
            raise ControlRequestError(
                str(message.get("error", "refused")),
                code=str(message.get("code", "failed")),
                streams=[str(s) for s in message.get("streams") or []],
            )
        return dict(message)

    async def monitor(self, *, media: bool = False) -> dict[str, Any]:
        """Subscribe to the feed; `pushes()` then yields records and snapshots."""
        return await self.request("monitor", media=media)

    async def pushes(self) -> AsyncIterator[dict[str, Any]]:
        """Pushed messages until serve closes the connection (a serve that stops says 1001)."""
        from websockets.exceptions import ConnectionClosed

        try:
            async for message in self.ws:
                data = json.loads(message)
                if isinstance(data, dict) and data.get("type") in ("record", "snapshot"):
                    yield data
        except ConnectionClosed:
            pass
        code = self.ws.close_code
        if code not in (1000, GOING_AWAY):
            raise NetworkError(f"lost the control connection to {self.target.url} (code {code})")


async def _connect(target: Target, open_timeout: float) -> ClientConnection:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidHandshake, InvalidStatus

    try:
        return await connect(
            target.url,
            additional_headers={"Authorization": f"Bearer {target.token}"},
            open_timeout=open_timeout,
            max_size=MAX_MESSAGE_BYTES,
            compression=None,
            ping_interval=None,
            **_no_proxy(),
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status == HTTPStatus.UNAUTHORIZED:
            raise ConfigError(
                f"the control channel at {target.url} refused the token "
                "(is it another serve's? pass the right --token)"
            ) from None
        raise NetworkError(
            f"{target.url} answered HTTP {status}: not a pstream control channel"
        ) from None
    except InvalidHandshake as exc:
        raise NetworkError(f"{target.url}: handshake failed: {exc}") from None
    except (OSError, asyncio.TimeoutError) as exc:
        reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else exc.strerror or exc
        raise NetworkError(
            f"cannot reach the control channel at {target.url}: {reason} "
            "(is that pstream serve still running?)"
        ) from None


def _no_proxy() -> dict[str, Any]:
    # websockets >= 15 honours proxy variables; a loopback control channel must never use one.
    from websockets.version import version

    major = int(version.split(".", 1)[0])
    return {"proxy": None} if major >= 15 else {}


def encode_play(pcm: bytes, rate: int) -> dict[str, Any]:
    """The `pcm`/`rate` fields of a play request (raises when the file is too long to send)."""
    text = base64.b64encode(pcm).decode("ascii")
    if len(text) > MAX_MESSAGE_BYTES - 4096:
        seconds = len(pcm) / 2 / rate
        raise UsageError(f"{seconds:.0f} s of audio is too much for one play: split the file")
    return {"pcm": text, "rate": rate}


# ---------------------------------------------------------------- helpers


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
