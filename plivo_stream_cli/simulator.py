"""`pstream simulate`'s engine: plays Plivo's side of a stream against any WebSocket server.

Opens the upgrade signed as Plivo signs it, sends `start`, streams `media` in 20 ms frames paced in
real time (or `speed` times faster), sends DTMF at given offsets, and behaves like Plivo's
playback: `playAudio` is queued and played at the caller's pace, a `checkpoint` is answered with
`playedStream` once the audio before it has played, `clearAudio` drops the queue and is answered
with `clearedAudio`. Everything is timed so latency metrics can be derived from the report.

Usable as a library: `await run_call(SimulateConfig(url=...))` returns a `CallReport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from plivo_stream_cli import codec
from plivo_stream_cli.errors import ConfigError, NetworkError, UsageError
from plivo_stream_cli.events import (
    Checkpoint,
    ClearAudio,
    ClearedAudio,
    Dtmf,
    Media,
    PlayAudio,
    PlayedStream,
    ProtocolError,
    SendDtmf,
    Start,
    Stop,
    UnknownEvent,
    parse,
)
from plivo_stream_cli.formats import FRAME_MS, MULAW_8K, MediaFormat
from plivo_stream_cli.session import PlaybackQueue
from plivo_stream_cli.signature import sign_headers

POLICY_VIOLATION = 1008


@dataclass
class SimulateConfig:
    """One simulated call."""

    url: str
    audio: bytes = b""  # the caller's audio, wire format of `media_format`
    media_format: MediaFormat = MULAW_8K
    auth_token: str | None = None
    speed: float = 1.0
    dtmf: list[tuple[str, float]] = field(default_factory=list)  # (digit, seconds)
    extra_headers: str = ""
    send_stop: bool = False
    linger: float = 1.0  # seconds to keep the call up after the caller's audio ends
    barge_in_at: float | None = None  # seconds into the bot's reply to talk over it
    barge_in_audio: bytes = b""
    call_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    stream_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    account_id: str = "MAPSTREAMSIMULATOR00"
    tracks: tuple[str, ...] = ("inbound",)
    open_timeout: float = 10.0


@dataclass
class TimedEvent:
    t: float  # seconds since the call started (monotonic)
    kind: str
    detail: str = ""
    nbytes: int = 0


@dataclass
class CallReport:
    """What happened during one simulated call."""

    call_id: str
    stream_id: str
    media_format: MediaFormat
    frames_sent: int = 0
    bytes_sent: int = 0
    dtmf_sent: list[str] = field(default_factory=list)
    received_audio: bytearray = field(default_factory=bytearray)  # every playAudio payload
    played_audio: bytearray = field(default_factory=bytearray)  # what the caller "heard"
    play_messages: int = 0
    checkpoints_received: list[str] = field(default_factory=list)
    checkpoints_confirmed: list[str] = field(default_factory=list)
    clears: int = 0
    violations: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    closed_by_server: bool = False
    speech_end: float | None = None  # t of the caller's last non-silent frame
    barge_in_started: float | None = None
    timeline: list[TimedEvent] = field(default_factory=list)
    duration: float = 0.0

    @property
    def received_seconds(self) -> float:
        return self.media_format.seconds(len(self.received_audio))

    @property
    def rejected(self) -> bool:
        return self.closed_by_server and self.close_code == POLICY_VIOLATION

    def times(self, kind: str) -> list[float]:
        return [e.t for e in self.timeline if e.kind == kind]


class _Call:
    """The running state of one simulated call."""

    def __init__(self, config: SimulateConfig, ws: ClientConnection) -> None:
        self.config = config
        self.ws = ws
        self.fmt = config.media_format
        self.report = CallReport(config.call_id, config.stream_id, self.fmt)
        self.queue = PlaybackQueue()
        self.seq = 0
        self.chunk = 0
        self.t0 = time.monotonic()
        self.t0_ms = int(time.time() * 1000)
        self.done = asyncio.Event()
        self.send_lock = asyncio.Lock()
        self.interval = FRAME_MS / 1000 / max(config.speed, 1e-6)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def mark(self, kind: str, detail: str = "", nbytes: int = 0) -> None:
        self.report.timeline.append(TimedEvent(self.now(), kind, detail, nbytes))

    async def send(self, text: str) -> None:
        async with self.send_lock:
            await self.ws.send(text)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    # ------------------------------------------------------------ caller -> server

    async def send_start(self) -> None:
        c = self.config
        start = Start(
            c.call_id,
            c.stream_id,
            c.account_id,
            c.tracks,
            self.fmt,
            c.extra_headers,
            self.next_seq(),
        )
        await self.send(start.to_json())
        self.mark("start")

    async def send_media(self) -> None:
        """Stream the caller's audio (and DTMF) on an absolute 20 ms schedule."""
        frames = codec.frames(self.config.audio, self.fmt) if self.config.audio else []
        dtmf = sorted(self.config.dtmf, key=lambda d: d[1])
        barge = self._barge_frames()
        index = 0
        while index < len(frames) or dtmf or barge is not None:
            frame_time = index * FRAME_MS / 1000
            while dtmf and dtmf[0][1] <= frame_time:
                await self._send_dtmf(dtmf.pop(0)[0])
            if index < len(frames):
                await self._send_frame(frames[index], index)
            elif barge is not None and await self._maybe_barge(barge, index):
                barge = None
                continue
            elif not dtmf and barge is None:
                break
            index += 1
            await self._sleep_until(index * self.interval)
        self.mark("caller-done")

    def _barge_frames(self) -> list[bytes] | None:
        if self.config.barge_in_at is None:
            return None
        audio = self.config.barge_in_audio or codec.silence(self.fmt, self.fmt.frame_bytes(500))
        return codec.frames(audio, self.fmt)

    async def _maybe_barge(self, barge: list[bytes], index: int) -> bool:
        """After the caller's audio: once the bot has replied for barge_in_at s, talk over it."""
        assert self.config.barge_in_at is not None
        firsts = self.report.times("play")
        if not firsts:
            if index * FRAME_MS / 1000 > len(self.config.audio) / self.fmt.bytes_per_second + 30:
                self.report.warnings.append("no reply within 30 s: barge-in skipped")
                return True
            return False
        if self.now() < firsts[0] + self.config.barge_in_at / self.config.speed:
            return False
        self.report.barge_in_started = self.now()
        self.mark("barge-in")
        for offset, frame in enumerate(barge):
            await self._send_frame(frame, index + offset)
            await self._sleep_until((index + offset + 1) * self.interval)
        return True

    async def _send_frame(self, frame: bytes, index: int) -> None:
        self.chunk += 1
        media = Media(
            self.config.stream_id,
            "inbound",
            str(self.t0_ms + index * FRAME_MS),
            frame,
            self.chunk,
            self.next_seq(),
        )
        await self.send(media.to_json())
        self.report.frames_sent += 1
        self.report.bytes_sent += len(frame)
        if codec.level_dbfs(codec.decode(frame, self.fmt)) > -50.0:
            self.report.speech_end = self.now() + self.interval

    async def _send_dtmf(self, digit: str) -> None:
        stamp = str(int(time.time() * 1000))
        dtmf = Dtmf(self.config.stream_id, digit, "inbound", stamp, self.next_seq())
        await self.send(dtmf.to_json())
        self.report.dtmf_sent.append(digit)
        self.mark("dtmf", digit)

    async def _sleep_until(self, t: float) -> None:
        delay = t - self.now()
        if delay > 0:
            await asyncio.sleep(delay)

    # ------------------------------------------------------------ server -> caller

    async def receive(self) -> None:
        try:
            async for message in self.ws:
                self._on_message(message)
                await self._flush_clear()
        except ConnectionClosed:
            pass
        finally:
            self.done.set()

    _pending_clears = 0

    def _on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self._violation(f"binary frame of {len(message)} bytes (Plivo expects JSON text)")
            return
        try:
            event = parse(message)
        except ProtocolError as exc:
            self._violation(str(exc))
            return
        if isinstance(event, PlayAudio):
            self._on_play(event)
        elif isinstance(event, Checkpoint):
            self.report.checkpoints_received.append(event.name)
            self.queue.add_checkpoint(event.name)
            self.mark("checkpoint", event.name)
        elif isinstance(event, ClearAudio):
            self.report.clears += 1
            dropped = self.queue.clear()
            self.mark("clear", nbytes=dropped)
            self._pending_clears += 1
        elif isinstance(event, SendDtmf):
            self.mark("senddtmf", event.digits)
        elif isinstance(event, UnknownEvent):
            self.report.warnings.append(f"unknown event {event.name!r} ignored")
        else:
            self._violation(f"{event.event!r} is an event Plivo sends, not one it accepts")

    def _on_play(self, event: PlayAudio) -> None:
        if event.media_format != self.fmt:
            self._violation(
                f"playAudio in {event.media_format.content_type} on a "
                f"{self.fmt.content_type} stream"
            )
            return
        if self.fmt.sample_width == 2 and len(event.payload) % 2:
            self._violation(f"playAudio payload of odd length {len(event.payload)} for L16")
            return
        self.report.play_messages += 1
        self.report.received_audio += event.payload
        self.queue.add_audio(event.payload)
        self.mark("play", nbytes=len(event.payload))

    def _violation(self, message: str) -> None:
        self.report.violations.append(message)
        self.mark("violation", message)

    async def _flush_clear(self) -> None:
        while self._pending_clears:
            self._pending_clears -= 1
            cleared = ClearedAudio(self.config.stream_id, self.next_seq())
            with contextlib.suppress(ConnectionClosed):
                await self.send(cleared.to_json())

    async def play_out(self) -> None:
        """Consume the playback queue at the caller's pace and confirm checkpoints."""
        frame = self.fmt.frame_bytes()
        tick = 0
        while not self.done.is_set():
            played, reached = self.queue.play(frame)
            self.report.played_audio += played
            for name in reached:
                confirm = PlayedStream(self.config.stream_id, name, self.next_seq())
                with contextlib.suppress(ConnectionClosed):
                    await self.send(confirm.to_json())
                self.report.checkpoints_confirmed.append(name)
                self.mark("played", name)
            tick += 1
            await self._sleep_until(tick * self.interval)

    async def hang_up(self) -> None:
        if self.config.send_stop:
            with contextlib.suppress(ConnectionClosed):
                await self.send(Stop(self.config.stream_id, self.next_seq()).to_json())
        await self.ws.close()


