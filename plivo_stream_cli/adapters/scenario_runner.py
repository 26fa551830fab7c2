"""Runs a `scenario.Scenario` as Plivo's side of a call, step by step, through a seeded network.

Reuses the simulator's pieces: `open_stream` opens the signed upgrade, `PlivoCall` plays what the
bot sends as Plivo does, `converse` runs the caller's script and hangs up. The script here sends
`start`, then one 20 ms frame every 20 ms for the whole call, as a real line does: a `say`
sends its clip, every other step (silence, DTMF, waits, the lead-in of a barge-in, the linger)
sends silent frames meanwhile. DTMF digits go 100 ms apart.

With impairment, caller frames pass through the up `impairment.Link` (lost ones are never sent,
late ones are held back in order) and the bot's messages through the down one (delayed in
order; 20 ms frames of its audio that are lost play as silence). Signalling (start, dtmf,
playedStream, clearedAudio one way, checkpoints and clears the other) is delayed but never lost:
it rides on TCP.

The marks the assertions read (`scenario.SAY_END`, ...) go on the call's timeline, in time order.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed

from plivo_stream_cli import codec, scenario, synth
from plivo_stream_cli.adapters.clientlink import ClientLink
from plivo_stream_cli.adapters.simulator import (
    SPEECH_DBFS,
    PlivoCall,
    converse,
    open_stream,
    reply_started,
)
from plivo_stream_cli.callreport import CallReport, TimedEvent
from plivo_stream_cli.errors import UsageError
from plivo_stream_cli.events import Dtmf, Media, PlayAudio, ProtocolError, Start, parse
from plivo_stream_cli.formats import FRAME_MS, MediaFormat
from plivo_stream_cli.impairment import Impairment, Link, links
from plivo_stream_cli.metrics import Check, Failure, run_summary
from plivo_stream_cli.scenario import Outcome, Scenario

DTMF_GAP_FRAMES = 5  # 100 ms between digits


@dataclass
class ScenarioConfig:
    """One call of a scenario run."""

    url: str
    scenario: Scenario
    media_format: MediaFormat
    audio: dict[str, bytes] = field(default_factory=dict)  # scenario path -> wire audio
    auth_token: str | None = None
    impairment: Impairment = field(default_factory=Impairment)
    seed: int = 0
    call_index: int = 0
    speed: float = 1.0
    extra_headers: str = ""
    linger: float = 1.0
    send_stop: bool = False
    call_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    stream_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    account_id: str = "MAPSTREAMSIMULATOR00"
    open_timeout: float = 10.0


def scenario_calls(
    url: str,
    parsed: Scenario,
    audio: dict[str, bytes],
    media_format: MediaFormat,
    *,
    repeat: int,
    impairment: Impairment,
    seed: int | None,
    auth_token: str | None = None,
    speed: float | None = None,
    extra_headers: str | None = None,
    send_stop: bool = False,
) -> list[ScenarioConfig]:
    """`repeat` calls of `parsed` (fresh ids each); `speed` and `extra_headers` given override
    the scenario's own."""
    return [
        ScenarioConfig(
            url=url,
            scenario=parsed,
            media_format=media_format,
            audio=audio,
            auth_token=auth_token,
            impairment=impairment,
            seed=seed or 0,
            call_index=index,
            speed=parsed.speed if speed is None else speed,
            extra_headers=extra_headers if extra_headers else parsed.extra_headers,
            linger=parsed.linger,
            send_stop=send_stop,
        )
        for index in range(repeat)
    ]


@dataclass
class ScenarioResult:
    """A scenario call: the simulator's report, the steps that failed, the assertions judged."""

    report: CallReport
    step_failures: list[str] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    frames_lost_up: int = 0
    frames_lost_down: int = 0

    @property
    def passed(self) -> bool:
        return not self.step_failures and all(o.passed for o in self.outcomes)


