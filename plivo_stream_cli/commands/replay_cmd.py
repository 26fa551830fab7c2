"""`pstream replay`: re-send the caller side of a `serve --record` capture to any server."""

from __future__ import annotations

from pathlib import Path

import typer

from plivo_stream_cli.commands import values
from plivo_stream_cli.commands.base import Registry
from plivo_stream_cli.commands.common import add, auth_token_option, resolve_token
from plivo_stream_cli.commands.simulate_cmd import REQUIRE_REPLY

REPLAY_EPILOG = (
    "Example: pstream replay calls/CA123_ST456.jsonl ws://127.0.0.1:9000/stream "
    "--speed 2 --record-reply reply.wav --max-first-audio-ms 800"
)


def register(app: Registry) -> None:
    add(app, replay, "replay", epilog=REPLAY_EPILOG)


def replay(
    capture: Path = typer.Argument(
        ..., help="A JSONL capture written by `pstream serve --record`."
    ),
    url: str = typer.Argument(
        ...,
        metavar="URL",
        parser=values.url_parser(values.WS_SCHEMES),
        help="ws:// or wss:// URL of the server to replay the call to.",
    ),
    auth_token: str | None = auth_token_option(),
    speed: float = values.speed_option(1.0, "--speed", help="Replay N times faster than recorded."),
    keep_ids: bool = typer.Option(
        False, "--keep-ids", help="Reuse the recorded callId and streamId (default: fresh ones)."
    ),
    linger: float = values.seconds_option(
        2.0, "--linger", help="Seconds to stay on the call after the last recorded event."
    ),
    record_reply: Path | None = typer.Option(
        None, "--record-reply", help="Write the audio the server sent back to this WAV."
    ),
    max_first_audio_ms: float | None = values.ms_option(
        None, "--max-first-audio-ms", help="Exit 8 if the time to first audio exceeds N."
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Exit 7 when the server breaks the protocol."
    ),
    require_reply: bool = REQUIRE_REPLY,
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Replay a recorded call with its original timing, answering checkpoints and clears."""
    import asyncio

    from plivo_stream_cli.adapters.replay import ReplayConfig, run_replay
    from plivo_stream_cli.adapters.simulator import save_reply
    from plivo_stream_cli.commands.simulate_cmd import check_reply_path, finish
    from plivo_stream_cli.console import output

    check_reply_path(record_reply)
    config = ReplayConfig(
        url=url,
        capture=capture,
        auth_token=resolve_token(auth_token, required=False),
        speed=speed,
        keep_ids=keep_ids,
        linger=linger,
    )
    report = asyncio.run(run_replay(config))
    if record_reply is not None:
        save_reply(record_reply, report)
        output.status(f"reply recorded to {record_reply} ({report.received_seconds:.2f} s)")
    limits = {"first_audio_ms": max_first_audio_ms}
    finish([report], limits, json_out=json_out, strict=strict, require_reply=require_reply)
