"""`pstream demo`: a whole call on this machine, no account and no network.

Starts a stream server on a free loopback port (signature checked with a demo token, greeting
played, call recorded), runs the simulated Plivo caller against it (the built-in caller clip and
a key press, which the demo bot answers), shows the live view, then lists the recordings and how
to play them. The audio is generated in code (`synth`), never downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from plivo_stream_cli.commands import values
from plivo_stream_cli.commands.base import Registry
from plivo_stream_cli.commands.common import JSON_OPTION, add

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from plivo_stream_cli.adapters.server import StreamServer
    from plivo_stream_cli.callreport import CallReport

DEMO_EPILOG = "Example: pstream demo --dir demo-call/   (then: aplay demo-call/*.call.wav)"
DEMO_TOKEN = "pstream-demo-token"  # a throwaway token: both ends of the demo are local
DIGIT = "5"
LISTEN_SECONDS = 1.5  # the caller listens to the greeting before speaking
DTMF_AFTER = 0.3  # seconds after the caller has spoken, the key press
LINGER = 1.2
PLAYERS = (
    ("aplay", "aplay {}"),
    ("afplay", "afplay {}"),
    ("ffplay", "ffplay -nodisp -autoexit {}"),
    ("play", "play {}"),
)


def register(app: Registry) -> None:
    add(app, demo, "demo", epilog=DEMO_EPILOG)


def demo(
    directory: Path | None = typer.Option(
        None, "--dir", help="Record into DIR. Default: a fresh temporary directory."
    ),
    speed: float = values.speed_option(
        1.0, "--speed", help="Run the simulated caller N times faster."
    ),
    json_out: bool = JSON_OPTION,
) -> None:
    """See a whole stream on this machine: server, caller, live view, recordings (no account)."""
    import asyncio
    import tempfile

    from plivo_stream_cli.adapters.server import prepare_record_dir
    from plivo_stream_cli.console import output
    from plivo_stream_cli.errors import UsageError

    if speed <= 0:
        raise UsageError(f"--speed must be positive, got {speed:g}")
    if directory is None:
        where = Path(tempfile.mkdtemp(prefix="pstream-demo-"))
    else:
        where = prepare_record_dir(directory)
    live = not json_out and output.is_terminal()
    report, files = asyncio.run(run_demo(where, speed, live=live))
    page = _write_page(files)
    if json_out:
        _print_json(where, report, files, page)
    else:
        _print_result(where, report, files)
        if page is not None:
            output.status(f"see the call: {_escape(str(page))}  (open it in a browser)")
    _require_reply(report)


def _require_reply(report: CallReport) -> None:
    """The demo holds its own bot to what `simulate --require-reply` holds yours (exit 9)."""
    from plivo_stream_cli.commands.simulate_cmd import finish_quietly

    finish_quietly([report], require_reply=True)


def _write_page(files: list[dict[str, Any]]) -> Path | None:
    """The call's timeline page beside its capture (`pstream report`), None without a capture."""
    from plivo_stream_cli.commands.report_cmd import write_call_report
    from plivo_stream_cli.console import output
    from plivo_stream_cli.errors import PstreamError

    capture = next((Path(f["path"]) for f in files if _kind(f["path"]) == "capture"), None)
    if capture is None:
        return None
    try:
        return write_call_report(capture, capture.with_suffix(".html"))
    except PstreamError as exc:  # the call happened and is recorded: say so, and go on
        output.warn(f"no timeline page: {exc.message}")
        return None


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def caller_pcm(rate: int) -> bytes:
    """What the demo caller says: silence while the greeting plays, then the built-in clip."""
    from plivo_stream_cli import synth

    return synth.silence(LISTEN_SECONDS, rate) + synth.caller_clip(rate)


def reply_pcm(digit: str, rate: int) -> bytes:
    """How the demo bot answers a key press: the digit's tone, then a confirmation beep."""
    from plivo_stream_cli import synth

    return synth.dtmf(digit, 0.15, rate) + synth.silence(0.05, rate) + synth.tone(880, 0.25, rate)


async def run_demo(
    directory: Path, speed: float, *, live: bool
) -> tuple[CallReport, list[dict[str, Any]]]:
    """Serve, call, hang up; returns the call's report and the recorded files."""
    from plivo_stream_cli import codec, synth
    from plivo_stream_cli.adapters.server import ServeConfig, StreamServer
    from plivo_stream_cli.adapters.simulator import SimulateConfig, run_call
    from plivo_stream_cli.console.runner import bind
    from plivo_stream_cli.formats import MULAW_8K

    rate = MULAW_8K.sample_rate
    server = StreamServer(
        ServeConfig(
            port=0,
            auth_token=DEMO_TOKEN,
            record_dir=directory,
            stereo=True,
            play_audio=synth.greeting(rate),
            play_rate=rate,
            play_name="greeting",
        )
    )
    await bind(server)
    files: list[dict[str, Any]] = []
    server.subscribe(lambda r: files.extend(r.get("files", [])), media=False)
    server.subscribe(_answer_keys(server), media=False)
    call = SimulateConfig(
        url=server.local_url,
        audio=codec.encode(caller_pcm(rate), MULAW_8K),
        auth_token=DEMO_TOKEN,
        speed=speed,
        dtmf=[(DIGIT, len(caller_pcm(rate)) / 2 / rate + DTMF_AFTER)],
        linger=LINGER,
    )

    async def scenario() -> CallReport:
        try:
            return await run_call(call)
        finally:
            await server.close()  # finalizes the recordings and publishes their list

    report = await _shown(server, scenario(), live=live)
    return report, files


