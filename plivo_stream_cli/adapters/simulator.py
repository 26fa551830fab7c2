"""`pstream simulate`'s engine: plays Plivo's side of a stream against any WebSocket server.

Opens the upgrade signed as Plivo signs it, sends `start`, streams `media` in 20 ms frames paced in
real time (or `speed` times faster), sends DTMF at given offsets, can talk over the bot's reply
(barge-in), and behaves like Plivo's playback: `playAudio` is queued and played at the caller's
pace, a `checkpoint` is answered with `playedStream` once the audio before it has played,
`clearAudio` drops the queue and is answered with `clearedAudio`. Everything is timed so the
latency metrics (`metrics`) can be derived from the report.

Two layers: `PlivoCall` is Plivo's side of one open stream (timeline, sequence numbers, playback,
answers to the server); a *script* drives what the caller sends. `run_call` runs the WAV-driven
script of `simulate`; `replay` runs a capture-driven one through the same `open_stream` and
`converse`.

Built to be a load generator (hundreds of real-time calls from one core): each call's socket is
a `clientlink.ClientLink` (websockets' sans-I/O `ClientProtocol` on an asyncio `Protocol`: a
frame is framed and written in one synchronous call, messages from the server arrive by
callback), and one `Pacer` per process sends every call's frames and plays every call's queue
at their own absolute 20 ms deadlines, with one timer instead of a sleeping task per call.

Usable as a library: `await run_call(SimulateConfig(url=...))` returns a `CallReport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import heapq
import itertools
import math
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.http11 import USER_AGENT
from websockets.protocol import Protocol
from websockets.uri import parse_uri

from plivo_stream_cli import codec, synth
from plivo_stream_cli.adapters.clientlink import ClientLink, open_link, proxy_for
from plivo_stream_cli.callreport import POLICY_VIOLATION, CallReport, TimedEvent
from plivo_stream_cli.errors import ConfigError, NetworkError, PstreamError, UsageError
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

ACCOUNT_ID = "MAPSTREAMSIMULATOR00"  # the accountId the simulated calls carry
SPEECH_DBFS = -50.0  # a caller frame louder than this is speech


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
    barge_in_audio: bytes = b""  # what the caller says then (default: the built-in clip)
    reply_timeout: float = 30.0  # seconds to wait for a reply before giving up the barge-in
    call_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    stream_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    account_id: str = ACCOUNT_ID
    tracks: tuple[str, ...] = ("inbound",)
    open_timeout: float = 10.0


class Pacer:
    """The process's one clock for paced frames: a single timer for every call on the loop.

    One sleeping task per call cost a timer, a future and a task switch per frame (20,000 a
    second at 400 calls). Here a call registers a callback for its next absolute deadline;
    the timer wakes at the earliest one and runs every callback then due. Calls start their
    line clocks on a `GRID` (1 ms) boundary, so the deadlines of all calls fall on at most 20
    instants of a 20 ms period: at most 1,000 wakes a second, whatever the number of calls,
    while the calls stay spread over the period (not all frames at one instant).
    """

    GRID = 0.001

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> Pacer:
        pacer = _PACERS.get(loop)
        if pacer is None:
            pacer = _PACERS[loop] = cls(loop)
        return pacer

    def at(self, when: float, callback: Callable[[], None]) -> None:
        """Run `callback` at `when` (time.monotonic()); at once, next wake, if already past."""
        heapq.heappush(self._heap, (when, next(self._order), callback))
        self._arm()

    def _arm(self) -> None:
        """The timer at the earliest deadline."""
        heap = self._heap
        if heap and heap[0][0] < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = heap[0][0]
            delay = max(0.0, self._timer_at - time.monotonic())
            self._timer = self.loop.call_later(delay, self._wake)

    def _wake(self) -> None:
        self._timer, self._timer_at = None, math.inf
        heap, now = self._heap, time.monotonic()
        due = []
        while heap and heap[0][0] <= now:
            due.append(heapq.heappop(heap)[2])
        for callback in due:  # a callback that re-arms in the past runs at the next wake:
            try:  # a late call catches up without starving the loop's I/O
                callback()
            except Exception as exc:  # one call's bug must not stop the others' clocks
                self.loop.call_exception_handler({"message": "pacer callback", "exception": exc})
        self._arm()


_PACERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pacer] = weakref.WeakKeyDictionary()

Feed = Callable[[], "tuple[bytes, bool | None] | None"]  # the next frame and its speech flag


class PlivoCall:
    """Plivo's side of one open stream, whatever drives the caller.

    Owns the clock, the sequence numbers and the timeline; receives the server's messages, plays
    the queued audio at the caller's pace, confirms checkpoints and answers clears. A script
    sends the caller's events through `send` (or `stream`, which the shared `Pacer` drives
    frame by frame without waking the script) and marks what it did.
    """

    def __init__(self, ws: ClientLink, report: CallReport, extra_headers: str = "") -> None:
        self.ws = ws
        self.report = report
        self.extra_headers = extra_headers  # Plivo repeats it on every start, media and dtmf
        self.fmt = report.media_format
        self.queue = PlaybackQueue()
        self.seq = 0
        # the line clock starts on the pacer's grid, so calls share its wakes (see `Pacer`)
        self.t0 = math.floor(time.monotonic() / Pacer.GRID) * Pacer.GRID
        self.t0_ms = int(time.time() * 1000)
        self.done = asyncio.Event()
        self.interval = FRAME_MS / 1000 / max(report.speed, 1e-6)
        self.slots = 0  # 20 ms media slots used so far: the caller's line clock
        self.chunks: dict[str, int] = {}  # media chunks sent, per track
        self.last_media = 0.0  # when the last caller frame was sent
        self._pending_clears = 0
        self._generation = 0  # counts clears, so a frame cut short confirms nothing
        # playback (`play_out`), on the pacer too
        self._play_on = self._playing = self._kick_due = False
        self._play_began, self._play_ticks, self._play_generation = 0.0, 0, 0
        self._play_reached: list[str] = []
        self._pacer = Pacer.of(asyncio.get_running_loop())
        self._feed: Feed | None = None
        self._streamed: asyncio.Future[None] | None = None

    @property
    def stream_id(self) -> str:
        return self.report.stream_id

    def now(self) -> float:
        return time.monotonic() - self.t0

    def mark(self, kind: str, detail: str = "", nbytes: int = 0) -> None:
        self.report.timeline.append(TimedEvent(self.now(), kind, detail, nbytes))

    def write(self, text: str) -> None:
        """Frame and write one message now (the transport keeps what the socket cannot take
        yet); ConnectionClosed once the WebSocket is closing, as websockets' `send` raises."""
        self.ws.send(text)

    def post(self, text: str) -> None:
        """What Plivo sends of its own accord (playedStream, clearedAudio): `write` here; an
        impaired call routes it through its up link."""
        self.write(text)

    async def send(self, text: str) -> None:
        """`post`, then wait while the socket's write buffer is full."""
        self.post(text)
        if not self.ws.writable:
            await self.ws.drained()

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    async def sleep_until(self, t: float) -> None:
        delay = t - self.now()
        if delay > 0:
            await asyncio.sleep(delay)
        # a deadline already passed counts too: that is the lateness that distorts the figures
        self.report.pacing_late_ms.append(round((self.now() - t) * 1000, 2))

    def next_chunk(self, track: str = "inbound") -> int:
        self.chunks[track] = self.chunks.get(track, 0) + 1
        return self.chunks[track]

    def _write_frame(self, frame: bytes, speech: bool | None) -> None:
        """One 20 ms caller frame in the next slot of the line clock.

        Timestamps follow the audio (20 ms per frame), as Plivo's do.
        """
        stamp = str(self.t0_ms + self.slots * FRAME_MS)
        media = Media(
            self.stream_id,
            "inbound",
            stamp,
            frame,
            self.next_chunk(),
            self.next_seq(),
            self.extra_headers,
        )
        self.write(media.to_json())
        self.sent_media(len(frame), speech=speech)
        self.slots += 1

    async def stream(self, feed: Feed) -> None:
        """Send `feed()`'s frames, one per slot of the line clock, until it returns None.

        This task is not woken per frame: the shared `Pacer` calls back at each slot's
        deadline, records how late it ran (`pacing`), and writes the next frame at once. The
        first frame goes now. A full write buffer holds the next frame until it drains (the
        deadlines stay absolute: frames then go late, none is lost). Raises ConnectionClosed as
        `send` would.
        """
        if self._streamed is not None:
            raise RuntimeError("one stream at a time")
        self._feed = feed
        self._streamed = asyncio.get_running_loop().create_future()
        try:
            self._next()
            await self._streamed
        finally:
            self._feed = self._streamed = None

    def _tick(self) -> None:
        late = time.monotonic() - (self.t0 + self.slots * self.interval)
        self.report.pacing_late_ms.append(round(late * 1000, 2))
        self._next()

    def _next(self) -> None:
        streamed, feed = self._streamed, self._feed
        if streamed is None or feed is None or streamed.done():
            return
        try:
            item = feed()
            if item is not None:
                self._write_frame(*item)
        except BaseException as exc:  # ConnectionClosed above all: the script sees it
            streamed.set_exception(exc)
            return
        if item is None:
            streamed.set_result(None)
        else:
            self.ws.when_writable(self._rearm)  # now if the write buffer has room

    def _rearm(self) -> None:
        self._pacer.at(self.t0 + self.slots * self.interval, self._tick)

    async def send_silence(self, seconds: float) -> None:
        """Keep the line up for `seconds` of call time: a real line never stops sending media,
        and bots that find the end of speech in trailing silence need it."""
        await self._silence_until_slot(self.slots + round(seconds * 1000 / FRAME_MS))

    async def send_silence_until(self, t: float) -> None:
        """Fill the line with silence up to `t` (call seconds), when more than a frame and a half
        would otherwise go unsent (a replayed capture's gap)."""
        if t - max(self.last_media, self.now()) <= 1.5 * self.interval:
            return
        await self._silence_until_slot(int(t / self.interval - 0.5))

    async def _silence_until_slot(self, end: int) -> None:
        silent = codec.silence(self.fmt, self.fmt.frame_bytes())

        def feed() -> tuple[bytes, bool | None] | None:
            if self.slots < end and not self.done.is_set():
                return silent, False
            return None

        await self.stream(feed)

    def sent_media(self, nbytes: int, *, speech: bool | None) -> None:
        """Count a caller frame just sent; `speech` None means barge-in audio (not the turn)."""
        report = self.report
        report.frames_sent += 1
        report.bytes_sent += nbytes
        self.last_media = now = self.now()
        if speech:
            report.speech_end = now
        elif speech is None:
            report.barge_in_ended = now

    def sent_dtmf(self, digit: str) -> None:
        self.report.dtmf_sent.append(digit)
        self.mark("dtmf", digit)

    # ------------------------------------------------------------ server -> caller

    async def receive(self) -> None:
        """Take the server's messages (those that came before too) until the socket closes."""
        try:
            self.ws.listen(self.deliver)
            await asyncio.shield(self.ws.closed)
        finally:
            self.done.set()

    def deliver(self, message: str | bytes) -> None:
        """One message from the server, as it arrives."""
        self._on_message(message)
        self._flush_clear()

    def _on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self._violation(f"binary frame of {len(message)} bytes (Plivo expects JSON text)")
            return
        try:
            event = parse(message)
        except ProtocolError as exc:
            self._violation(str(exc))
            return
        addressed = getattr(event, "stream_id", None)
        if addressed and addressed != self.stream_id:  # misdirected: --strict must see it
            self._violation(f"{event.event} for stream {addressed!r} arrived on {self.stream_id!r}")
        if isinstance(event, PlayAudio):
            self._on_play(event)
        elif isinstance(event, Checkpoint):
            self.report.checkpoints_received.append(event.name)
            self.queue.add_checkpoint(event.name)
            self.mark("checkpoint", event.name)
            self._arrived()
        elif isinstance(event, ClearAudio):
            self.report.clears += 1
            dropped = self.queue.clear()
            self._generation += 1
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
        self._arrived()

    def _violation(self, message: str) -> None:
        self.report.violations.append(message)
        self.mark("violation", message)

    def _flush_clear(self) -> None:
        while self._pending_clears:
            self._pending_clears -= 1
            cleared = ClearedAudio(self.stream_id, self.next_seq())
            with contextlib.suppress(ConnectionClosed):
                self.post(cleared.to_json())

    async def play_out(self) -> None:
        """Play the queue at the caller's pace and confirm each checkpoint as its audio ends,
        until cancelled.

        Like Plivo, playback starts as soon as audio arrives at an idle queue and runs one
        frame per 20 ms (scaled by speed) while audio is queued; a checkpoint is confirmed when
        the frame holding the end of the audio before it has finished playing. The frames are
        played by the shared `Pacer` (`_play_tick`), not by this task.
        """
        self._play_on = True
        try:
            self._kick()
            await asyncio.get_running_loop().create_future()  # until converse cancels it
        finally:
            self._play_on = False

    def _arrived(self) -> None:
        """Audio or a checkpoint was queued: an idle player looks at the queue once the
        messages that came with it are in (as a player task woken then would)."""
        if self._play_on and not self._playing and not self._kick_due:
            self._kick_due = True
            asyncio.get_running_loop().call_soon(self._kick)

    def _kick(self) -> None:
        self._kick_due = False
        if not self._play_on or self._playing:
            return
        self._confirm(self.queue.play(0)[1])  # nothing left to play ahead of these
        if self.queue.queued_bytes:
            self._playing = True
            self._play_began, self._play_ticks = self.now(), 0
            self._play_frame()

    def _play_frame(self) -> None:
        self._play_generation = self._generation
        played, self._play_reached = self.queue.play(self.fmt.frame_bytes())
        self.report.played_audio += played
        self._play_ticks += 1
        due = self.t0 + self._play_began + self._play_ticks * self.interval
        self._pacer.at(due, self._play_tick)

    def _play_tick(self) -> None:
        if not self._play_on:
            self._playing = False
            return
        due = self._play_began + self._play_ticks * self.interval
        self.report.pacing_late_ms.append(round((self.now() - due) * 1000, 2))
        if self._play_generation == self._generation:  # a clear meanwhile drops these
            self._confirm(self._play_reached)
        if self.queue.queued_bytes:
            self._play_frame()
        else:
            self._playing = False
            self._kick()

    def _confirm(self, names: list[str]) -> None:
        for name in names:
            confirm = PlayedStream(self.stream_id, name, self.next_seq())
            with contextlib.suppress(ConnectionClosed):
                self.post(confirm.to_json())
            self.report.checkpoints_confirmed.append(name)
            self.mark("played", name)

    async def hang_up(self, send_stop: bool) -> None:
        if send_stop:
            with contextlib.suppress(ConnectionClosed):
                await self.send(Stop(self.stream_id, self.next_seq()).to_json())
        await self.ws.close()


