"""`pstream tail`, `play`, `clear`, `checkpoint`, `streams`: drive a running serve from elsewhere.

Flags and rendering only: the channel is `control`, the serve registry `statefile`, capture
decoding `capturefeed`. The serve is found in this user's state directory (or `--control URL`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from plivo_stream_cli.commands.base import Registry
from plivo_stream_cli.commands.common import JSON_OPTION, add, resolve_token

if TYPE_CHECKING:
    from plivo_stream_cli.adapters.control import ControlClient, ControlRequestError, Target
    from plivo_stream_cli.feed import Record

TOKEN_ENV = "PSTREAM_CONTROL_TOKEN"
WHICH = "Which serve"
CAPTURE_POLL_SECONDS = 0.2

TAIL_EPILOG = (
    "Example: pstream tail --json | jq 'select(.event == \"dtmf\")'\n\n"
    "Or decode a recording: pstream tail calls/CALL.STREAM.jsonl --follow"
)
PLAY_EPILOG = "Example: pstream play greeting.wav --checkpoint greeted"
CLEAR_EPILOG = "Example: pstream clear --stream 3f2a"
CHECKPOINT_EPILOG = "Example: pstream checkpoint after-greeting"
STREAMS_EPILOG = "Example: pstream streams --json | jq -r '.[].stream'"


def register(app: Registry) -> None:
    add(app, tail, "tail", epilog=TAIL_EPILOG)
    add(app, play, "play", epilog=PLAY_EPILOG)
    add(app, clear, "clear", epilog=CLEAR_EPILOG)
    add(app, checkpoint, "checkpoint", epilog=CHECKPOINT_EPILOG)
    add(app, streams, "streams", epilog=STREAMS_EPILOG)


def _control_option() -> Any:
    return typer.Option(
        None,
        "--control",
        help="Control URL of the serve (default: the only serve running for this user).",
        rich_help_panel=WHICH,
    )


def _token_option() -> Any:
    return typer.Option(
        None,
        "--token",
        help=f"Token for --control (prefer {TOKEN_ENV}; not needed for your own serves).",
        show_default=False,
        rich_help_panel=WHICH,
    )


def _stream_option() -> Any:
    return typer.Option(
        None,
        "--stream",
        "-s",
        help="Stream id or a unique prefix (optional when one stream is live).",
    )


# ---------------------------------------------------------------- commands


def tail(
    capture: Path | None = typer.Argument(
        None, help="A JSONL capture from `serve --record` to decode instead of attaching."
    ),
    follow: bool = typer.Option(
        False, "--follow", "-f", help="With CAPTURE: keep reading as the file grows."
    ),
    json_out: bool = JSON_OPTION,
    media: bool = typer.Option(
        False, "--media", help="Include the caller's media records (50 a second per stream)."
    ),
    control: str | None = _control_option(),
    token: str | None = _token_option(),
) -> None:
    """Show a running serve's live view (or --json records), or decode a capture file."""
    if capture is not None:
        _tail_capture(capture, follow=follow, json_out=json_out, media=media)
        return
    import asyncio

    from plivo_stream_cli.errors import UsageError

    if follow:
        raise UsageError("--follow reads a capture file: pstream tail CAPTURE.jsonl --follow")
    asyncio.run(_attach(_target(control, token), json_out=json_out, media=media))


def play(
    file: Path = typer.Argument(..., help="Audio to play (any PCM WAV, .ulaw or raw; converted)."),
    stream: str | None = _stream_option(),
    checkpoint_name: str | None = typer.Option(
        None, "--checkpoint", help="Checkpoint sent after the audio (default: the file's name)."
    ),
    control: str | None = _control_option(),
    token: str | None = _token_option(),
) -> None:
    """Play an audio file to a live stream of a running serve (playAudio, then a checkpoint)."""
    from plivo_stream_cli.adapters.audiofile import load_pcm
    from plivo_stream_cli.adapters.control import encode_play
    from plivo_stream_cli.console import output

    pcm, rate = load_pcm(file)
    fields = encode_play(pcm, rate)
    fields["checkpoint"] = checkpoint_name or file.stem
    reply = _act(control, token, "play", stream, fields)
    output.status(
        f"queued {reply['seconds']:.2f} s of {file.name} ({reply['bytes']} bytes) to stream "
        f"{reply['stream']}; checkpoint {reply['checkpoint']!r}"
    )