async def run_call(config: SimulateConfig) -> CallReport:
    """Run one simulated call to the end and report it."""
    headers = _upgrade_headers(config)
    try:
        ws = await connect(
            config.url,
            additional_headers=headers,
            open_timeout=config.open_timeout,
            max_size=None,
            ping_interval=None,
            compression=None,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        cls = ConfigError if status in (401, 403) else NetworkError
        raise cls(f"{config.url} refused the WebSocket upgrade with HTTP {status}") from None
    except InvalidHandshake as exc:
        raise NetworkError(f"{config.url}: WebSocket handshake failed: {exc}") from None
    except (OSError, asyncio.TimeoutError) as exc:
        raise NetworkError(f"cannot connect to {config.url}: {_reason(exc)}") from None
    call = _Call(config, ws)
    receiver = asyncio.ensure_future(call.receive())
    player = asyncio.ensure_future(call.play_out())
    try:
        with contextlib.suppress(ConnectionClosed):
            await call.send_start()
            await call.send_media()
            await _wait_or_done(call, config.linger / max(config.speed, 1e-6))
            await call.hang_up()
        await asyncio.wait_for(asyncio.shield(receiver), 5)
    finally:
        player.cancel()
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await player
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await receiver
        await ws.close()
    report = call.report
    report.duration = call.now()
    report.close_code = ws.close_code
    report.close_reason = ws.close_reason or ""
    report.closed_by_server = _closed_by_server(ws)
    return report


async def _wait_or_done(call: _Call, seconds: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(call.done.wait(), seconds)


def _closed_by_server(ws: ClientConnection) -> bool:
    received = ws.protocol.close_rcvd
    sent = ws.protocol.close_sent
    if received is None:
        return False
    return bool(ws.protocol.close_rcvd_then_sent) or sent is None


def _upgrade_headers(config: SimulateConfig) -> dict[str, str]:
    if not config.url.startswith(("ws://", "wss://")):
        raise UsageError(f"URL must start with ws:// or wss://, got {config.url!r}")
    if not config.auth_token:
        return {}
    return sign_headers(config.url, config.auth_token)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def parse_dtmf_schedule(text: str) -> list[tuple[str, float]]:
    """`'5@1.5,#@3'` -> [('5', 1.5), ('#', 3.0)]; a digit without `@` is pressed at 0 s."""
    schedule = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        digit, _, at = item.partition("@")
        digit = digit.strip().upper()
        if len(digit) != 1 or digit not in "0123456789*#ABCD":
            raise UsageError(f"--dtmf: {item!r}: the digit must be one of 0-9 * # A-D")
        try:
            seconds = float(at) if at else 0.0
        except ValueError:
            raise UsageError(f"--dtmf: {item!r}: '@' must be followed by seconds") from None
        if seconds < 0:
            raise UsageError(f"--dtmf: {item!r}: seconds must not be negative")
        schedule.append((digit, seconds))
    return schedule