Script = Callable[[PlivoCall], Awaitable[None]]


class _WavCaller:
    """The script of `simulate`: start, the caller's audio and DTMF, then an optional barge-in.

    Media never stops while the call is up: silence fills every 20 ms slot the clip does not.
    """

    def __init__(self, config: SimulateConfig) -> None:
        self.config = config
        self.fmt = config.media_format
        self.silent = codec.silence(self.fmt, self.fmt.frame_bytes())

    async def __call__(self, call: PlivoCall) -> None:
        c = self.config
        start = Start(
            c.call_id,
            c.stream_id,
            c.account_id,
            c.tracks,
            self.fmt,
            c.extra_headers,
            call.next_seq(),
        )
        await call.send(start.to_json())
        call.mark("start")
        await self._speak(call)
        if c.barge_in_at is not None:
            await self._barge_in(call, c.barge_in_at)
        call.mark("caller-done")

    async def _speak(self, call: PlivoCall) -> None:
        """Stream the caller's audio (and DTMF) on an absolute 20 ms schedule."""
        frames, speech = _clip(self.config.audio, self.fmt)
        dtmf = sorted(self.config.dtmf, key=lambda d: d[1])
        index = 0

        def feed() -> tuple[bytes, bool | None] | None:
            nonlocal index
            if index >= len(frames) and not dtmf:
                return None
            while dtmf and dtmf[0][1] <= index * FRAME_MS / 1000:
                self._send_dtmf(call, dtmf.pop(0)[0])
            index += 1
            if index <= len(frames):
                return frames[index - 1], speech[index - 1]
            return self.silent, False  # keys pressed after the clip: silence meanwhile

        await call.stream(feed)

    async def _barge_in(self, call: PlivoCall, at: float) -> None:
        """Send silence until `at` s into the bot's reply, then talk over it."""
        give_up = call.now() + self.config.reply_timeout / self.config.speed
        waited: list[bool] = []  # [True] once it is time, [False] once given up

        def wait_for_reply() -> tuple[bytes, bool | None] | None:
            begun = reply_started(call.report)
            if begun is not None and call.now() >= begun + at / self.config.speed:
                waited.append(True)
                return None
            if call.now() > give_up or call.done.is_set():
                waited.append(False)
                return None
            return self.silent, False

        await call.stream(wait_for_reply)
        if not waited[0]:
            call.report.warnings.append(
                f"no reply within {self.config.reply_timeout:g} s: barge-in skipped"
            )
            return
        audio = self.config.barge_in_audio or synth.default_barge_in_audio(self.fmt)
        call.report.barge_in_started = call.now()
        call.mark("barge-in")
        frames = iter(codec.frames(audio, self.fmt))
        await call.stream(lambda: next(((f, None) for f in frames), None))

    def _send_dtmf(self, call: PlivoCall, digit: str) -> None:
        stamp = str(int(time.time() * 1000))
        dtmf = Dtmf(
            self.config.stream_id,
            digit,
            "inbound",
            stamp,
            call.next_seq(),
            self.config.extra_headers,
        )
        call.write(dtmf.to_json())
        call.sent_dtmf(digit)


