"""`pstream serve`'s engine: the asyncio WebSocket server that plays the bot's side of a stream.

Validates Plivo's V3 signature on the upgrade (close 1008 when it fails), runs one `StreamSession`
per connection, records audio and a JSONL capture, plays files and echoes audio back as
`playAudio`, and publishes every event as a feed record to listeners (the live view, `--json`,
control-channel monitors). Plain HTTP (`/healthz`, `/answer`, `/status`) shares the port.

The per-frame path is kept lean: once a stream has started, each text frame is read from the
socket's bytes by `wireframes` (anything but a plain text frame goes back to websockets) and
handled at once (no future and task switch per frame), parsed once, decoded once, appended to
the recorder's batches, and turned into a feed record only when someone listens to media.
`workers` runs more processes of this server on the same port (`serve --workers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.streams import StreamReader

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask

from plivo_stream_cli import codec
from plivo_stream_cli.events import Event, Media, PlayAudio, ProtocolError, Start
from plivo_stream_cli.feed import Record, event_record, note_record
from plivo_stream_cli.formats import MediaFormat
from plivo_stream_cli.nonces import NonceCache, replay_key
from plivo_stream_cli.session import SessionState, SessionStateError, StreamSession, cut
from plivo_stream_cli.signature import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    UnsignableURL,
    compute_v3,
    diagnose,
    request_url,
    valid_host,
    validate_v3,
)
from plivo_stream_cli.streamxml import StreamOptions, build_xml
from plivo_stream_cli.webhooks import (
    HttpRequest,
    HttpResponse,
    from_websockets_request,
    make_connection_class,
    target_path,
    to_websockets_response,
)
from plivo_stream_cli.wireframes import scan_text_frames

POLICY_VIOLATION = 1008
GOING_AWAY = 1001
WEBSOCKET_MAX_SIZE = 1024 * 1024  # larger than Plivo's 64 KB so oversize messages are logged, kept
# A partial frame the fast path keeps is copied on each read that extends it: beyond this a
# peer trickling a big frame would cost quadratic time, so websockets (linear) takes over.
# Media frames are well under it (20 ms of 16 kHz L16 is under 1 KB of JSON).
MAX_HELD_BYTES = 16 * 1024
CAPTURE_FLUSH_SECONDS = 0.5  # capture lines batched like the WAVs: a write per frame adds up
MAX_PENDING_PLAYS = 250  # echo tasks waiting for Plivo's queue (5 s of 20 ms frames)
# A peer that never answers our close is cut off after this; shutdown as a whole stays under
# SHUTDOWN_SECONDS whatever the peers do (half-open handshakes are abandoned at exit).
CLOSE_TIMEOUT = 0.75
SHUTDOWN_SECONDS = 1.0
SNAPSHOT_PENDING = 16  # the newest pending checkpoints a snapshot lists
MAX_ERROR_CHARS = 512  # of an error note (it may quote the peer)

Listener = Callable[[Record], None]
Route = Callable[[HttpRequest], Awaitable[HttpResponse | None]]


class Peers(Protocol):
    """Other processes serving the same port, as the first one sees them (`workers.WorkerPool`)."""

    def snapshot(self) -> list[dict[str, Any]]: ...

    def totals(self) -> dict[str, int]: ...

    def live_ids(self) -> dict[str, object]:
        """Each live stream's id -> the peer that holds it (for `forward`)."""
        ...

    async def forward(self, holder: object, request: dict[str, Any]) -> dict[str, Any]:
        """A control request (see `control`) handled by `holder`; its reply."""
        ...


