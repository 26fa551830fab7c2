"""`pstream simulate`: play Plivo's side of one or more calls against any WebSocket server, measure
the bot's latency, and fail (exit 8) when it misses a threshold."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from plivo_stream_cli.commands import values
from plivo_stream_cli.commands.base import Registry
from plivo_stream_cli.commands.common import add, auth_token_option, resolve_token
from plivo_stream_cli.commands.stream_options import CONTENT_TYPE, ContentType

if TYPE_CHECKING:
    from plivo_stream_cli.metrics import Check
    from plivo_stream_cli.simulator import CallReport

SIMULATE_EPILOG = (
    "Example: pstream simulate ws://127.0.0.1:8080/stream --audio hello.wav --dtmf '5@1.5' "
    "--barge-in-at 0.5 --max-first-audio-ms 800 --max-clear-ms 300 --repeat 10 --json"
)


def register(app: Registry) -> None:
    add(app, simulate, "simulate", epilog=SIMULATE_EPILOG)


def simulate(
    url: str = typer.Argument(
        ...,
        metavar="URL",
        parser=values.url_parser(values.WS_SCHEMES),
        help="ws:// or wss:// URL of the stream server to test.",
    ),
    audio: Path | None = typer.Option(
        None, "--audio", help="The caller's audio (any PCM WAV; converted). Default: built-in clip."
    ),
    content_type: ContentType = CONTENT_TYPE,
    auth_token: str | None = auth_token_option(),
    speed: float = values.speed_option(1.0, "--speed", help="Send N times faster than real time."),
    dtmf: str | None = typer.Option(
        None, "--dtmf", help="Digits to press at given seconds, e.g. '5@1.5,#@3'."
    ),
    extra_headers: str = typer.Option(
        "", "--extra-headers", help="extra_headers of the start event, e.g. 'a=1;b=2'."
    ),
    send_stop: bool = typer.Option(
        False, "--send-stop", help="Send a stop event before closing (Plivo's docs don't)."
    ),
    linger: float = values.seconds_option(
        2.0, "--linger", help="Seconds to stay on the call after the caller's audio ends."
    ),
    barge_in_at: float | None = values.seconds_option(
        None,
        "--barge-in-at",
        help="Talk over the bot's reply SECONDS after it begins (measures clear_ms).",
    ),
    barge_in_audio: Path | None = typer.Option(
        None, "--barge-in-audio", help="What the caller says at barge-in. Default: built-in clip."
    ),
    max_first_audio_ms: float | None = values.ms_option(
        None, "--max-first-audio-ms", help="Exit 8 if any call's time to first audio exceeds N."
    ),
    max_clear_ms: float | None = values.ms_option(
        None, "--max-clear-ms", help="Exit 8 if any call's barge-in-to-clearAudio exceeds N."
    ),
    repeat: int = values.count_option(
        1, "--repeat", what="calls", high=100_000, help="Run N calls (fresh ids each)."
    ),
    concurrency: int = values.count_option(
        1,
        "--concurrency",
        what="calls at once",
        high=10_000,
        help="Run at most N of the calls at the same time.",
    ),
    record_reply: Path | None = typer.Option(
        None, "--record-reply", help="Write the audio the server sent back to this WAV."
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Exit 7 when the server breaks the protocol."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Act as Plivo: connect (signed), send start, media and DTMF, answer checkpoints and clears."""
    import asyncio
    import dataclasses
    import uuid

    from plivo_stream_cli.errors import UsageError
    from plivo_stream_cli.formats import MediaFormat
    from plivo_stream_cli.simulator import SimulateConfig, parse_dtmf_schedule, run_calls
    from plivo_stream_cli.synth import default_caller_audio

    if max_clear_ms is not None and barge_in_at is None:
        raise UsageError("--max-clear-ms needs --barge-in-at (the caller must talk over the bot)")
    check_reply_path(record_reply)
    fmt = MediaFormat.from_content_type(content_type.value)
    config = SimulateConfig(
        url=url,
        audio=_caller_audio(audio, fmt) if audio else default_caller_audio(fmt),
        media_format=fmt,
        auth_token=resolve_token(auth_token, required=False),
        speed=speed,
        dtmf=values.check_dtmf(parse_dtmf_schedule(dtmf or "")),
        extra_headers=extra_headers,
        send_stop=send_stop,
        linger=linger,
        barge_in_at=barge_in_at,
        barge_in_audio=_caller_audio(barge_in_audio, fmt) if barge_in_audio else b"",
    )
    configs = [config] + [
        dataclasses.replace(config, call_id=str(uuid.uuid4()), stream_id=str(uuid.uuid4()))
        for _ in range(repeat - 1)
    ]
    limits = {"first_audio_ms": max_first_audio_ms, "clear_ms": max_clear_ms}
    with progress_display(len(configs), concurrency, limits) as on_done:
        reports = asyncio.run(run_calls(configs, concurrency, on_done))
    if record_reply is not None:
        _write_replies(record_reply, reports)
    finish(reports, limits, json_out=json_out, strict=strict)