@functools.lru_cache(maxsize=16)
def _clip(audio: bytes, fmt: MediaFormat) -> tuple[tuple[bytes, ...], tuple[bool, ...]]:
    """The clip's 20 ms frames and which hold speech: once for all the calls of a run that share
    it (cutting and measuring 500 frames at each call's start held the streaming calls up)."""
    frames = codec.frames(audio, fmt) if audio else []
    speech = [_is_speech(f, fmt) for f in frames]
    if frames and not any(speech):
        speech[-1] = True  # no speech at all: the turn ends with the audio
    return tuple(frames), tuple(speech)  # shared: read only


@functools.lru_cache(maxsize=8192)  # the calls of a run share a clip: measure each frame once
def _is_speech(frame: bytes, fmt: MediaFormat) -> bool:
    return codec.level_dbfs(codec.decode(frame, fmt)) > SPEECH_DBFS


def reply_started(report: CallReport) -> float | None:
    """When the bot's reply began: the first `playAudio` at or after the caller's speech ended
    (the first one at all when the caller said nothing)."""
    after = report.speech_end if report.speech_end is not None else float("-inf")
    return next((e.t for e in report.timeline if e.kind == "play" and e.t >= after), None)


async def run_call(config: SimulateConfig) -> CallReport:
    """Run one simulated call to the end and report it."""
    ws = await open_stream(config.url, config.auth_token, config.open_timeout)
    report = CallReport(config.call_id, config.stream_id, config.media_format, speed=config.speed)
    report.barge_in_at = config.barge_in_at
    report.connect_s = ws.connect_s
    call = PlivoCall(ws, report, config.extra_headers)
    return await converse(
        call, _WavCaller(config), linger=config.linger, send_stop=config.send_stop
    )


