"""One live stream of `pstream serve`, from its upgrade to its close: the stream lifecycle.

`LiveStream.serve()` runs a connection the signature gate accepted: it waits for `start` (closing
the connection after `start_timeout`), gives the stream its id in the server's registry, opens
its recorder and playback, handles each message as it arrives (parsed once by the pure
`StreamSession`, decoded once, captured, recorded, published), and on close finalizes the files
and publishes the summary. Messages are pushed: the connection (`plivolink.PlivoLink`) calls
`on_messages` with each socket read's messages, and a message whose handling must wait (the
start event, while the recorder's files are created) holds the ones after it, in order. What
the bot side does (`play`, `clear`, checkpoints, echo) is here too, so the control channel and
the tap drive a stream the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from websockets.exceptions import ConnectionClosed

from plivo_stream_cli import codec
from plivo_stream_cli.events import (
    Checkpoint,
    ClearAudio,
    Event,
    Media,
    PlayAudio,
    ProtocolError,
    Start,
)
from plivo_stream_cli.feed import event_record, note_record
from plivo_stream_cli.formats import MediaFormat
from plivo_stream_cli.session import (
    SessionState,
    SessionStateError,
    StreamRefused,
    StreamSession,
    cut,
)

if TYPE_CHECKING:
    from plivo_stream_cli.adapters.plivolink import PlivoLink
    from plivo_stream_cli.adapters.server import StreamServer
    from plivo_stream_cli.adapters.wslink import Message

POLICY_VIOLATION = 1008
# How often the server writes every stream's recording, all at once (`CallRecorder(clocked=True)`):
# writes done together cost less than the same writes scattered between frames.
RECORDING_FLUSH_SECONDS = 0.5
MAX_PENDING_PLAYS = 250  # echo tasks waiting for Plivo's queue (5 s of 20 ms frames)
SNAPSHOT_PENDING = 16  # the newest pending checkpoints a snapshot lists
MAX_ERROR_CHARS = 512  # of an error note (it may quote the peer)


class LiveStream:
    """One WebSocket connection: its session, recorder, playback and counters."""

    def __init__(self, server: StreamServer, ws: PlivoLink, conn_id: str) -> None:
        self.server = server
        self.ws = ws
        self.conn_id = conn_id
        self.session = StreamSession()
        self.connected_at = time.time()
        self.recorder: Any = None
        self._last_heard = b""  # last caller frame as it came (wire audio), for the level meter
        self.last_outbound = b""  # end of the last audio sent (wire), for the bot's meter
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
    def last_inbound(self) -> bytes:
        """The caller's last frame, decoded (only when asked: the meters, the tap's turns)."""
        return codec.decode(self._last_heard, self.media_format) if self._last_heard else b""

    @property
    def queued_seconds(self) -> float:
        return max(0.0, self._drain_at - time.monotonic())

    # ------------------------------------------------------------ sending

    async def send_event(self, text: str, event: Event) -> None:
        """Write one outbound message, capture it, and publish it (`ConnectionClosed` if closed).

        Framed and written at once; waits only while the peer reads slower than we write.
        """
        ws = self.ws
        if not ws.send(text):
            await ws.drained()
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
        self.last_outbound = chunk[-fmt.frame_bytes() :]
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
        await self.send_event(self.session.checkpoint(name), Checkpoint(self.stream_id, name))

    async def clear(self) -> None:
        """Stop our playback and ask Plivo to drop its queue."""
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
        from plivo_stream_cli.adapters.recorder import CallRecorder

        try:
            recorder = await asyncio.to_thread(
                CallRecorder,
                directory,
                event.call_id,
                event.stream_id,
                event.media_format,
                stereo=self.server.config.stereo,
                clocked=True,  # the server flushes it (`StreamServer`'s recording clock)
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

    # ------------------------------------------------------------ lifecycle

    async def serve(self) -> None:
        """Run the stream until its connection closes; files finalized, summary published."""
        timeout = self.server.config.start_timeout
        timer = asyncio.get_running_loop().call_later(timeout, self._start_expired, timeout)
        try:
            self.ws.attach(self.on_messages)
            await self.ws.finished()
        finally:
            timer.cancel()
            await self.stop_players()
            self.finish()

    def _start_expired(self, timeout: float) -> None:
        if self.session.state is SessionState.AWAITING_START:
            self.note_error(f"no start event within {timeout:g} s: closing")
            asyncio.get_running_loop().create_task(
                self.ws.close(POLICY_VIOLATION, "no start event")
            )

    def on_messages(self, batch: list[Message]) -> Awaitable[None] | None:
        """The messages of one socket read, in order (called by the link as they arrive).

        Handled at once; when one must wait (the start event opens the recorder), the rest of
        the batch waits with it, and the link holds every later message until it is done.
        """
        take = self.take
        pending: Awaitable[None] | None
        for index, message in enumerate(batch):
            if type(message) is str:  # `handle` inlined: this runs once per 20 ms frame
                start = take(message)
                if start is None:
                    continue
                pending = self._begin(start, message)
            else:
                pending = self.handle(message)
                if pending is None:
                    continue
            return self._finish_batch(pending, batch, index + 1)
        return None

    async def _finish_batch(
        self, pending: Awaitable[None], batch: list[Message], index: int
    ) -> None:
        await pending
        for message in islice(batch, index, None):
            pending_next = self.handle(message)
            if pending_next is not None:
                await pending_next

    def handle(self, message: Message) -> Awaitable[None] | None:
        """One received message; an awaitable when what follows it must wait."""
        if isinstance(message, bytes):
            self.server.totals["errors"] += 1
            self.session.stats.errors += 1
            self.note_error(f"binary frame of {len(message)} bytes ignored")
            return None
        start = self.take(message)
        if start is not None:
            return self._begin(start, message)
        return None

    def take(self, message: str) -> tuple[Start, float] | None:
        """Parse, capture and handle one text message; a start event is returned, for `_begin`."""
        now = time.time()
        try:
            event = self.session.receive(message)
        except ProtocolError as exc:
            if self.recorder is not None:
                self.recorder.capture("in", message, now)
            if isinstance(exc, StreamRefused) and not self._refuse(exc):
                return None  # said once already; the close is on its way
            self.server.totals["errors"] += 1
            self.note_error(str(exc))
            return None
        warnings = self.session.warnings
        if warnings:  # this peer is not quite Plivo: said once per kind
            publish = self.server.publish
            while warnings:
                text = warnings.pop(0)
                publish(note_record("warning", t=now, stream=self.stream_id, warning=text))
        recorder = self.recorder
        if recorder is not None:  # captured before it is acted on, as received
            recorder.capture("in", message, now, is_json=True)
        if isinstance(event, Media):
            self._on_media(event, now)
        elif isinstance(event, Start):
            return event, now
        else:
            self._on_event(event, now)
        return None

    def _refuse(self, exc: StreamRefused) -> bool:
        """Close a stream that cannot go on (1003: unsupported data); True the first time."""
        if exc.first:
            asyncio.get_running_loop().create_task(self.ws.close(1003, "unsupported media format"))
        return exc.first

    def _on_media(self, event: Media, now: float) -> None:
        # Not decoded here: the session has checked the payload (whole L16 samples), the
        # recorder decodes in batches, and the meters decode the last frame when they look.
        payload, track = event.payload, event.track
        if track == "inbound" or track == "":
            self._last_heard = payload
        recorder = self.recorder
        if recorder is not None:
            try:
                recorder.inbound_wire(payload, track)
            except codec.CodecError as exc:
                self.note_error(str(exc))
                return
        server = self.server
        if server.config.echo and track != "outbound":
            self.echo(payload)
        if server.hub.media_listeners:
            server.publish(event_record(event, t=now, stream=self.stream_id))

    async def _begin(self, start: tuple[Start, float], raw: str) -> None:
        """The start event: the stream gets its id, then its recorder and playback."""
        event, now = start
        self.server.registry.rename(self)
        self.server.publish(event_record(event, t=now, stream=event.stream_id))
        await self.on_start(event)
        if self.recorder is not None:  # opened by this very event: capture it first
            self.recorder.capture("in", raw, now, is_json=True)

    def _on_event(self, event: Event, now: float) -> None:
        self.server.publish(event_record(event, t=now, stream=self.stream_id))
        notes = self.session.notes
        while notes:
            self.note_error(notes.popleft())

    def flush_recording(self) -> None:
        """Write what the recorder holds now (the server's recording clock calls this)."""
        if self.recorder is None:
            return
        try:
            self.recorder.flush()
        except Exception as exc:  # a bug here must stop neither the clock nor other streams
            self.note_error(f"recording: {type(exc).__name__}: {exc}")

    def finish(self) -> None:
        """Leave the registry, close the session and the files, publish the summary (once)."""
        if not self.server.registry.remove(self):
            return  # finished already
        self.session.close()
        files = []
        if self.recorder is not None:
            with contextlib.suppress(Exception):
                files = [
                    {"path": str(f.path), "seconds": round(f.duration, 3)}
                    for f in self.recorder.close()
                ]
        stats = self.session.stats
        self.server.publish(
            note_record(
                "closed",
                t=time.time(),
                stream=self.stream_id,
                media=stats.media_packets,
                errors=stats.errors,
                gaps=self.session.gaps,
                dtmf="".join(stats.dtmf),
                files=files,
                **self.closing_fields(),
            )
        )

    def closing_fields(self) -> dict[str, Any]:
        """More fields for the `closed` record (the tap adds its bot's state and latency)."""
        return {}

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
            "gaps": session.gaps,
            "duplicates": session.sequence.duplicates,
            "reorders": session.sequence.reorders,
            "level": round(codec.level_dbfs(self.last_inbound), 1),
            "bot_level": self._bot_level(),
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

    def _bot_level(self) -> float:
        """dBFS of what the bot is playing now (silence once its audio has played out)."""
        if not self.last_outbound or self.queued_seconds <= 0:
            return codec.level_dbfs(b"")
        return round(codec.level_dbfs(codec.decode(self.last_outbound, self.media_format)), 1)

    def note_error(self, message: str) -> None:
        message = cut(message, MAX_ERROR_CHARS)  # may quote the peer: kept short
        self.errors.append(message)
        self.error_count += 1
        record = note_record("error", t=time.time(), stream=self.stream_id, error=message)
        self.server.publish(record)
