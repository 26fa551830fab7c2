"""`pstream report` on a one-minute call: page size, and the time to make it.

Not a test. Writes a one-minute capture through `CallRecorder` (the lines `serve --record`
writes): the caller's 3000 media frames (speech 2 s on, 2 s off), the bot answering each
utterance 400 ms after it in 20 ms playAudio chunks (the most lines a bot sends) or in one
message per reply (`--chunk reply`), a checkpoint per reply confirmed, a barge-in with
clearAudio/clearedAudio every fourth reply, a key press every ten seconds. Then, in process,
reads it and builds and writes the page (`report_cmd.write_call_report`) `--repeat` times;
and runs the whole command once as a user does (`python -m plivo_stream_cli report`), start-up
included. Prints the capture's and the page's sizes and the times (best and median).

    python benchmarks/report_bench.py                 # --seconds 60 --chunk frame --repeat 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from plivo_stream_cli import codec, synth
from plivo_stream_cli.adapters.recorder import CallRecorder
from plivo_stream_cli.commands.report_cmd import write_call_report
from plivo_stream_cli.events import (
    Checkpoint,
    ClearAudio,
    ClearedAudio,
    Dtmf,
    Media,
    PlayAudio,
    PlayedStream,
    Start,
)
from plivo_stream_cli.formats import MULAW_8K

FRAME = 0.02
T0 = 1_764_000_000.0
STREAM = "5e97f5e7-3dde-4775-aa26-f814f495f009"


def write_call(directory: Path, seconds: float, chunk: str) -> Path:
    """A `seconds`-long two-sided call captured as serve captures it; returns the capture."""
    fmt = MULAW_8K
    speech = codec.encode(synth.caller_clip(8000), fmt)
    reply = codec.encode(synth.tone(523, 1.2, 8000) + synth.tone(659, 0.6, 8000), fmt)
    quiet = codec.silence(fmt, fmt.frame_bytes())
    recorder = CallRecorder(directory, "CA-bench", STREAM, fmt)
    lines: list[tuple[float, str, str]] = []
    start = Start("CA-bench", STREAM, "MA1", ("inbound",), fmt, "", 1)
    lines.append((0.0, "in", start.to_json()))
    frames = codec.frames(speech, fmt)
    n = int(seconds / FRAME)
    for i in range(n):
        t = (i + 1) * FRAME
        within = t % 4.0
        spoken = within < 2.0 and int(within / FRAME) < len(frames)
        frame = frames[int(within / FRAME)] if spoken else quiet
        stamp = str(int((T0 + t) * 1000))
        lines.append((t, "in", Media(STREAM, "inbound", stamp, frame, i + 1, i + 2).to_json()))
    for turn, at in enumerate(x * 4.0 + 1.6 for x in range(int(seconds / 4.0))):
        if at + 2.0 > seconds:
            break
        name = f"reply-{turn}"
        pieces = codec.frames(reply, fmt) if chunk == "frame" else [reply]
        for k, piece in enumerate(pieces):  # sent a little ahead of real time, as bots do
            lines.append((at + k * FRAME * 0.98, "out", PlayAudio(fmt, piece).to_json()))
        sent = at + len(pieces) * FRAME * 0.98 if chunk == "frame" else at
        lines.append((sent, "out", Checkpoint(STREAM, name).to_json()))
        if turn % 4 == 3:  # the caller talks over this one: the bot clears
            lines.append((at + 0.9, "out", ClearAudio(STREAM).to_json()))
            lines.append((at + 0.91, "in", ClearedAudio(STREAM).to_json()))
        else:
            lines.append((at + 1.8 + 0.05, "in", PlayedStream(STREAM, name).to_json()))
    for k in range(int(seconds / 10)):
        lines.append((k * 10.0 + 5.0, "in", Dtmf(STREAM, str(k % 10), "inbound", "0").to_json()))
    for t, direction, text in sorted(lines, key=lambda line: line[0]):
        recorder.capture(direction, text, T0 + t, is_json=True)
    files = recorder.close()
    return next(f.path for f in files if f.kind == "capture")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--chunk", choices=("frame", "reply"), default="frame")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        capture = write_call(Path(tmp), args.seconds, args.chunk)
        lines = sum(1 for _ in capture.open())
        page = capture.with_suffix(".html")
        times = []
        for _ in range(args.repeat):
            began = time.perf_counter()
            write_call_report(capture, page)
            times.append(time.perf_counter() - began)
        began = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "plivo_stream_cli", "report", str(capture), "-o", str(page)],
            check=True,
            capture_output=True,
        )
        whole = time.perf_counter() - began
        result = {
            "call_seconds": args.seconds,
            "chunk": args.chunk,
            "capture_lines": lines,
            "capture_bytes": capture.stat().st_size,
            "page_bytes": page.stat().st_size,
            "build_best_s": round(min(times), 3),
            "build_median_s": round(statistics.median(times), 3),
            "command_s": round(whole, 3),
        }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