@dataclass
class ServeConfig:
    """What `pstream serve` was asked to do."""

    host: str = "127.0.0.1"
    port: int = 8080
    path: str = "/stream"
    auth_token: str | None = None
    public_url: str | None = None  # what Plivo dials, e.g. https://abc.ngrok.app
    record_dir: Path | None = None
    stereo: bool = False
    play_audio: bytes | None = None  # raw 16-bit PCM; converted per stream
    play_rate: int = 8000
    play_name: str = "play"
    echo: bool = False
    max_buffer: float = 20.0  # seconds of audio allowed in Plivo's queue
    max_b64: int = codec.DEFAULT_MAX_B64
    start_timeout: float = 10.0  # also bounds the WebSocket/HTTP handshake
    reject_replays: bool = False  # refuse a signature already used within replay_window
    replay_window: float = 300.0
    answer: StreamOptions | None = None  # template for /answer (its url is replaced)
    speak: str | None = None  # <Speak> text before the stream in /answer
    extra_routes: dict[str, Route] = field(default_factory=dict)


class LiveStream:
    """One WebSocket connection: its session, recorder, playback and counters."""

    def __init__(self, server: StreamServer, ws: ServerConnection, conn_id: str) -> None:
        self.server = server
        self.ws = ws
        self.conn_id = conn_id
        self.session = StreamSession()
        self.connected_at = time.time()
        self.recorder: Any = None
        self.last_inbound = b""  # last caller frame (decoded), for the level meter
        self.errors: deque[str] = deque(maxlen=50)
        self.error_count = 0
        self._drain_at = 0.0  # monotonic time at which Plivo's playback queue will be empty
        self._players: set[asyncio.Task[None]] = set()
        self.echo_dropped = 0
        self._resampler_rate: int | None = None

    @property
    def stream_id(self) -> str:
        return self.session.stream_id or self.conn_id

    @property
    def start(self) -> Start | None:
        return self.session.start

    @property
    def media_format(self) -> MediaFormat:
        return self.session.media_format

    @property
    def queued_seconds(self) -> float:
        return max(0.0, self._drain_at - time.monotonic())

    # ------------------------------------------------------------ sending

    async def send_event(self, text: str, event: Event) -> None:
        """Write one outbound message, capture it, and publish it."""
        await self.ws.send(text)
        now = time.time()
        if self.recorder is not None:
            self.recorder.capture("out", text, now)
        self.server.publish(event_record(event, t=now, stream=self.stream_id, direction="out"))

    async def play(self, wire: bytes, checkpoint: str | None = None) -> None:
        """Queue wire audio to the caller in paced chunks, then an optional checkpoint."""
        fmt = self.media_format
        for chunk in codec.chunk_payloads(wire, fmt, self.server.config.max_b64):
            await self._pace(fmt.seconds(len(chunk)))
            await self._send_audio(chunk, fmt)
        if checkpoint:
            await self.send_checkpoint(checkpoint)

    def start_playback(self, wire: bytes, checkpoint: str | None = None) -> asyncio.Task[None]:
        """Run `play` in the background; `clear()` cancels it."""
        task = asyncio.get_running_loop().create_task(self._guarded_play(wire, checkpoint))
        self._players.add(task)
        task.add_done_callback(self._players.discard)
        return task

    async def _guarded_play(self, wire: bytes, checkpoint: str | None) -> None:
        try:
            await self.play(wire, checkpoint)
        except ConnectionClosed:
            pass
        except SessionStateError as exc:  # the peer sent `stop` while we were playing
            self.note_error(f"playback ended: {exc}")

    def echo(self, wire: bytes) -> None:
        """Send a caller frame back, unless the peer outruns playback (bounded, never queued)."""
        if len(self._players) < MAX_PENDING_PLAYS and self.session.state is SessionState.STREAMING:
            self.start_playback(wire)
            return
        self.echo_dropped += 1
        if self.echo_dropped == 1:
            self.note_error(
                "echo: audio arrives faster than it plays (or the stream stopped): "
                "dropping echoed frames"
            )

    async def _send_audio(self, chunk: bytes, fmt: MediaFormat) -> None:
        text = self.session.play_audio(chunk)
        await self.send_event(text, PlayAudio(fmt, chunk))
        if self.recorder is not None:
            self.recorder.outbound(codec.decode(chunk, fmt))

    async def _pace(self, seconds: float) -> None:
        # Plivo queues about 40-60 s; keep at most max_buffer seconds in flight.
        now = time.monotonic()
        excess = (self._drain_at - now) + seconds - self.server.config.max_buffer
        if excess > 0:
            await asyncio.sleep(excess)
            now = time.monotonic()
        self._drain_at = max(self._drain_at, now) + seconds

    async def send_checkpoint(self, name: str) -> None:
        from plivo_stream_cli.events import Checkpoint

        await self.send_event(self.session.checkpoint(name), Checkpoint(self.stream_id, name))

    async def clear(self) -> None:
        """Stop our playback and ask Plivo to drop its queue."""
        from plivo_stream_cli.events import ClearAudio

        for task in list(self._players):
            task.cancel()
        self._drain_at = time.monotonic()
        if self.recorder is not None:
            self.recorder.clear_outbound()
        await self.send_event(self.session.clear_audio(), ClearAudio(self.stream_id))

    async def stop_players(self) -> None:
        for task in list(self._players):
            task.cancel()
        for task in list(self._players):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ------------------------------------------------------------ receiving

    async def on_start(self, event: Start) -> None:
        config = self.server.config
        if config.record_dir is not None:
            await self._open_recorder(event, config.record_dir)
        if config.play_audio is not None:
            wire = self._convert(config.play_audio, config.play_rate)
            self.start_playback(wire, config.play_name)

    async def _open_recorder(self, event: Start, directory: Path) -> None:
        """Create the stream's files in a worker thread, then attach them.

        Creating files can take milliseconds, and every other stream's frames would wait for
        them; this stream's next message is read only once the recorder exists.
        """
        from plivo_stream_cli.recorder import CallRecorder

        try:
            recorder = await asyncio.to_thread(
                CallRecorder,
                directory,
                event.call_id,
                event.stream_id,
                event.media_format,
                stereo=self.server.config.stereo,
                capture_flush=CAPTURE_FLUSH_SECONDS,
                on_warning=self.note_error,  # a full disk stops recording, never the stream
            )
        except Exception as exc:  # recording trouble must not stop serving
            self.note_error(f"recording disabled: {exc}")
            return
        if self.session.state is SessionState.STOPPED:  # the server shut down meanwhile
            recorder.close()
            return
        self.recorder = recorder

    def _convert(self, pcm: bytes, rate: int) -> bytes:
        fmt = self.media_format
        if rate != fmt.sample_rate:
            pcm = codec.resample(pcm, rate, fmt.sample_rate)
        return codec.encode(pcm, fmt)

    def snapshot(self) -> dict[str, Any]:
        """Plain counters for the live view and `pstream streams` (cheap; not per frame)."""
        session, stats = self.session, self.session.stats
        start = session.start
        return {
            "stream": self.stream_id,
            "call": start.call_id if start else "",
            "account": start.account_id if start else "",
            "format": start.media_format.content_type if start else "",
            "tracks": list(start.tracks) if start else [],
            "headers": start.headers if start else {},
            "state": session.state.value,
            "elapsed": round(time.time() - self.connected_at, 3),
            "media": stats.media_packets,
            "bytes": sum(stats.media_bytes.values()),
            "gaps": session.sequence.gaps,
            "duplicates": session.sequence.duplicates,
            "reorders": session.sequence.reorders,
            "level": round(codec.level_dbfs(self.last_inbound), 1),
            "dtmf": "".join(stats.dtmf),  # the last KEEP_DTMF digits
            "dtmf_count": stats.dtmf_count,
            "checkpoints_sent": stats.checkpoints_sent,
            "checkpoints_confirmed": stats.checkpoints_confirmed,
            "pending_checkpoints": session.pending_checkpoints[-SNAPSHOT_PENDING:],
            "queued": round(self.queued_seconds, 2),
            "play_bytes": stats.play_bytes,
            "errors": self.error_count,
            "recording": [str(p) for p in self.recorder.paths] if self.recorder else [],
        }

    def note_error(self, message: str) -> None:
        message = cut(message, MAX_ERROR_CHARS)  # may quote the peer: kept short
        self.errors.append(message)
        self.error_count += 1
        record = note_record("error", t=time.time(), stream=self.stream_id, error=message)
        self.server.publish(record)