class RunProgress:
    """What a run of many calls has done so far: calls done and failing, running percentiles."""

    def __init__(self, total: int, concurrency: int, limits: dict[str, float | None]) -> None:
        self.total = total
        self.concurrency = concurrency
        self.limits = {name: limit for name, limit in limits.items() if limit is not None}
        self.done = 0
        self.failing = 0
        self.first_audio: list[float] = []

    def add(self, report: CallReport) -> None:
        from plivo_stream_cli.metrics import summarize

        metrics = summarize(report)["metrics"]
        self.done += 1
        if metrics.get("first_audio_ms") is not None:
            self.first_audio.append(float(metrics["first_audio_ms"]))
        over = any(
            isinstance(metrics.get(name), (int, float)) and metrics[name] > limit
            for name, limit in self.limits.items()
        )
        if over or report.violations or report.rejected:
            self.failing += 1

    def line(self) -> str:
        running = min(self.concurrency, self.total - self.done)
        parts = [f"calls {self.done}/{self.total} done", f"{running} running"]
        parts.append(f"{self.failing} failing")
        if self.first_audio:
            ordered = sorted(self.first_audio)
            p50, p95 = (_percentile(ordered, q) for q in (0.5, 0.95))
            parts.append(f"first audio p50 {p50:.0f} ms p95 {p95:.0f} ms")
        return "  ".join(parts)


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextlib.contextmanager
def progress_display(
    total: int, concurrency: int, limits: dict[str, float | None]
) -> Iterator[Callable[[CallReport], None] | None]:
    """A live progress line on a terminal's stderr for a run of many calls; nothing when piped."""
    from plivo_stream_cli import output

    if total < 2 or output.VERBOSITY.level < 0 or not output.is_terminal(stderr=True):
        yield None
        return
    from rich.live import Live
    from rich.text import Text

    progress = RunProgress(total, concurrency, limits)
    with Live(Text(progress.line()), console=output.console(stderr=True), transient=True) as live:

        def on_done(report: CallReport) -> None:
            progress.add(report)
            live.update(Text(progress.line()))

        yield on_done


def finish(
    reports: list[CallReport],
    limits: dict[str, float | None],
    *,
    json_out: bool,
    strict: bool,
) -> None:
    """Print the run's summary, then exit as the calls and the thresholds say (shared by replay)."""
    from plivo_stream_cli import output
    from plivo_stream_cli.errors import CheckFailed
    from plivo_stream_cli.metrics import check, render_text, run_summary, summarize

    per_call = [summarize(r)["metrics"] for r in reports]
    checks = [check(per_call, name, limit) for name, limit in limits.items() if limit is not None]
    summary = run_summary(reports, checks)
    _verbose_timelines(reports)
    if json_out:
        output.json_line(summary)
    else:
        for line in render_text(summary):
            output.data(line)
    _exit_for(reports, strict)
    _report_checks(checks)
    failed = [c for c in checks if not c.passed]
    if failed:
        raise CheckFailed("; ".join(c.describe() for c in failed))


def _verbose_timelines(reports: list[CallReport]) -> None:
    """With -v: what happened in each call, in order (media frames left out), on stderr."""
    from plivo_stream_cli import output

    if output.VERBOSITY.level < 1:
        return
    for report in reports:
        output.verbose(f"call {report.call_id} stream {report.stream_id}:")
        for event in report.timeline:
            size = f" ({event.nbytes} B)" if event.nbytes else ""
            output.verbose(f"{event.t:9.3f} s  {event.kind:<12} {event.detail}{size}".rstrip())


def _report_checks(checks: list[Check]) -> None:
    from plivo_stream_cli import output

    for item in checks:
        if item.passed:
            output.status(f"[green]pass[/green] {item.describe()}")


def check_reply_path(path: Path | None) -> None:
    """Refuse a --record-reply path that cannot be written, before any call is made."""
    from plivo_stream_cli.errors import UsageError

    if path is None:
        return
    if path.is_dir():
        raise UsageError(f"--record-reply: {path} is a directory: give a file name, e.g. reply.wav")
    if not path.parent.is_dir():
        raise UsageError(f"--record-reply: the directory {path.parent} does not exist")


def _caller_audio(path: Path, fmt: Any) -> bytes:
    from plivo_stream_cli.audiofile import load_audio

    return load_audio(path, fmt)


def _write_replies(path: Path, reports: list[CallReport]) -> None:
    from plivo_stream_cli import output
    from plivo_stream_cli.simulator import save_reply

    for number, report in enumerate(reports, start=1):
        target = path if len(reports) == 1 else path.with_stem(f"{path.stem}-{number}")
        save_reply(target, report)
        output.status(f"reply recorded to {target} ({report.received_seconds:.2f} s)")


def _exit_for(reports: list[CallReport], strict: bool) -> None:
    from plivo_stream_cli.errors import ConfigError, ProtocolViolation

    for report in reports:
        if report.rejected and not report.play_messages and report.frames_sent <= 1:
            raise ConfigError(
                f"the server closed the stream with 1008 ({report.close_reason or 'policy'}): "
                "check the auth token and the URL it signs"
            )
        if strict and report.violations:
            raise ProtocolViolation(f"the server broke the protocol: {report.violations[0]}")
