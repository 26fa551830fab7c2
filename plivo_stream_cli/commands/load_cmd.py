"""`pstream load`: stepped load against a bot; the largest step that still meets the thresholds."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from plivo_stream_cli.commands import values
from plivo_stream_cli.commands.common import add, auth_token_option, resolve_token
from plivo_stream_cli.commands.stream_options import CONTENT_TYPE, ContentType

if TYPE_CHECKING:
    from plivo_stream_cli.adapters.loadramp import Progress
    from plivo_stream_cli.adapters.simulator import SimulateConfig
    from plivo_stream_cli.ramp import Step

LOAD_EPILOG = (
    "Example: pstream load ws://127.0.0.1:8080/stream --steps 10,20,40,80 --step-seconds 30 "
    "--warm-up 5 --max-first-audio-ms 800 --max-gap-ms 200 --json"
)


def register(app: typer.Typer) -> None:
    add(app, load, "load", epilog=LOAD_EPILOG)


def load(
    url: str = typer.Argument(
        ...,
        help="ws:// or wss:// URL of the bot to load.",
        parser=values.url_parser(values.WS_SCHEMES),
    ),
    steps: str = typer.Option(
        ..., "--steps", help="Calls at once per step: '10,20,40' or FIRST:LAST:STEP ('10:100:10')."
    ),
    step_seconds: float = values.number_option(
        30.0,
        "--step-seconds",
        what="seconds",
        low=0.0,
        high=values.DAY,
        above_low=True,
        metavar="SECONDS",
        help="How long each step keeps its calls going.",
    ),
    warm_up: float = values.seconds_option(
        5.0, "--warm-up", help="Seconds at the start of each step whose calls are not counted."
    ),
    audio: Path | None = typer.Option(
        None, "--audio", help="The caller's audio (any PCM WAV; converted). Default: built-in clip."
    ),
    content_type: ContentType = CONTENT_TYPE,
    auth_token: str | None = auth_token_option(),
    extra_headers: str = typer.Option(
        "", "--extra-headers", help="extra_headers of the start event, e.g. 'a=1;b=2'."
    ),
    linger: float = values.seconds_option(
        1.0, "--linger", help="Seconds each call stays up after the caller's audio ends."
    ),
    barge_in_at: float | None = values.seconds_option(
        None, "--barge-in-at", help="Talk over each reply SECONDS after it begins (clear_ms)."
    ),
    barge_in_audio: Path | None = typer.Option(
        None, "--barge-in-audio", help="What the caller says at barge-in. Default: built-in clip."
    ),
    max_first_audio_ms: float | None = values.ms_option(
        None, "--max-first-audio-ms", help="A step fails if any call's time to first audio > MS."
    ),
    max_clear_ms: float | None = values.ms_option(
        None, "--max-clear-ms", help="A step fails if any call's barge-in-to-clearAudio > MS."
    ),
    max_gap_ms: float | None = values.ms_option(
        None, "--max-gap-ms", help="A step fails if any silence inside a reply is longer than MS."
    ),
    max_late_ms: float = values.number_option(
        10.0,
        "--max-late-ms",
        what="milliseconds",
        low=0.0,
        high=60_000.0,
        above_low=True,
        metavar="MS",
        help="A step fails when pstream's own pacing ran later than this (p99): its figures "
        "would be the generator's, not the bot's.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document at the end."),
) -> None:
    """Ramp up simulated Plivo calls in steps; print a table row per step and the largest step
    that met the thresholds. Exits 8 when even the first step fails."""
    import asyncio

    from plivo_stream_cli import ramp
    from plivo_stream_cli.adapters.loadramp import run_step
    from plivo_stream_cli.console import output
    from plivo_stream_cli.errors import CheckFailed, NetworkError

    planned = ramp.parse_steps(steps)
    _check_numbers(step_seconds, warm_up, linger, barge_in_at, max_clear_ms)
    template = _template(
        url, audio, content_type, auth_token, extra_headers, linger, barge_in_at, barge_in_audio
    )
    limits = {
        "first_audio_ms": max_first_audio_ms,
        "clear_ms": max_clear_ms,
        "reply_gaps_ms": max_gap_ms,
    }
    if not json_out:
        output.data(ramp.HEADER)
    done: list[Step] = []
    progress = _ProgressLine(len(planned)) if output.is_terminal(stderr=True) else None
    try:
        for number, concurrency in enumerate(planned, start=1):
            if progress is not None:
                progress.begin(number)
            step = asyncio.run(
                run_step(
                    template,
                    concurrency,
                    step_seconds,
                    warm_up,
                    progress.show if progress is not None else None,
                )
            )
            ramp.judge(step, limits, max_late_ms)
            done.append(step)
            if progress is not None:
                progress.end()
            if not json_out:
                output.data(ramp.table_row(step))
            if not step.passed:
                break
    finally:
        if progress is not None:
            progress.end()
    best = ramp.largest_passing(done)
    if json_out:
        output.json_line(ramp.summary(done, planned))
    first = done[0]
    if best is None:
        if first.failures and all(f.startswith("cannot connect") for f in first.failures):
            raise NetworkError(first.failures[0])
        raise CheckFailed(
            f"the first step ({first.concurrency} calls at once) already fails: {first.reason()}"
        )
    if not json_out:
        output.data(f"largest step meeting the thresholds: {best} calls at once")
    if not done[-1].passed:
        output.status(f"{done[-1].concurrency} calls at once failed: {done[-1].reason()}")
    elif len(done) == len(planned):
        output.status(f"every step passed: the bot may hold more than {best} calls at once")


def _check_numbers(
    step_seconds: float,
    warm_up: float,
    linger: float,
    barge_in_at: float | None,
    max_clear_ms: float | None,
) -> None:
    from plivo_stream_cli.errors import UsageError

    if warm_up < 0 or warm_up >= step_seconds:
        raise UsageError(
            f"--warm-up must be at least 0 and less than --step-seconds ({step_seconds:g}), "
            f"got {warm_up:g}"
        )
    if max_clear_ms is not None and barge_in_at is None:
        raise UsageError("--max-clear-ms needs --barge-in-at (the caller must talk over the bot)")


def _template(
    url: str,
    audio: Path | None,
    content_type: ContentType,
    auth_token: str | None,
    extra_headers: str,
    linger: float,
    barge_in_at: float | None,
    barge_in_audio: Path | None,
) -> SimulateConfig:
    from plivo_stream_cli.adapters.audiofile import load_audio
    from plivo_stream_cli.adapters.simulator import SimulateConfig
    from plivo_stream_cli.errors import UsageError
    from plivo_stream_cli.formats import MediaFormat
    from plivo_stream_cli.synth import default_caller_audio

    if not url.startswith(("ws://", "wss://")):
        raise UsageError(f"URL must start with ws:// or wss://, got {url!r}")
    fmt = MediaFormat.from_content_type(content_type.value)
    return SimulateConfig(
        url=url,
        audio=load_audio(audio, fmt) if audio else default_caller_audio(fmt),
        media_format=fmt,
        auth_token=resolve_token(auth_token, required=False),
        extra_headers=extra_headers,
        linger=linger,
        barge_in_at=barge_in_at,
        barge_in_audio=load_audio(barge_in_audio, fmt) if barge_in_audio else b"",
    )


class _ProgressLine:
    """One transient status line on a terminal's stderr while a step runs (gone between steps,
    so the table rows on stdout never mix with it)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.step = 0
        self._status: Any = None

    def begin(self, step: int) -> None:
        from plivo_stream_cli.console import output

        self.step = step
        self._status = output.console(stderr=True).status(f"step {step}/{self.steps}: starting")
        self._status.start()

    def show(self, p: Progress) -> None:
        if self._status is not None:
            self._status.update(
                f"step {self.step}/{self.steps}: {p.concurrency} calls at once, "
                f"{min(p.elapsed, p.seconds):.0f}/{p.seconds:g} s, {p.finished} calls ended "
                f"({p.failed} failed), {p.in_flight} in flight"
            )

    def end(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
