"""A pool of simulated calls in one asyncio process, driven over its stdin and stdout.

Locust's workers run on gevent, whose timers would pace 20 ms frames as well as its hub is
idle, which under load it is not. So the locustfile (`plivo_stream_cli.locustfile`) starts
one of these per Locust worker and keeps the calls here, on asyncio: a line on stdin asks for a
call, and a line on stdout reports it when it has ended. The pacing is `simulate`'s own
(absolute 20 ms deadlines in `PlivoCall`), and every report carries how late those deadlines
were met, so a Locust run can show whether its latencies are the bot's or the generator's.

    python -m plivo_stream_cli.adapters.callpool '{"url": "ws://127.0.0.1:9000/stream"}'

stdin:  one JSON object per line, `{"id": "<any string>"}`; EOF ends the pool once the calls
        in flight have ended.
stdout: `{"ready": true}` once, then one JSON object per call in the order they end:
        `{"id", "ok", "error", "connect_ms", "call_ms", "frames_sent", "close_code",
        "metrics": {...simulate's per-call metrics...}, "pacing": {count, p50, p99, max,
        unreliable}}` (`metrics.pacing` of that call).

The configuration (argv[1], JSON): `url`, and optionally `audio_path` (a WAV),
`content_type`, `linger`, `barge_in_at`, `extra_headers`, `auth_token_env` (the name of an
environment variable holding the token: the token itself never goes on a command line).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from plivo_stream_cli import metrics
from plivo_stream_cli.callreport import CallReport
from plivo_stream_cli.errors import PstreamError, UsageError
from plivo_stream_cli.formats import MediaFormat
from plivo_stream_cli.ramp import call_failure
from plivo_stream_cli.synth import default_caller_audio

from .simulator import SimulateConfig, run_call


def load_config(doc: dict[str, Any]) -> SimulateConfig:
    """The template of every call of the pool, from its JSON configuration."""
    if not isinstance(doc.get("url"), str):
        raise UsageError("callpool: the configuration needs a 'url'")
    fmt = MediaFormat.from_content_type(str(doc.get("content_type", "audio/x-mulaw;rate=8000")))
    if doc.get("audio_path"):
        from .audiofile import load_audio

        audio = load_audio(Path(doc["audio_path"]), fmt)
    else:
        audio = default_caller_audio(fmt)
    token_env = doc.get("auth_token_env")
    barge = doc.get("barge_in_at")
    return SimulateConfig(
        url=doc["url"],
        audio=audio,
        media_format=fmt,
        auth_token=os.environ.get(token_env) if token_env else None,
        linger=float(doc.get("linger", 1.0)),
        barge_in_at=None if barge is None else float(barge),
        extra_headers=str(doc.get("extra_headers", "")),
    )


async def place(template: SimulateConfig, request_id: str) -> dict[str, Any]:
    """Run one call (fresh ids) and report it as one JSON-ready dict; never raises."""
    config = dataclasses.replace(template, call_id=str(uuid.uuid4()), stream_id=str(uuid.uuid4()))
    began = time.monotonic()
    result: dict[str, Any] = {"id": request_id, "ok": False, "error": None, "connect_ms": None}
    try:
        report = await run_call(config)
    except PstreamError as exc:  # could not connect, or refused: nothing else to report
        result["error"] = exc.message
    except Exception as exc:  # a pool keeps going; the call is reported as failed
        result["error"] = f"{type(exc).__name__}: {exc}"
    else:
        result.update(_outcome(report))
        result["error"] = call_failure(report)
    result["call_ms"] = round((time.monotonic() - began) * 1000, 1)
    result["ok"] = result["error"] is None
    return result


def _outcome(report: CallReport) -> dict[str, Any]:
    return {
        "call_id": report.call_id,
        "connect_ms": None if report.connect_s is None else round(report.connect_s * 1000, 1),
        "frames_sent": report.frames_sent,
        "close_code": report.close_code,
        "violations": report.violations[:3],
        "metrics": metrics.call_metrics(report),
        "pacing": metrics.pacing(report.pacing_late_ms),
    }


async def serve_pool(template: SimulateConfig) -> None:
    """Read requests from stdin, run each as a call, write each report to stdout."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    running: set[asyncio.Task[None]] = set()

    def emit(doc: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(doc) + "\n")
        sys.stdout.flush()

    async def one(request_id: str) -> None:
        emit(await place(template, request_id))

    emit({"ready": True})
    while line := await reader.readline():
        try:
            request_id = str(json.loads(line)["id"])
        except (ValueError, KeyError, TypeError):
            emit({"error": f"bad request line {line[:80]!r}"})
            continue
        task = asyncio.ensure_future(one(request_id))
        running.add(task)
        task.add_done_callback(running.discard)
    if running:
        await asyncio.gather(*running)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        template = load_config(json.loads(args[0]) if args else {})
    except (PstreamError, ValueError) as exc:
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    asyncio.run(serve_pool(template))
    return 0


if __name__ == "__main__":
    sys.exit(main())