def clear(
    stream: str | None = _stream_option(),
    control: str | None = _control_option(),
    token: str | None = _token_option(),
) -> None:
    """Stop what serve is playing on a stream and send clearAudio (Plivo answers clearedAudio)."""
    from plivo_stream_cli.console import output

    reply = _act(control, token, "clear", stream, {})
    output.status(f"clearAudio sent to stream {reply['stream']}")


def checkpoint(
    name: str = typer.Argument(..., help="Checkpoint name: Plivo confirms it with playedStream."),
    stream: str | None = _stream_option(),
    control: str | None = _control_option(),
    token: str | None = _token_option(),
) -> None:
    """Send a checkpoint on a stream; Plivo confirms it once the audio before it has played."""
    from plivo_stream_cli.console import output

    reply = _act(control, token, "checkpoint", stream, {"name": name})
    output.status(f"checkpoint {reply['name']!r} sent to stream {reply['stream']}")


def streams(
    json_out: bool = JSON_OPTION,
    control: str | None = _control_option(),
    token: str | None = _token_option(),
) -> None:
    """List the streams of a running serve: call, format, state, packets, DTMF, checkpoints."""
    from plivo_stream_cli.console import output

    snapshots = _act(control, token, "streams", None, {})["streams"]
    if json_out:
        output.json_line(snapshots)
    elif not snapshots:
        output.status("no streams (waiting for a call)")
    else:
        _print_streams(snapshots)


# ---------------------------------------------------------------- requests


def _target(control: str | None, token: str | None) -> Target:
    from plivo_stream_cli.adapters.control import find_serve
    from plivo_stream_cli.console import output

    token = resolve_token(token, required=False, env=TOKEN_ENV) if token else None
    if control and not token:
        token = os.environ.get(TOKEN_ENV) or None
    target = find_serve(control, token)
    output.verbose(f"control channel {target.url} ({target.label})")
    return target


def _act(
    control: str | None, token: str | None, op: str, stream: str | None, fields: dict[str, Any]
) -> dict[str, Any]:
    import asyncio

    return asyncio.run(_request(_target(control, token), op, stream, fields))


async def _request(
    target: Target, op: str, stream: str | None, fields: dict[str, Any]
) -> dict[str, Any]:
    from plivo_stream_cli.adapters.control import ControlClient, ControlRequestError

    async with ControlClient(target) as client:
        while True:
            try:
                return await client.request(op, stream=stream, **fields)
            except ControlRequestError as exc:
                stream = _choose(exc, stream)


def _choose(exc: ControlRequestError, asked: str | None) -> str:
    """A stream picked at the terminal when several are live, else the refusal as one line."""
    import sys

    from plivo_stream_cli.adapters.control import ControlRequestError

    listing = ", ".join(exc.streams)
    if exc.code == "ambiguous" and exc.streams and sys.stdin.isatty():
        return _prompt(exc.streams)
    messages = {
        "no-stream": "no live stream on that serve (waiting for a call)",
        "ambiguous": f"{len(exc.streams)} live streams: choose one with --stream ID: {listing}",
        "unknown-stream": f"no live stream {asked!r}; live streams: {listing or 'none'}",
    }
    message = messages.get(exc.code, exc.message)
    raise ControlRequestError(message, code=exc.code, streams=exc.streams) from None


def _prompt(ids: list[str]) -> str:
    from plivo_stream_cli.console import output

    output.status(f"{len(ids)} live streams:")
    for number, sid in enumerate(ids, start=1):
        output.status(f"  {number}) {sid}")
    while True:
        answer = str(typer.prompt("stream (number or id)", err=True)).strip()
        if answer.isdigit() and 1 <= int(answer) <= len(ids):
            return ids[int(answer) - 1]
        matches = [sid for sid in ids if sid.startswith(answer)] if answer else []
        if len(matches) == 1:
            return matches[0]
        output.warn(f"{answer!r} is not one of the {len(ids)} streams")


# ---------------------------------------------------------------- tail: attached