def add_mark(report: CallReport, t: float, kind: str, detail: str = "") -> None:
    """Put a mark on the timeline at `t`, keeping it in time order."""
    bisect.insort(report.timeline, TimedEvent(t, kind, detail), key=lambda e: e.t)


class ImpairedCall(PlivoCall):
    """A `PlivoCall` whose bot-to-caller messages cross the down link first."""

    def __init__(self, ws: ClientLink, report: CallReport, down: Link | None) -> None:
        super().__init__(ws, report)
        self.down = down
        self.frames_lost = 0
        # with an up link, the caller's script routes what Plivo sends (playedStream,
        # clearedAudio) through it too, so the bot sees those late as well
        self.uplink: Callable[[str], None] | None = None
        self._inbox: asyncio.Queue[tuple[float, str | bytes] | None] = asyncio.Queue()

    def post(self, text: str) -> None:
        if self.uplink is not None:
            self.uplink(text)
        else:
            super().post(text)

    def send_now(self, text: str) -> None:
        """Put `text` on the socket now, whatever the links say."""
        self.write(text)

    def deliver(self, message: str | bytes) -> None:
        if self.down is None:
            super().deliver(message)
        else:
            self._inbox.put_nowait(self._cross(message))

    async def receive(self) -> None:
        if self.down is None:
            await super().receive()
            return
        deliver = asyncio.ensure_future(self._deliver(self._inbox))
        try:
            self.ws.listen(self.deliver)
            await asyncio.shield(self.ws.closed)
        finally:
            self._inbox.put_nowait(None)
            with contextlib.suppress(Exception):
                await deliver
            self.done.set()

    async def _deliver(self, inbox: asyncio.Queue[tuple[float, str | bytes] | None]) -> None:
        while (item := await inbox.get()) is not None:
            arrival, message = item
            delay = arrival - self.now()
            if delay > 0:
                await asyncio.sleep(delay)
            super().deliver(message)

    def _cross(self, message: str | bytes) -> tuple[float, str | bytes]:
        """A message's arrival after the down link; each 20 ms frame of a playAudio may be
        lost (heard as silence), signalling only waits."""
        assert self.down is not None
        now = self.now()
        event = None
        if isinstance(message, str) and '"playAudio"' in message:
            with contextlib.suppress(ProtocolError):
                event = parse(message)
        if not isinstance(event, PlayAudio) or event.media_format != self.fmt:
            arrival = self.down.send(now, lossless=True).arrival
            return (now if arrival is None else arrival), message
        frame = self.fmt.frame_bytes()
        payload = bytearray(event.payload)
        arrivals, lost = [], 0
        for offset in range(0, len(payload), frame):
            fate = self.down.send(now)
            if fate.arrival is None:
                end = min(offset + frame, len(payload))
                payload[offset:end] = codec.silence(self.fmt, end - offset)
                lost += 1
            else:
                arrivals.append(fate.arrival)
        if not lost:
            return max(arrivals, default=now), message
        self.frames_lost += lost
        rebuilt = PlayAudio(event.media_format, bytes(payload), event.stream_id).to_json()
        return max(arrivals, default=now + self.down.impairment.latency / 1000), rebuilt