async def run_calls(
    configs: list[SimulateConfig],
    concurrency: int = 1,
    on_done: Callable[[CallReport], None] | None = None,
) -> list[CallReport]:
    """Run several calls, at most `concurrency` at a time; reports come back in order.

    `on_done` sees each report as its call ends (a progress display). The objects that exist
    before the calls (modules, configs, clips) are frozen out of the cyclic GC meanwhile: its
    full collections walked them all, and one paused every call for 60 ms at 400 calls."""
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(config: SimulateConfig) -> CallReport:
        async with gate:
            report = await run_call(config)
        if on_done is not None:
            on_done(report)
        return report

    gc.freeze()
    try:
        return list(await asyncio.gather(*(one(c) for c in configs)))
    finally:
        gc.unfreeze()


OPENING_AT_ONCE = 16  # upgrades in flight per process (see `_opening_gate`)
_GATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _opening_gate() -> asyncio.Semaphore:
    """At most `OPENING_AT_ONCE` upgrades in flight on this loop.

    400 calls opened at once answer in bursts that the loop parses in one go (hundreds of
    milliseconds), while the calls already streaming miss their deadlines: a few at a time keeps
    each burst short. A call's `connect_s` is its own upgrade, not the wait for its turn."""
    loop = asyncio.get_running_loop()
    gate = _GATES.get(loop)
    if gate is None:
        gate = _GATES[loop] = asyncio.Semaphore(OPENING_AT_ONCE)
    return gate