class StreamServer:
    """The WebSocket + webhook server behind `pstream serve`."""

    def __init__(self, config: ServeConfig, *, conn_prefix: str = "conn-") -> None:
        self.config = config
        self.conn_prefix = conn_prefix  # a stream's name until its start event gives its id
        self.peers: Peers | None = None  # other processes on the same port (`serve --workers`)
        self.streams: dict[str, LiveStream] = {}
        self.listeners: list[Listener] = []
        self._listening: tuple[Listener, ...] = ()  # `listeners` as of its last change
        self.media_listeners = 0  # listeners that want per-frame media records
        self.totals = {"connections": 0, "rejected": 0, "streams": 0, "errors": 0}
        self._server: Server | None = None
        self._next_id = 0
        self.port = config.port
        self.nonces = NonceCache(config.replay_window) if config.reject_replays else None
        # In a `serve --workers` worker: asks the first process, whose `nonces` serve them all.
        self.replay_authority: Callable[[str], Awaitable[float | None]] | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self, *, reuse_port: bool = False) -> None:
        """Bind and start accepting connections (`port` 0 picks a free one).

        `reuse_port` lets other processes listen on the same port (`serve --workers`).
        """
        self._server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            create_connection=make_connection_class(self._route, TextSinkConnection),
            max_size=WEBSOCKET_MAX_SIZE,
            open_timeout=self.config.start_timeout,  # a peer that never finishes its request
            ping_interval=None,  # Plivo does not answer pings reliably; TCP tells us of drops
            close_timeout=CLOSE_TIMEOUT,
            # permessage-deflate would cost an inflate per 20 ms frame and a zlib context per
            # stream to save a quarter of base64's bytes; declining it is always allowed.
            compression=None,
            logger=quiet_logger("pstream.websockets"),
            reuse_port=reuse_port or None,
        )
        sockets = list(self._server.sockets)
        if sockets:
            self.port = sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Close every stream (files finalized) and stop listening.

        Streams close together: a peer that never answers the closing handshake costs its
        close timeout once, not once per stream after it.
        """
        deadline = time.monotonic() + SHUTDOWN_SECONDS
        await asyncio.gather(*(self._close_one(live) for live in list(self.streams.values())))
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                remaining = max(0.0, deadline - time.monotonic())
                await asyncio.wait_for(self._server.wait_closed(), remaining)
        for live in list(self.streams.values()):
            self._finish(live)

    async def _close_one(self, live: LiveStream) -> None:
        await live.stop_players()
        with contextlib.suppress(Exception):
            await live.ws.close(GOING_AWAY, "server shutting down")

    def snapshot(self) -> list[dict[str, Any]]:
        """Every stream's counters, the peers' too (theirs up to half a second old)."""
        mine = [live.snapshot() for live in list(self.streams.values())]
        return mine + self.peers.snapshot() if self.peers is not None else mine

    def all_totals(self) -> dict[str, int]:
        """`totals` summed with the peers'."""
        totals = dict(self.totals)
        if self.peers is not None:
            for key, value in self.peers.totals().items():
                totals[key] = totals.get(key, 0) + value
        return totals

    async def __aenter__(self) -> StreamServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def local_url(self) -> str:
        return f"ws://{self.config.host}:{self.port}{self.config.path}"

    # ------------------------------------------------------------ feed

    def subscribe(self, listener: Listener, *, media: bool = True) -> Callable[[], None]:
        """Receive every feed record (media too unless `media=False`); returns an unsubscribe."""
        entry = listener if media else _without_media(listener)
        self.listeners.append(entry)
        self._listening = tuple(self.listeners)
        self.media_listeners += 1 if media else 0

        def unsubscribe() -> None:
            if entry in self.listeners:
                self.listeners.remove(entry)
                self._listening = tuple(self.listeners)
                self.media_listeners -= 1 if media else 0

        return unsubscribe

    def publish(self, record: Record) -> None:
        # A snapshot, not a copy per record: a listener may unsubscribe while it is called.
        for listener in self._listening:
            try:
                listener(record)
            except Exception:  # a broken consumer must never hurt the stream
                if listener in self.listeners:
                    self.listeners.remove(listener)
                    self._listening = tuple(self.listeners)

    # ------------------------------------------------------------ HTTP side

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        if target_path(request.path) == self.config.path:
            return None  # the WebSocket upgrade proceeds
        response = await self._route(from_websockets_request(request, remote_of(connection)))
        return to_websockets_response(response or HttpResponse(404, "not found\n"))

    async def _route(self, request: HttpRequest) -> HttpResponse | None:
        if request.path == "/healthz":
            return HttpResponse(200, "ok\n")
        route = self.config.extra_routes.get(request.path) or self._builtin_routes.get(request.path)
        if route is None:
            return HttpResponse(HTTPStatus.NOT_FOUND, "not found\n")
        if request.method not in ("GET", "POST"):
            return HttpResponse(HTTPStatus.METHOD_NOT_ALLOWED, "use GET or POST\n")
        return await route(request)

    @property
    def _builtin_routes(self) -> dict[str, Route]:
        return {"/answer": self._answer, "/status": self._status}

    async def _webhook_refused(self, request: HttpRequest) -> HttpResponse | None:
        """Check a webhook's V3 signature (form fields of a POST are signed too)."""
        params = {k: v for k, v in request.form.items()} if request.method == "POST" else None
        ok, why = await self.check_signature(
            request.method, request.target, request.headers, params
        )
        if ok:
            return None
        self.totals["rejected"] += 1
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

    def public_base(self, host: str) -> str:
        """https://public-host when known, else http://<Host header> (local testing)."""
        if self.config.public_url:
            public = urlsplit(self.config.public_url)
            scheme = {"wss": "https", "ws": "http"}.get(public.scheme, public.scheme)
            return f"{scheme}://{public.netloc}"
        host = host if valid_host(host) else ""  # a broken Host must not reach the XML
        return f"http://{host or f'{self.config.host}:{self.port}'}"

    def answer_xml(self, host: str = "") -> str:
        """The Stream XML that points Plivo at this server's own stream path."""
        base = self.public_base(host)
        ws_base = "wss" + base[5:] if base.startswith("https") else "ws" + base[4:]
        template = self.config.answer or StreamOptions(url="")
        options = replace(
            template,
            url=ws_base + self.config.path,
            status_callback_url=template.status_callback_url or f"{base}/status",
        )
        return build_xml(options, speak=self.config.speak)

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

    # ------------------------------------------------------------ signatures

    def signed_url(self, target: str, host: str) -> str:
        """The URL Plivo signed for this request: the public one when known (`UnsignableURL`)."""
        return request_url(target, host, self.config.public_url)

    async def check_signature(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        params: dict[str, list[str]] | None = None,
    ) -> tuple[bool, str]:
        """(accepted, why) for a request's V3 signature; always accepted when no token is set."""
        token = self.config.auth_token
        if not token:
            return True, "signature check off (no auth token)"
        signature = headers.get(SIGNATURE_HEADER.lower())
        nonce = headers.get(NONCE_HEADER.lower())
        if not signature or not nonce:
            return False, f"missing {SIGNATURE_HEADER} or {NONCE_HEADER} header"
        try:
            url = self.signed_url(target, headers.get("host", ""))
        except UnsignableURL as exc:  # refused like a bad signature (1008 / 403), not a crash
            return False, str(exc)
        if validate_v3(url, nonce, signature, token, method=method, params=params):
            return await self._first_use(url, nonce, token, method, params)
        host = headers.get("host", "")
        hint = diagnose(
            url, nonce, signature, token, method=method, params=params, alt_hosts=[host]
        )
        why = f"invalid signature for {url}"
        if hint:
            why += f"; it matches {hint} (pass --public-url with that scheme and host)"
        return False, why

    async def _first_use(
        self, url: str, nonce: str, token: str, method: str, params: dict[str, list[str]] | None
    ) -> tuple[bool, str]:
        """With --reject-replays, refuse a valid signature that was already used."""
        if self.nonces is None and self.replay_authority is None:
            return True, "signature valid"
        key = replay_key(nonce, compute_v3(url, nonce, token, method=method, params=params))
        if self.replay_authority is not None:  # a worker: the first process remembers for all
            age = await self.replay_authority(key)
        else:
            age = self.seen_before(key)
        if age is None:
            return True, "signature valid (first use)"
        return False, f"replayed signature: nonce {nonce[:32]!r} was used {age:.1f} s ago"

    def seen_before(self, key: str) -> float | None:
        """How long ago `key` (a `replay_key`) was first used, or None (and now it is)."""
        if self.nonces is None:
            return None
        now = time.monotonic()
        first = self.nonces.first_seen(key, now)
        return None if first is None else now - first

    # ------------------------------------------------------------ WebSocket side

    async def _handle(self, ws: ServerConnection) -> None:
        self.totals["connections"] += 1
        self._next_id += 1
        conn_id = f"{self.conn_prefix}{self._next_id}"
        remote = remote_of(ws)
        headers = {k.lower(): v for k, v in ws.request.headers.raw_items()} if ws.request else {}
        target = ws.request.path if ws.request else self.config.path
        ok, why = await self.check_signature("GET", target, headers)
        if not ok:
            self.totals["rejected"] += 1
            self.publish(
                note_record(
                    "rejected", t=time.time(), remote=remote, reason=why, action="closed 1008"
                )
            )
            await ws.close(POLICY_VIOLATION, "invalid signature")
            return
        live = LiveStream(self, ws, conn_id)
        self.streams[conn_id] = live
        self.publish(
            note_record("connected", t=time.time(), stream=conn_id, remote=remote, auth=why)
        )
        timer = asyncio.get_running_loop().call_later(
            self.config.start_timeout, self._start_expired, live
        )
        try:
            await self._receive_loop(live)
        finally:
            timer.cancel()
            await live.stop_players()
            self._finish(live)

    def _start_expired(self, live: LiveStream) -> None:
        if live.session.state is SessionState.AWAITING_START:
            live.note_error(f"no start event within {self.config.start_timeout:g} s: closing")
            asyncio.get_running_loop().create_task(
                live.ws.close(POLICY_VIOLATION, "no start event")
            )

    async def _receive_loop(self, live: LiveStream) -> None:
        """Handle each message until the connection closes.

        Once the start event is handled, frames that arrive while this loop waits are handled
        as they arrive (`text_sink`), in the same order, without a trip through `recv()`.
        """
        session, ws = live.session, live.ws
        sink = functools.partial(self._take_now, live)
        try:
            while True:
                if session.state is not SessionState.AWAITING_START:
                    ws.text_sink = sink  # type: ignore[attr-defined]
                try:
                    message = await ws.recv()
                finally:
                    ws.text_sink = None  # type: ignore[attr-defined]
                if isinstance(message, bytes):
                    self.totals["errors"] += 1
                    session.stats.errors += 1
                    live.note_error(f"binary frame of {len(message)} bytes ignored")
                    continue
                start = self._take(live, message)
                if start is not None:
                    await self._begin(live, start, message)
        except ConnectionClosed:
            pass

    def _take(self, live: LiveStream, message: str) -> tuple[Start, float] | None:
        """Parse, capture and handle one text message; a start event is returned, for `_begin`."""
        now = time.time()
        try:
            event = live.session.receive(message)
        except ProtocolError as exc:
            if live.recorder is not None:
                live.recorder.capture("in", message, now)
            self.totals["errors"] += 1
            live.note_error(str(exc))
            return None
        recorder = live.recorder
        if recorder is not None:  # captured before it is acted on, as received
            recorder.capture("in", message, now, is_json=True)
        if isinstance(event, Media):
            self._on_media(live, event, now)
        elif isinstance(event, Start):
            return event, now
        else:
            self._on_event(live, event, now)
        return None

    def _take_now(self, live: LiveStream, message: str) -> None:
        """`_take` from the connection's `data_received` (after the start: never a new start)."""
        try:
            self._take(live, message)
        except Exception as exc:  # a bug: end this stream as an exception in the loop would
            live.note_error(f"internal error: {type(exc).__name__}: {exc}")
            asyncio.get_running_loop().create_task(live.ws.close(1011, "internal error"))

    def _on_media(self, live: LiveStream, event: Media, now: float) -> None:
        payload, track = event.payload, event.track
        try:
            pcm = codec.decode(payload, live.session.media_format)
        except codec.CodecError as exc:
            live.note_error(str(exc))
            return
        if track == "inbound" or track == "":
            live.last_inbound = pcm
        recorder = live.recorder
        if recorder is not None:
            recorder.inbound(pcm, track)
        if self.config.echo and track != "outbound":
            live.echo(payload)
        if self.media_listeners:
            self.publish(event_record(event, t=now, stream=live.stream_id))

    async def _begin(self, live: LiveStream, start: tuple[Start, float], raw: str) -> None:
        """The start event: the stream gets its id, then its recorder and playback."""
        event, now = start
        old_id = live.conn_id
        self.streams.pop(old_id, None)
        key = live.stream_id  # the connection's id if the peer sent an empty streamId
        if key in self.streams:  # never clobber a live stream with the same id
            live.note_error(f"streamId {key!r} is already live on another connection")
            key = f"{key}#{old_id}"
        self.streams[key] = live
        self.totals["streams"] += 1
        self.publish(event_record(event, t=now, stream=event.stream_id))
        await live.on_start(event)
        if live.recorder is not None:  # opened by this very event: capture it first
            live.recorder.capture("in", raw, now, is_json=True)

    def _on_event(self, live: LiveStream, event: Event, now: float) -> None:
        self.publish(event_record(event, t=now, stream=live.stream_id))
        for note in _drain(live.session.notes):
            live.note_error(note)

    def _finish(self, live: LiveStream) -> None:
        key = next((key for key, other in self.streams.items() if other is live), None)
        if key is None:
            return  # finished already
        del self.streams[key]
        live.session.close()
        files = []
        if live.recorder is not None:
            with contextlib.suppress(Exception):
                files = [
                    {"path": str(f.path), "seconds": round(f.duration, 3)}
                    for f in live.recorder.close()
                ]
        stats = live.session.stats
        self.publish(
            note_record(
                "closed",
                t=time.time(),
                stream=live.stream_id,
                media=stats.media_packets,
                errors=stats.errors,
                gaps=live.session.sequence.gaps,
                dtmf="".join(stats.dtmf),
                files=files,
            )
        )