class ScenarioCaller:
    """The caller's script of a scenario: one frame every 20 ms, the steps deciding what."""

    def __init__(self, config: ScenarioConfig, up: Link | None) -> None:
        self.config = config
        self.fmt = config.media_format
        self.up = up
        self.index = 0  # frames of the call's clock so far
        self.chunk = 0
        self.silent = codec.silence(self.fmt, self.fmt.frame_bytes())
        self.failures: list[str] = []
        self._outbox: asyncio.Queue[tuple[float, str] | None] = asyncio.Queue()
        self._sender: asyncio.Future[None] | None = None

    async def __call__(self, call: PlivoCall) -> None:
        c = self.config
        if self.up is not None:
            self._sender = asyncio.ensure_future(self._send_in_order(call))
            if isinstance(call, ImpairedCall):
                call.uplink = lambda text: self._signal_now(call, text)
        try:
            start = Start(
                c.call_id,
                c.stream_id,
                c.account_id,
                ("inbound",),
                self.fmt,
                c.extra_headers,
                call.next_seq(),
            )
            await self._signal(call, start.to_json())
            call.mark("start")
            for number, step in enumerate(c.scenario.steps, start=1):
                if call.done.is_set():
                    self._fail(call, step, f"step {number}: the server closed the stream before it")
                    break
                if isinstance(step, scenario.Hangup):
                    break
                await self._run(call, step)
            else:
                await self._idle(call, c.linger)
            call.mark("caller-done")
        finally:
            await self._drain(call)

    async def _run(self, call: PlivoCall, step: scenario.Step) -> None:
        if isinstance(step, scenario.Say):
            await self._say(call, step)
        elif isinstance(step, scenario.Silence):
            await self._idle(call, step.seconds)
        elif isinstance(step, scenario.DtmfStep):
            await self._dtmf(call, step.digits)
        elif isinstance(step, scenario.WaitFor):
            await self._wait_for(call, step)
        elif isinstance(step, scenario.BargeIn):
            await self._barge_in(call, step)

    # ------------------------------------------------------------------ steps

    async def _say(self, call: PlivoCall, step: scenario.Say) -> None:
        audio = self._audio(step.audio)
        frames = codec.frames(audio, self.fmt)
        speech_at: float | None = None
        for frame in frames:
            sent = await self._frame(call, frame)
            if codec.level_dbfs(codec.decode(frame, self.fmt)) > SPEECH_DBFS or speech_at is None:
                speech_at = sent  # the last loud frame (or the first frame, if none is loud)
        if speech_at is not None:
            call.report.speech_end = speech_at
            add_mark(call.report, speech_at, scenario.SAY_END, f"line {step.line}")

    async def _idle(self, call: PlivoCall, seconds: float) -> None:
        frames = round(seconds * 1000 / FRAME_MS)
        for _ in range(frames):
            if call.done.is_set():
                return
            await self._frame(call, self.silent)

    async def _dtmf(self, call: PlivoCall, digits: str) -> None:
        last = call.now()
        for position, digit in enumerate(digits):
            if position:
                for _ in range(DTMF_GAP_FRAMES):
                    await self._frame(call, self.silent)
            stamp = str(int(time.time() * 1000))
            event = Dtmf(
                self.config.stream_id,
                digit,
                "inbound",
                stamp,
                call.next_seq(),
                extra_headers=self.config.extra_headers,
            )
            await self._signal(call, event.to_json())
            last = call.now()
            call.sent_dtmf(digit)
        add_mark(call.report, last, scenario.DTMF_END, digits)

    async def _wait_for(self, call: PlivoCall, step: scenario.WaitFor) -> None:
        began = call.now()
        deadline = began + step.timeout / self.config.speed
        seen_confirmed = len(call.report.checkpoints_confirmed)
        while not self._waited(call, step, began, seen_confirmed):
            if call.done.is_set():
                self._fail(call, step, f"wait_for {step.kind}: the server closed the stream")
                return
            if call.now() >= deadline:
                self._fail(call, step, f"wait_for {step.kind}: timed out after {step.timeout:g} s")
                return
            await self._frame(call, self.silent)

    def _waited(self, call: PlivoCall, step: scenario.WaitFor, began: float, seen: int) -> bool:
        report = call.report
        if step.kind == "audio":
            return any(t >= began for t in report.times("play"))
        if step.kind == "clear":
            return any(t >= began for t in report.times("clear"))
        if step.kind == "checkpoint":
            if step.checkpoint is not None:
                return step.checkpoint in report.checkpoints_confirmed
            return len(report.checkpoints_confirmed) > seen
        plays = report.times("play")
        quiet_since = max([began, *plays])
        quiet_for = (call.now() - quiet_since) * self.config.speed * 1000
        return call.queue.queued_bytes == 0 and quiet_for >= step.quiet_ms

    async def _barge_in(self, call: PlivoCall, step: scenario.BargeIn) -> None:
        deadline = call.now() + step.timeout / self.config.speed
        while True:
            begun = reply_started(call.report)
            if begun is not None and call.now() >= begun + step.after_ms / 1000 / self.config.speed:
                break
            if call.done.is_set() or call.now() >= deadline:
                self._fail(call, step, f"barge_in: no reply to talk over within {step.timeout:g} s")
                return
            await self._frame(call, self.silent)
        frames = codec.frames(self._audio(step.audio), self.fmt)
        first = last = None
        for frame in frames:
            sent = await self._frame(call, frame, speech=None)
            first = sent if first is None else first
            last = sent
        if first is None or last is None:
            return
        if call.report.barge_in_started is None:
            call.report.barge_in_started, call.report.barge_in_ended = first, last
        add_mark(call.report, first, scenario.BARGE_IN, f"line {step.line}")
        add_mark(call.report, last, scenario.BARGE_IN_END, f"line {step.line}")

    # ------------------------------------------------------------------ sending

    def _audio(self, path: str | None) -> bytes:
        if path is None:
            return synth.default_caller_audio(self.fmt)
        return self.config.audio[path]

    def _fail(self, call: PlivoCall, step: scenario.Step, message: str) -> None:
        text = f"{self.config.scenario.source}:{step.line}: {message}"
        self.failures.append(text)
        call.mark(scenario.STEP_FAILED, text)

    async def _frame(self, call: PlivoCall, frame: bytes, speech: bool | None = False) -> float:
        """Send one caller frame on the call's 20 ms clock; returns when it was sent."""
        self.index += 1
        stamp = str(call.t0_ms + self.index * FRAME_MS)
        sent = call.now()
        fate = self.up.send(sent) if self.up is not None else None
        if fate is None or not fate.lost:
            self.chunk += 1
            media = Media(
                self.config.stream_id,
                "inbound",
                stamp,
                frame,
                self.chunk,
                call.next_seq(),
                extra_headers=self.config.extra_headers,
            )
            await self._post(call, media.to_json(), None if fate is None else fate.arrival)
            call.sent_media(len(frame), speech=speech)
        await call.sleep_until(self.index * call.interval)
        return sent

    async def _signal(self, call: PlivoCall, text: str) -> None:
        """Send a signalling message: delayed with the frames, never lost."""
        fate = self.up.send(call.now(), lossless=True) if self.up is not None else None
        await self._post(call, text, None if fate is None else fate.arrival)

    def _signal_now(self, call: PlivoCall, text: str) -> None:
        """`_signal` for what Plivo sends of its own accord (only while the up link is on)."""
        assert self.up is not None
        arrival = self.up.send(call.now(), lossless=True).arrival
        self._outbox.put_nowait((call.now() if arrival is None else arrival, text))

    async def _post(self, call: PlivoCall, text: str, arrival: float | None) -> None:
        """Send now, or (impaired) hand to the sender, which sends it at `arrival`."""
        if arrival is None:
            await call.send(text)
        else:
            self._outbox.put_nowait((arrival, text))

    async def _send_in_order(self, call: PlivoCall) -> None:
        while (item := await self._outbox.get()) is not None:
            arrival, text = item
            delay = arrival - call.now()
            if delay > 0:
                await asyncio.sleep(delay)
            with contextlib.suppress(ConnectionClosed):
                if isinstance(call, ImpairedCall):
                    call.send_now(text)
                else:
                    await call.send(text)

    async def _drain(self, call: PlivoCall) -> None:
        """Let what is still on the up link arrive; from now on Plivo's answers go straight."""
        if self._sender is None:
            return
        self._outbox.put_nowait(None)
        with contextlib.suppress(Exception):
            await self._sender
        self._sender = None
        if isinstance(call, ImpairedCall):
            call.uplink = None