async def open_stream(url: str, auth_token: str | None, open_timeout: float) -> ClientLink:
    """Open the WebSocket as Plivo does (signed when a token is given); errors are one line.

    The server's messages wait in order until the call `receive`s them."""
    headers = _upgrade_headers(url, auth_token)
    try:
        uri = parse_uri(url)
        async with _opening_gate():
            return await open_link(
                url,
                None,
                headers=list(headers.items()),
                user_agent=USER_AGENT,  # what websockets' `connect` sends
                timeout=open_timeout,
                max_size=None,
                proxy=proxy_for(uri.host, uri.port, uri.secure),
            )
    except InvalidStatus as exc:
        raise _refusal(url, exc, signed=bool(headers)) from None
    except InvalidHandshake as exc:
        raise NetworkError(f"{url}: WebSocket handshake failed: {exc}") from None
    except (OSError, asyncio.TimeoutError) as exc:
        raise NetworkError(f"cannot connect to {url}: {_reason(exc)}") from None


async def converse(
    call: PlivoCall, script: Script, *, linger: float, send_stop: bool = False
) -> CallReport:
    """Run `script` as the caller while answering the server; linger, hang up, report."""
    ws = call.ws
    receiver = asyncio.ensure_future(call.receive())
    player = asyncio.ensure_future(call.play_out())
    try:
        with contextlib.suppress(ConnectionClosed):
            await script(call)
            await call.send_silence(linger)
            await call.hang_up(send_stop)
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
    protocol = ws.ws
    received = protocol.close_rcvd  # the server's own close frame, whoever closed first
    report.close_code = received.code if received is not None else protocol.close_code
    report.close_reason = (received.reason if received is not None else ws.close_reason) or ""
    report.closed_by_server = _closed_by_server(protocol)
    return report