def _first_values(fields: dict[str, list[str]]) -> dict[str, str]:
    return {key: values[0] if values else "" for key, values in fields.items()}


def _drain(notes: Any) -> list[str]:
    out = list(notes)
    notes.clear()
    return out


def _without_media(listener: Listener) -> Listener:
    def filtered(record: Record) -> None:
        if record.get("event") != "media" or record.get("dir") != "in":
            listener(record)

    return filtered


_TEXT = Opcode.TEXT
_NO_QUEUE = ("unknown",)  # a websockets without `Assembler.frames`: never the fast path
_UNKNOWN = object()
_AT_EOF = getattr(getattr(StreamReader, "at_eof", None), "__code__", _UNKNOWN)


def _at_frame_start(protocol: Any) -> bool:
    """Whether websockets' parser holds no bytes and waits for the first byte of a new frame,
    outside a fragmented message, on an open connection without extensions.

    Then the bytes that follow may be read by `wireframes` until it meets a frame it does not
    handle, and that frame and everything after it given back to websockets. Read from
    websockets' sans-I/O `Protocol`; any doubt (another websockets, another state) says no.
    """
    reader = protocol.reader
    if reader.buffer or reader.eof or protocol.state is not State.OPEN or protocol.extensions:
        return False
    if getattr(protocol, "current_size", getattr(protocol, "cur_size", _UNKNOWN)) is not None:
        return False  # inside a fragmented message (or an unknown websockets)
    waiting = protocol.parser
    while (inner := getattr(waiting, "gi_yieldfrom", None)) is not None:
        waiting = inner
    return getattr(waiting, "gi_code", None) is _AT_EOF