async def run_scenario(config: ScenarioConfig) -> ScenarioResult:
    """Run one scenario call to the end; judge its assertions."""
    ws = await open_stream(config.url, config.auth_token, config.open_timeout)
    report = CallReport(config.call_id, config.stream_id, config.media_format, speed=config.speed)
    up = down = None
    if config.impairment.active:
        up, down = links(config.impairment, config.seed, config.call_index)
    call = ImpairedCall(ws, report, down)
    caller = ScenarioCaller(config, up)
    report = await converse(call, caller, linger=0, send_stop=config.send_stop)
    result = ScenarioResult(report, caller.failures)
    result.outcomes = scenario.evaluate(config.scenario.expect, report.timeline)
    result.frames_lost_up = up.lost if up is not None else 0
    result.frames_lost_down = call.frames_lost
    return result


async def run_scenarios(
    configs: list[ScenarioConfig], concurrency: int = 1
) -> list[ScenarioResult]:
    """Run several scenario calls, at most `concurrency` at a time; results come back in order."""
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(config: ScenarioConfig) -> ScenarioResult:
        async with gate:
            return await run_scenario(config)

    return list(await asyncio.gather(*(one(c) for c in configs)))


def load_scenario(path: Path, fmt: MediaFormat | None) -> tuple[Scenario, dict[str, bytes], str]:
    """Read and validate a scenario file and load its audio; returns (scenario, audio, text).

    Audio paths may not leave the scenario's directory, symlinks included."""
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UsageError(f"cannot read scenario {path}: {reason}") from None
    parsed, audio = parse_scenario(text, str(path), path.resolve().parent, fmt)
    return parsed, audio, text