def _closed_by_server(protocol: Protocol) -> bool:
    """Whether the server ended the call: it closed first, or refused it (1008) at any point
    (the simulator never sends 1008, so a 1008 from the server is its refusal even when it
    crossed the simulator's own close)."""
    received = protocol.close_rcvd
    if received is None:
        return False
    if received.code == POLICY_VIOLATION:
        return True
    return bool(protocol.close_rcvd_then_sent) or protocol.close_sent is None


def _refusal(url: str, exc: InvalidStatus, *, signed: bool) -> PstreamError:
    """Say what an HTTP answer to the upgrade means: a refused path is not a bad signature."""
    response = exc.response
    status = response.status_code
    said = f"HTTP {status} {response.reason_phrase}".rstrip()
    body = response.body.decode("utf-8", "replace").strip().splitlines() if response.body else []
    detail = f" ({body[0][:120]})" if body else ""
    head = f"{url} answered the WebSocket upgrade with {said}{detail}"
    if status == 404:
        return UsageError(f"{head}: nothing serves WebSockets at that path; check the URL's path")
    if status in (401, 403):
        if not signed:
            why = "the upgrade was not signed (no auth token): set PLIVO_AUTH_TOKEN or --auth-token"
            return ConfigError(
                f"{head}: the server refused the connection; {why} if it checks "
                "Plivo's signature, else check the path and the server's rules"
            )
        return ConfigError(
            f"{head}: the server refused the connection before the stream; if it checks Plivo's "
            "signature at the upgrade, check the auth token and the URL it signs (http(s):// "
            "form), else the path and the server's access rules"
        )
    if 400 <= status < 500:
        return UsageError(f"{head}: the server refused this request; check the URL")
    return NetworkError(f"{head}: the server failed")


def _upgrade_headers(url: str, auth_token: str | None) -> dict[str, str]:
    if not url.startswith(("ws://", "wss://")):
        raise UsageError(f"URL must start with ws:// or wss://, got {url!r}")
    if not auth_token:
        return {}
    return sign_headers(url, auth_token)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def save_reply(path: Path, report: CallReport) -> None:
    """Write the audio the server sent (every playAudio payload, decoded) to a WAV file."""
    from plivo_stream_cli.adapters.audiofile import write_wav

    fmt = report.media_format
    try:
        write_wav(path, codec.decode(bytes(report.received_audio), fmt), fmt.sample_rate)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


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
