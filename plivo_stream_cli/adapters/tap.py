"""`serve --upstream URL`: pstream between Plivo and the user's own bot, on every live call.

I/O. A `TapStream` is a `LiveStream` (same lifecycle: start timeout, recorder, feed, control
channel, summary) whose bot is somewhere else. Once the signature gate has accepted Plivo's
upgrade, it opens a WebSocket to the upstream URL (Plivo's query string appended, the upgrade
signed with the auth token for that URL as Plivo would sign it, the other request headers
passed on) and forwards every message both ways, unchanged and in order: a received message
goes to the bot before pstream looks at it, a bot message goes to Plivo before pstream looks
at it. What Plivo sends while the bot's upgrade is under way waits, in order, and goes first.
Both sides are `wslink.WebSocketLink`s (websockets' sans-I/O protocol on asyncio `Protocol`s:
Plivo's a `plivolink.PlivoLink`, the bot's a `clientlink.ClientLink`), which hand over
the messages of each socket read together: all of them are framed and written to the other
side in one write before pstream looks at any. A side whose peer reads slower than the other
side sends stops being read until its peer's socket drains (a slow bot pauses reading Plivo, a
slow Plivo pauses reading the bot): memory stays bounded both ways, the loop never blocks.

Looking at it is everything `serve` does: the caller's frames are recorded and published as
always; the bot's `playAudio`/`checkpoint`/`clearAudio` are recorded, captured and published
as the outbound direction. `play`/`clear`/`checkpoint` from the control channel go to Plivo as
if the bot sent them; Plivo's `playedStream` for a checkpoint pstream injected is not passed to
the bot (it never asked). A reply's first `playAudio` is published to every listener, the
chunks that follow it (up to 50 a second) only to those that take media records (`--json`,
`tail --media`), like the caller's frames; they carry `"continues": true`. Latency figures
come from `turns.TurnLog`, the same metric functions `simulate` uses, fed with the tapped
traffic.

A bot that cannot be reached closes Plivo's side with 1011 and a one-line reason (connection
refused, HTTP status, timeout); a bot that closes mid-call closes Plivo's side with its code and
reason, and Plivo's close reaches the bot the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from plivo_stream_cli import codec
from plivo_stream_cli.adapters.clientlink import ClientLink, open_link
from plivo_stream_cli.adapters.livestream import LiveStream
from plivo_stream_cli.adapters.simulator import SPEECH_DBFS
from plivo_stream_cli.adapters.wslink import Message, Receiver
from plivo_stream_cli.errors import UsageError
from plivo_stream_cli.events import (
    Checkpoint,
    ClearAudio,
    Event,
    Media,
    PlayAudio,
    PlayedStream,
    ProtocolError,
    Start,
    parse,
)
from plivo_stream_cli.feed import Record, event_record, note_record
from plivo_stream_cli.signature import NONCE_HEADER, SIGNATURE_HEADER, sign_headers
from plivo_stream_cli.turns import TurnLog, latency_line

if TYPE_CHECKING:
    from plivo_stream_cli.adapters.plivolink import PlivoLink
    from plivo_stream_cli.adapters.server import StreamServer

UPSTREAM_FAILED = 1011  # "internal error": the service behind serve could not be reached
MAX_WAITING = 2000  # messages held while the bot's upgrade is under way (40 s of frames)
UPSTREAM_MAX_SIZE = 1024 * 1024
# Request headers that belong to one hop (websockets writes its own) or that serve replaces.
_NOT_FORWARDED = frozenset(
    {
        "host",
        "connection",
        "upgrade",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "content-length",
        "user-agent",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)
_SIGNED = frozenset({SIGNATURE_HEADER.lower(), NONCE_HEADER.lower()})


def check_upstream(url: str) -> str:
    """`url` if it is a ws:// or wss:// URL with a host; else `UsageError`."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise UsageError(
            f"--upstream must be a ws:// or wss:// URL with a host, e.g. "
            f"ws://127.0.0.1:8765/ws; got {url!r}"
        )
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise UsageError(f"--upstream: bad port in {url!r}") from None
    return url