def parse_scenario(
    text: str, source: str, home: Path, fmt: MediaFormat | None
) -> tuple[Scenario, dict[str, bytes]]:
    """Validate a scenario's text whose audio lives under `home`; load that audio."""
    from plivo_stream_cli.adapters.audiofile import load_audio

    home = home.resolve()

    def inside(relative: str) -> bool:
        target = (home / relative).resolve()
        return target.is_relative_to(home) and target.is_file()

    parsed = scenario.parse(text, source, inside)
    chosen = fmt or MediaFormat.from_content_type(parsed.content_type or "audio/x-mulaw;rate=8000")
    audio = {name: load_audio(home / name, chosen) for name in parsed.audio_files()}
    return parsed, audio


def audio_digest(parts: list[bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def identity_of(
    parts: list[bytes], fmt: MediaFormat, seed: int | None, impairment: Impairment, name: str | None
) -> dict[str, Any]:
    """What a baseline must share with a run: its audio, seed, network and scenario."""
    return {
        "audio_sha256": audio_digest([fmt.content_type.encode(), *parts]),
        "seed": seed,
        "network": {
            "loss": impairment.loss,
            "jitter": impairment.jitter,
            "latency": impairment.latency,
        },
        "scenario": name,
    }


def summarize_run(
    reports: list[CallReport],
    results: list[ScenarioResult] | None,
    checks: Sequence[Check],
    identity: dict[str, Any],
    parsed: Scenario | None,
    failed: Sequence[Failure] = (),
) -> dict[str, Any]:
    """The `--json` document of a run: `metrics.run_summary`, plus the run's identity and, for
    a scenario, each call's steps and assertions."""
    summary = run_summary(reports, checks, failed)
    summary["run"] = identity
    if results is None or parsed is None:
        return summary
    summary["scenario"] = {"name": parsed.name, "source": parsed.source}
    for call, result in zip(summary["calls"], results, strict=True):
        call["passed"] = result.passed
        call["step_failures"] = result.step_failures
        call["assertions"] = [x.to_dict() for x in result.outcomes]
        if any(identity["network"].values()):
            call["frames_lost_up"] = result.frames_lost_up
            call["frames_lost_down"] = result.frames_lost_down
    summary["passed"] = summary["passed"] and all(r.passed for r in results)
    return summary
