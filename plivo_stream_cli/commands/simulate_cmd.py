"""`pstream simulate`: play Plivo's side of a call against any WebSocket server."""

from __future__ import annotations

from pathlib import Path

import typer

from plivo_stream_cli.commands.common import add, auth_token_option, resolve_token
from plivo_stream_cli.commands.stream_options import CONTENT_TYPE, ContentType

SIMULATE_EPILOG = (
    "Example: pstream simulate ws://127.0.0.1:8080/stream --audio hello.wav --dtmf '5@1.5' "
    "--record-reply reply.wav"
)


def register(app: typer.Typer) -> None:
    add(app, simulate, "simulate", epilog=SIMULATE_EPILOG)


def simulate(
    url: str = typer.Argument(..., help="ws:// or wss:// URL of the stream server to test."),
    audio: Path | None = typer.Option(
        None, "--audio", help="The caller's audio (any PCM WAV; converted). Default: 1 s tone."
    ),
    content_type: ContentType = CONTENT_TYPE,
    auth_token: str | None = auth_token_option(),
    speed: float = typer.Option(1.0, "--speed", help="Send N times faster than real time."),
    dtmf: str | None = typer.Option(
        None, "--dtmf", help="Digits to press at given seconds, e.g. '5@1.5,#@3'."
    ),
    extra_headers: str = typer.Option(
        "", "--extra-headers", help="extra_headers of the start event, e.g. 'a=1;b=2'."
    ),
    send_stop: bool = typer.Option(
        False, "--send-stop", help="Send a stop event before closing (Plivo's docs don't)."
    ),
    linger: float = typer.Option(
        2.0, "--linger", help="Seconds to stay on the call after the caller's audio ends."
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

    from plivo_stream_cli.formats import MediaFormat
    from plivo_stream_cli.metrics import summarize
    from plivo_stream_cli.simulator import SimulateConfig, parse_dtmf_schedule, run_call
    from plivo_stream_cli.synth import default_caller_audio

    fmt = MediaFormat.from_content_type(content_type.value)
    wire = _caller_audio(audio, fmt) if audio else default_caller_audio(fmt)
    config = SimulateConfig(
        url=url,
        audio=wire,
        media_format=fmt,
        auth_token=resolve_token(auth_token, required=False),
        speed=speed,
        dtmf=parse_dtmf_schedule(dtmf or ""),
        extra_headers=extra_headers,
        send_stop=send_stop,
        linger=linger,
    )
    report = asyncio.run(run_call(config))
    if record_reply is not None:
        _write_reply(record_reply, report)
    _print(summarize(report), json_out)
    _exit_for(report, strict)


def _caller_audio(path: Path, fmt: object) -> bytes:
    from plivo_stream_cli.audiofile import load_audio
    from plivo_stream_cli.formats import MediaFormat

    assert isinstance(fmt, MediaFormat)
    return load_audio(path, fmt)


def _write_reply(path: Path, report: object) -> None:
    from plivo_stream_cli import codec, output
    from plivo_stream_cli.audiofile import write_wav
    from plivo_stream_cli.simulator import CallReport

    assert isinstance(report, CallReport)
    fmt = report.media_format
    write_wav(path, codec.decode(bytes(report.received_audio), fmt), fmt.sample_rate)
    output.status(f"reply recorded to {path} ({report.received_seconds:.2f} s)")


def _print(summary: dict[str, object], json_out: bool) -> None:
    from plivo_stream_cli import output

    if json_out:
        output.json_line(summary)
        return
    for key, value in summary.items():
        if key not in ("schema_version",) and value not in (None, [], ""):
            output.data(f"{key:<22} {value}")


def _exit_for(report: object, strict: bool) -> None:
    from plivo_stream_cli.errors import ConfigError, ProtocolViolation
    from plivo_stream_cli.simulator import CallReport

    assert isinstance(report, CallReport)
    if report.rejected and not report.play_messages and report.frames_sent <= 1:
        raise ConfigError(
            f"the server closed the stream with 1008 ({report.close_reason or 'policy'}): "
            "check the auth token and the URL it signs"
        )
    if strict and report.violations:
        raise ProtocolViolation(f"the server broke the protocol: {report.violations[0]}")