def _answer_keys(server: StreamServer) -> Any:
    """The demo bot's one skill: answer each key press with a short reply and a checkpoint."""
    from plivo_stream_cli import codec

    def on_record(record: dict[str, Any]) -> None:
        if record.get("event") != "dtmf" or record.get("dir") != "in":
            return
        live = server.streams.get(str(record.get("stream")))
        if live is not None:
            digit = str(record.get("digit"))
            fmt = live.media_format
            live.start_playback(
                codec.encode(reply_pcm(digit, fmt.sample_rate), fmt), f"key-{digit}"
            )

    return on_record


async def _shown(
    server: StreamServer, scenario: Coroutine[Any, Any, CallReport], *, live: bool
) -> CallReport:
    """Run the scenario under the live view (terminal) or with one line per event."""
    import asyncio

    from plivo_stream_cli.console import output
    from plivo_stream_cli.console.runner import REFRESH_PER_SECOND, plain_printer

    if not live:
        server.subscribe(plain_printer, media=False)
        return await scenario
    from rich.live import Live

    from plivo_stream_cli.console.view import StreamView

    view = StreamView(f"pstream demo  {server.local_url}")
    server.subscribe(view.add, media=False)
    last: list[dict[str, Any]] = []

    def frame() -> Any:
        snapshots = server.snapshot()
        if snapshots:
            last[:] = snapshots
        return view.render(snapshots or last)

    task = asyncio.ensure_future(scenario)
    with Live(frame(), console=output.console(), refresh_per_second=REFRESH_PER_SECOND) as screen:
        while not task.done():
            await asyncio.wait({task}, timeout=1 / REFRESH_PER_SECOND)
            screen.update(frame())
    return task.result()


def _kind(path: str) -> str:
    return path.rsplit(".", 2)[-2] if path.endswith(".wav") else "capture"


_MEANING = {
    "inbound": "the caller",
    "outbound": "what the bot played",
    "call": "stereo: caller left, bot right",
    "capture": "every event, replayable with pstream replay",
}


def _print_result(directory: Path, report: CallReport, files: list[dict[str, Any]]) -> None:
    from plivo_stream_cli.console import output
    from plivo_stream_cli.metrics import call_metrics

    metrics = call_metrics(report)
    output.status(
        f"call {report.call_id[:8]}: the caller spoke and pressed {''.join(report.dtmf_sent)}; "
        f"heard {report.received_seconds:.2f} s from the bot; checkpoints confirmed: "
        f"{', '.join(report.checkpoints_confirmed) or 'none'}"
    )
    if metrics["first_audio_ms"] is not None:
        output.status(f"first audio {metrics['first_audio_ms']:g} ms after the caller stopped")
    output.status(f"recorded into {directory}:")
    for item in files:
        kind = _kind(item["path"])
        seconds = f"{item['seconds']:.2f} s" if kind != "capture" else "events"
        output.data(f"{seconds:>8}  {item['path']}  ({_MEANING.get(kind, kind)})")
    call_wav = next((f["path"] for f in files if _kind(f["path"]) == "call"), None)
    if call_wav:
        output.status(_play_hint(call_wav))
    capture = next((f["path"] for f in files if _kind(f["path"]) == "capture"), None)
    if capture:
        output.status(f"re-run this call against your bot: pstream replay {capture} ws://HOST/PATH")


def _play_hint(path: str) -> str:
    import shlex
    import shutil

    for program, command in PLAYERS:
        if shutil.which(program):
            return f"listen: {command.format(shlex.quote(path))}"
    return f"listen with aplay (Linux), afplay (macOS) or ffplay -nodisp -autoexit: {path}"


def _print_json(
    directory: Path, report: CallReport, files: list[dict[str, Any]], page: Path | None = None
) -> None:
    from plivo_stream_cli.console import output
    from plivo_stream_cli.metrics import SCHEMA_VERSION, summarize

    output.json_line(
        {
            "schema_version": SCHEMA_VERSION,
            "directory": str(directory),
            "recordings": [{**f, "kind": _kind(f["path"])} for f in files],
            "call": summarize(report),
            "report": None if page is None else str(page),
        }
    )