class TextSinkConnection(ServerConnection):
    """A connection with a fast path for text frames while `text_sink` is set.

    `_receive_loop` sets `text_sink` while it waits in `recv()` with nothing queued. Then a
    read's simple text frames (`wireframes`) go from `data_received` straight to the sink: no
    generator-based parsing, `Frame`, event list, future or task switch per frame, which cost
    more than pstream's own handling of a media event. The first frame of any other kind
    (control, binary, fragmented, oversize, invalid UTF-8) and every byte after it go to
    websockets, which keeps all its checks and its order of messages; the fast path resumes
    only once websockets has parsed up to a frame boundary and the loop waits again.
    Frames that websockets parses while the sink is set skip its queue (`process_event`).
    """

    text_sink: Callable[[str], None] | None = None
    _held: bytes | None = None  # not None: the fast path owns the stream; a partial frame

    def data_received(self, data: bytes) -> None:
        held, sink = self._held, self.text_sink
        if held is None:
            if sink is None or not self._may_take_over():
                super().data_received(data)
                return
            buf = data
        elif sink is None or self.protocol.state is not State.OPEN:
            self._give_back(held + data)
            return
        else:
            buf = held + data if held else data
        used, other = scan_text_frames(buf, WEBSOCKET_MAX_SIZE, apply_mask, sink)
        if other or len(buf) - used > MAX_HELD_BYTES:
            self._give_back(buf[used:])
        else:
            self._held = buf[used:] if used < len(buf) else b""

    def _may_take_over(self) -> bool:
        return not len(getattr(self.recv_messages, "frames", _NO_QUEUE)) and _at_frame_start(
            self.protocol
        )

    def _give_back(self, rest: bytes) -> None:
        """The stream from a frame boundary on goes to websockets again."""
        self._held = None
        if rest:
            super().data_received(rest)

    def eof_received(self) -> None:
        if self._held is not None:
            self._give_back(self._held)  # websockets reports the truncated frame as it would
        super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._held is not None:
            self._give_back(self._held)
        super().connection_lost(exc)

    def process_event(self, event: Any) -> None:
        sink = self.text_sink
        if (
            sink is not None
            and type(event) is Frame
            and event.opcode is _TEXT
            and event.fin
            and not len(getattr(self.recv_messages, "frames", _NO_QUEUE))
        ):
            try:
                text = str(event.data, "utf-8")
            except UnicodeDecodeError:
                pass  # websockets' path closes the connection (1007) as it always does
            else:
                sink(text)
                return
        super().process_event(event)


def remote_of(connection: ServerConnection) -> str:
    """`host:port` of a connection's peer (for logs and feed records)."""
    address = connection.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address or "")


def quiet_logger(name: str) -> Any:
    """A logger that keeps websockets' own messages off the terminal (pstream reports itself)."""
    import logging

    logger = logging.getLogger(name)
    logger.setLevel(logging.CRITICAL)
    logger.propagate = False
    return logger


def prepare_record_dir(path: Path) -> Path:
    """Create the recording directory and prove it is writable, or fail before serving.

    A directory created here is private (0700): recordings hold callers' voices.
    """
    import tempfile

    from plivo_stream_cli.errors import UsageError

    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise UsageError(
            f"cannot record into {path}: {exc.strerror or exc}; choose a writable --record DIR"
        ) from None
    return path.resolve()