async def _attach(target: Target, *, json_out: bool, media: bool) -> None:
    from plivo_stream_cli.adapters.control import ControlClient
    from plivo_stream_cli.console import output

    async with ControlClient(target) as client:
        serve = (await client.monitor(media=media))["serve"]
        output.status(f"attached to pstream serve pid {serve['pid']} ({serve['local_url']})")
        if json_out or not output.is_terminal():
            await _print_pushes(client, json_out=json_out)
        else:
            await _live_view(client, f"pstream tail  {serve['local_url']}  pid {serve['pid']}")
    output.status("the serve stopped")


async def _print_pushes(client: ControlClient, *, json_out: bool) -> None:
    async for message in client.pushes():
        if message["type"] == "record":
            _print_record(message["record"], json_out=json_out)


async def _live_view(client: ControlClient, title: str) -> None:
    from rich.live import Live

    from plivo_stream_cli.console import output
    from plivo_stream_cli.console.view import StreamView

    view = StreamView(title)
    with Live(view.render([]), console=output.console(), transient=False) as live:
        async for message in client.pushes():
            if message["type"] == "record":
                view.add(message["record"])
            else:
                live.update(view.render(message["streams"]))


def _print_record(record: Record, *, json_out: bool) -> None:
    import time

    from plivo_stream_cli.console import output
    from plivo_stream_cli.feed import describe

    if json_out:
        output.json_line(record)
        return
    t = float(record.get("t", 0.0))
    stamp = time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"
    output.data(f"{stamp} {describe(record)}")


# ---------------------------------------------------------------- tail: capture file


def _tail_capture(path: Path, *, follow: bool, json_out: bool, media: bool) -> None:
    from plivo_stream_cli.adapters.recorder import CaptureError
    from plivo_stream_cli.capturefeed import CaptureDecoder, NotACaptureLine

    decoder = CaptureDecoder()
    for number, line in _capture_lines(path, follow=follow):
        try:
            record = decoder.decode(line)
        except NotACaptureLine:
            raise CaptureError(f"{path}:{number}: not a pstream capture line") from None
        if media or record.get("event") != "media":
            _print_record(record, json_out=json_out)


def _capture_lines(path: Path, *, follow: bool) -> Iterator[tuple[int, str]]:
    """Complete lines with their numbers; with `follow`, wait for more (like `tail -f`)."""
    import time

    from plivo_stream_cli.adapters.recorder import CaptureError

    try:
        handle = path.open(encoding="utf-8", errors="surrogateescape", newline="\n")
    except OSError as exc:
        raise CaptureError(f"{path}: cannot read capture: {exc.strerror or exc}") from None
    with handle:
        number, pending = 0, ""
        while True:
            pending += handle.readline()
            if pending.endswith("\n"):
                number += 1
                if pending.strip():
                    yield number, pending
                pending = ""
                continue
            if not follow:
                return  # a torn last line: the writer died mid-line
            if os.fstat(handle.fileno()).st_size < handle.tell():
                handle.seek(0)  # truncated and rewritten: start over
                number, pending = 0, ""
            time.sleep(CAPTURE_POLL_SECONDS)


# ---------------------------------------------------------------- streams table

_COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], object]], ...] = (
    ("stream", lambda s: s.get("stream", "")),
    ("call", lambda s: s.get("call", "")),
    ("format", lambda s: s.get("format", "")),
    ("state", lambda s: s.get("state", "")),
    ("elapsed", lambda s: f"{float(s.get('elapsed', 0)):.1f} s"),
    ("media", lambda s: str(s.get("media", 0))),
    ("dtmf", lambda s: s.get("dtmf") or "-"),
    (
        "checkpoints",
        lambda s: f"{s.get('checkpoints_confirmed', 0)}/{s.get('checkpoints_sent', 0)}",
    ),
    ("queued", lambda s: f"{float(s.get('queued', 0)):.1f} s"),
    ("errors", lambda s: str(s.get("errors", 0))),
)


def _print_streams(snapshots: list[dict[str, Any]]) -> None:

    from rich import box
    from rich.table import Table
    from rich.text import Text

    from plivo_stream_cli.console import output
    from plivo_stream_cli.feed import printable

    rows = [[printable(str(cell(snap))) for _, cell in _COLUMNS] for snap in snapshots]
    if not output.is_terminal():  # piped: TSV, one stream a line, ids whole
        output.tsv([name for name, _ in _COLUMNS], rows)
        return
    table = Table(*(name for name, _ in _COLUMNS), header_style="bold", box=box.SIMPLE)
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    output.console().print(table)