def upstream_url(upstream: str, target: str) -> str:
    """The upstream URL with the query string of Plivo's request (`target`) appended."""
    parts = urlsplit(upstream)
    query = urlsplit(target).query
    merged = "&".join(q for q in (parts.query, query) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", merged, ""))


def shown_url(url: str) -> str:
    """A URL as serve prints it: without its query (which may carry a token)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def forwarded_headers(
    raw: list[tuple[str, str]],
    *,
    url: str,
    remote: str,
    auth_token: str | None,
    public_url: str | None,
) -> list[tuple[str, str]]:
    """The headers of the bot's upgrade: Plivo's (minus one-hop ones), X-Forwarded-*, and a
    fresh V3 signature of the upstream URL when the auth token is known."""
    headers = [(k, v) for k, v in raw if k.lower() not in _NOT_FORWARDED]
    if auth_token:
        headers = [(k, v) for k, v in headers if k.lower() not in _SIGNED]
        headers += list(sign_headers(url, auth_token).items())
    lower = {k.lower(): v for k, v in raw}
    client = remote.rsplit(":", 1)[0].strip("[]")
    prior = lower.get("x-forwarded-for")
    headers = [(k, v) for k, v in headers if not k.lower().startswith("x-forwarded-")]
    headers.append(("X-Forwarded-For", f"{prior}, {client}" if prior else client))
    public = urlsplit(public_url) if public_url else None
    proto = {"wss": "https", "ws": "http"}.get(public.scheme, public.scheme) if public else "http"
    headers.append(("X-Forwarded-Proto", lower.get("x-forwarded-proto") or proto))
    host = (public.netloc if public else "") or lower.get("host", "")
    if host:
        headers.append(("X-Forwarded-Host", lower.get("x-forwarded-host") or host))
    return headers


class UpstreamError(Exception):
    """The bot could not be reached; `reason` is one line (no URL query, no secrets)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def open_upstream(
    url: str,
    headers: list[tuple[str, str]],
    user_agent: str | None,
    timeout: float,
    on_messages: Receiver,
) -> ClientLink:
    """The bot's WebSocket, or `UpstreamError` saying in one line why not."""
    try:
        return await open_link(
            url,
            on_messages,
            headers=headers,
            user_agent=user_agent,
            timeout=timeout,
            max_size=UPSTREAM_MAX_SIZE,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        raise UpstreamError(f"HTTP {status} {exc.response.reason_phrase}".strip()) from None
    except InvalidURI as exc:
        raise UpstreamError(f"bad URL: {exc}") from None
    except InvalidHandshake as exc:
        raise UpstreamError(f"handshake failed: {exc}") from None
    except (asyncio.TimeoutError, TimeoutError):
        raise UpstreamError(f"timed out after {timeout:g} s") from None
    except ConnectionRefusedError:
        raise UpstreamError("connection refused") from None
    except OSError as exc:
        raise UpstreamError(exc.strerror or str(exc) or type(exc).__name__) from None


def close_args(code: int | None, reason: str | None, lost: str) -> tuple[int, str]:
    """The code and reason to close the other side with, after one side closed with these.

    Codes that cannot be sent (1005 no status, 1006 dropped, 1015 TLS) become 1000 / 1001.
    """
    if code is not None and (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
        return code, reason or ""
    if code == 1005:
        return 1000, reason or ""
    return 1001, lost


class TapStream(LiveStream):
    """A stream whose bot is the upstream WebSocket: forwarded both ways, observed on the way."""

    def __init__(self, server: StreamServer, ws: PlivoLink, conn_id: str) -> None:
        super().__init__(server, ws, conn_id)
        self.upstream: ClientLink | None = None
        self.upstream_state = "connecting"
        self.turns: TurnLog | None = None
        self._waiting: deque[str | bytes] | None = deque()
        self._waiting_dropped = 0
        self._injected: Counter[str] = Counter()  # checkpoint names pstream sent
        self._watch: asyncio.Task[None] | None = None
        request = ws.request
        target = request.path if request is not None else server.config.path
        assert server.config.upstream is not None
        self.upstream_target = upstream_url(server.config.upstream, target)

    async def serve(self) -> None:
        connector = asyncio.get_running_loop().create_task(self._connect())
        try:
            await super().serve()
        finally:
            connector.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await connector
            await self._close_upstream()

    # ------------------------------------------------------------ Plivo -> bot

    def on_messages(self, batch: list[Message]) -> Awaitable[None] | None:
        """Plivo's messages of one read: all to the bot first, then serve looks at them."""
        drained = self._relay(batch)
        pending = super().on_messages(batch)
        if drained is None:
            return pending
        if pending is None:
            return drained
        return self._both(pending, drained)

    @staticmethod
    async def _both(first: Awaitable[None], second: Awaitable[None]) -> None:
        await first
        await second

    def _relay(self, batch: list[Message]) -> Awaitable[None] | None:
        """Pass Plivo's messages to the bot; an awaitable while the bot reads slower."""
        if self._injected:
            batch = [m for m in batch if not (isinstance(m, str) and self._answers_injected(m))]
        upstream = self.upstream
        if upstream is None:
            waiting = self._waiting
            if waiting is None:
                return None  # the bot is gone; the stream is closing
            for message in batch:
                if len(waiting) < MAX_WAITING:
                    waiting.append(message)
                else:
                    self._waiting_dropped += 1
            return None
        try:
            if upstream.send_many(batch):
                return None
        except ConnectionClosed:
            return None  # the bot closed: `_watch_bot` closes Plivo's side in turn
        return self._bot_drained(upstream)

    async def _bot_drained(self, upstream: ClientLink) -> None:
        """Until the bot's socket drains, or either side is gone."""
        drained = asyncio.ensure_future(upstream.drained())
        await asyncio.wait([drained, self.ws.closed], return_when=asyncio.FIRST_COMPLETED)
        drained.cancel()

    def _answers_injected(self, message: str) -> bool:
        if "played" not in message:
            return False
        try:
            event = parse(message)
        except ProtocolError:
            return False
        if isinstance(event, PlayedStream) and self._injected[event.name] > 0:
            self._injected[event.name] -= 1
            if not self._injected[event.name]:
                del self._injected[event.name]
            return True
        return False

    async def send_checkpoint(self, name: str) -> None:
        self._injected[name] += 1
        await super().send_checkpoint(name)

    async def _connect(self) -> None:
        config = self.server.config
        request = self.ws.request
        raw = list(request.headers.raw_items()) if request is not None else []
        headers = forwarded_headers(
            raw,
            url=self.upstream_target,
            remote=self.ws.remote,
            auth_token=config.auth_token,
            public_url=config.public_url,
        )
        agent = dict((k.lower(), v) for k, v in raw).get("user-agent")
        began = time.monotonic()
        try:
            upstream = await open_upstream(
                self.upstream_target, headers, agent, config.upstream_timeout, self._from_bot
            )
        except UpstreamError as exc:
            await self._unreachable(exc.reason)
            return
        waiting = self._waiting
        assert waiting is not None
        with contextlib.suppress(ConnectionClosed):  # in order, and before anything newer
            upstream.send_many(waiting)
        self._waiting = None
        self.upstream = upstream
        self.upstream_state = "connected"
        if self._waiting_dropped:
            self.note_error(
                f"upstream: {self._waiting_dropped} messages dropped while the bot's upgrade "
                "was under way"
            )
        self._note("connected", took_ms=round((time.monotonic() - began) * 1000, 1))
        self._watch = asyncio.get_running_loop().create_task(self._watch_bot(upstream))

    async def _unreachable(self, reason: str) -> None:
        self._waiting = None
        self.upstream_state = f"failed: {reason}"
        self._note("failed", reason=reason, action=f"closed {UPSTREAM_FAILED}")
        with contextlib.suppress(Exception):
            await self.ws.close(UPSTREAM_FAILED, f"upstream: {reason}"[:120])

    def _note(self, state: str, **fields: Any) -> None:
        record = note_record(
            "upstream",
            t=time.time(),
            stream=self.stream_id,
            state=state,
            url=shown_url(self.upstream_target),
            **fields,
        )
        self.server.publish(record)

    # ------------------------------------------------------------ bot -> Plivo

    def _from_bot(self, batch: list[Message]) -> Awaitable[None] | None:
        """The bot's messages of one read (called by its link): to Plivo, then looked at.

        While Plivo reads slower than the bot sends, the awaitable returned keeps the bot's
        link from reading (and holds what it read) until Plivo's socket drains.
        """
        ws = self.ws
        try:
            writable = ws.send_many(batch)
        except ConnectionClosed:
            return None  # Plivo's side closed: `serve` closes the bot's in turn
        for message in batch:
            self._observe(message)
        return None if writable else ws.drained()

    async def _watch_bot(self, upstream: ClientLink) -> None:
        """Once the bot's side is closed (and all it sent passed on), close Plivo's the same way."""
        await upstream.finished()
        ws = self.ws
        if ws.close_code is not None or not ws.is_open:
            return
        code, reason = close_args(upstream.close_code, upstream.close_reason, "bot went away")
        self.upstream_state = f"closed by the bot ({upstream.close_code or 'no code'})"
        self._note("closed", code=upstream.close_code, reason=upstream.close_reason)
        with contextlib.suppress(Exception):
            await ws.close(code, reason)

    def _observe(self, message: str | bytes) -> None:
        """Record, count and publish a message the bot sent (already on its way to Plivo)."""
        now = time.time()
        recorder = self.recorder
        if isinstance(message, bytes):
            if recorder is not None:
                recorder.capture("out", message, now)
            self.note_error(f"the bot sent a binary frame of {len(message)} bytes (passed on)")
            return
        try:
            event = parse(message)
        except ProtocolError as exc:
            if recorder is not None:
                recorder.capture("out", message, now)
            self.note_error(f"the bot sent a bad message (passed on): {exc}")
            return
        if recorder is not None:
            recorder.capture("out", message, now, is_json=True)
        t = now - self.connected_at
        if isinstance(event, PlayAudio):
            replying = self.queued_seconds > 0  # a reply's later chunks: per-frame records
            self._bot_play(event, t)
            if replying:
                if self.server.hub.media_listeners:
                    record = event_record(event, t=now, stream=self.stream_id, direction="out")
                    record["continues"] = True  # `FeedHub` keeps it from non-media listeners
                    self.server.publish(record)
                return
        elif isinstance(event, Checkpoint):
            self.session.pending_checkpoints.append(event.name)
            self.session.stats.checkpoints_sent += 1
            if self.turns is not None:
                self.turns.bot_checkpoint(t, event.name)
        elif isinstance(event, ClearAudio):
            self._bot_clear(t)
        self.server.publish(event_record(event, t=now, stream=self.stream_id, direction="out"))

    def _bot_play(self, event: PlayAudio, t: float) -> None:
        stats = self.session.stats
        payload = event.payload
        stats.play_messages += 1
        stats.play_bytes += len(payload)
        fmt = event.media_format
        seconds = fmt.seconds(len(payload))
        now = time.monotonic()
        self._drain_at = max(self._drain_at, now) + seconds  # Plivo's queue, as `queued` shows
        if self.turns is not None:
            self.turns.bot_play(t, len(payload))
        start = self.session.start
        if self.recorder is None or start is None:
            return
        if fmt != start.media_format:
            self.note_error(
                f"the bot played {fmt.content_type} on a {start.media_format.content_type} "
                "stream: not recorded"
            )
            return
        try:
            self.recorder.outbound(codec.decode(payload, fmt))
        except codec.CodecError as exc:
            self.note_error(f"the bot's playAudio: {exc}")

    def _bot_clear(self, t: float) -> None:
        session = self.session
        session.stats.checkpoints_cleared += len(session.pending_checkpoints)
        session.pending_checkpoints.clear()
        session.stats.clears_sent += 1
        for task in list(self._players):  # Plivo drops pstream's queued audio too
            task.cancel()
        self._drain_at = time.monotonic()
        if self.recorder is not None:
            self.recorder.clear_outbound()
        if self.turns is not None:
            self.turns.bot_clear(t)

    # ------------------------------------------------------------ what Plivo sends, observed

    def _on_media(self, event: Media, now: float) -> None:
        super()._on_media(event, now)
        turns = self.turns
        if turns is None or event.track not in ("inbound", ""):
            return
        pcm = self.last_inbound
        try:
            speech = codec.level_dbfs(pcm) > SPEECH_DBFS
        except codec.CodecError:
            return
        closed = turns.caller_frame(now - self.connected_at, speech)
        if closed is not None:
            self._publish_turn(closed, turns.turns - 1)

    def _on_event(self, event: Event, now: float) -> None:
        super()._on_event(event, now)
        if isinstance(event, PlayedStream) and self.turns is not None:
            self.turns.played(now - self.connected_at, event.name)

    async def on_start(self, event: Start) -> None:
        self.turns = TurnLog(event.media_format)
        await super().on_start(event)

    def _publish_turn(self, measured: dict[str, Any], turn: int) -> None:
        if not any(v not in (None, []) for v in measured.values()):
            return
        record = note_record("latency", t=time.time(), stream=self.stream_id, turn=turn)
        record.update(measured)
        self.server.publish(record)

    # ------------------------------------------------------------ the end

    async def _close_upstream(self) -> None:
        upstream = self.upstream
        watch = self._watch
        if upstream is not None and not upstream.closed.done():
            code, reason = close_args(self.ws.close_code, self.ws.close_reason, "caller went away")
            with contextlib.suppress(Exception):
                await upstream.close(code, reason)
        if watch is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(watch, 5)

    def closing_fields(self) -> dict[str, Any]:
        turns = self.turns
        fields: dict[str, Any] = {"upstream": self.upstream_state}
        if turns is not None:
            last = turns.close()
            if last is not None:
                self._publish_turn(last, turns.turns)
            fields["metrics"] = turns.summary(include_current=False)
        return fields

    def snapshot(self) -> dict[str, Any]:
        snap = super().snapshot()
        snap["upstream"] = f"{shown_url(self.upstream_target)} ({self.upstream_state})"
        if self.turns is not None:
            snap["latency"] = self.turns.summary()
        return snap


class LatencyLedger:
    """The latency summary of every tapped stream that closed, for serve's summary at exit."""

    def __init__(self) -> None:
        self.streams: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, record: Record) -> None:
        if record.get("event") == "closed" and isinstance(record.get("metrics"), dict):
            self.streams.append((str(record.get("stream", "")), record["metrics"]))

    def lines(self) -> list[str]:
        return [f"  {stream[:8]}  {latency_line(m)}" for stream, m in self.streams]
