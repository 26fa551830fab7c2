"""pstream's own per-frame work, in process: `LiveStream.take` on 20 ms mu-law media frames.

Not a test. No sockets: S started streams (a `LiveStream` each, no WebSocket behind it) take F
media frames each, interleaved across streams as a loaded server sees them, through
`LiveStream.take`, the path a text message takes once a stream has started. Four
cases: bare (parse, apply, decode), with `--record` (capture line, WAV buffer and their
writes, for all streams at once as serve's recording clock does, in a temporary directory),
with `--json` (feed record and line, to /dev/null), and both. CPU time (`time.process_time`)
per frame; the cases take turns and each keeps its fastest and median run.

    python benchmarks/take_bench.py                  # --streams 200 --frames 150 --repeat 5

To compare two versions, run it from each (e.g. a `git worktree` of the older commit, with
PYTHONPATH pointing at it and the working directory outside this checkout), interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from plivo_stream_cli.adapters import feedwriter
from plivo_stream_cli.adapters.recorder import CallRecorder
from plivo_stream_cli.adapters.server import (
    RECORDING_FLUSH_SECONDS,
    LiveStream,
    ServeConfig,
    StreamServer,
)
from plivo_stream_cli.events import Media, Start
from plivo_stream_cli.formats import MULAW_8K

CASES = {
    "bare": (False, False),
    "record": (True, False),
    "json": (False, True),
    "both": (True, True),
}


async def one_run(streams: int, frames: int, record: bool, feed: bool) -> float:
    """Microseconds of CPU per frame for one run of `streams` x `frames`."""
    with tempfile.TemporaryDirectory() as directory:
        server = StreamServer(ServeConfig(record_dir=Path(directory) if record else None))
        if feed:
            server.subscribe(feedwriter.JsonPrinter(), media=True)
        lives = []
        for i in range(streams):
            live = LiveStream(server, None, f"conn-{i}")  # type: ignore[arg-type]
            start = Start(f"call-{i}", f"s-{i}", "MA", ("inbound",), MULAW_8K, sequence_number=1)
            live.take(start.to_json())
            if record:  # what _begin opens in a worker thread
                live.recorder = CallRecorder(
                    directory, start.call_id, start.stream_id, MULAW_8K,
                    clocked=True,
                )  # fmt: skip
            lives.append(live)
        payload = bytes(range(160))
        texts = [
            [
                Media(
                    f"s-{i}", "inbound", str(1_700_000_000_000 + 20 * k), payload, k + 1, k + 2
                ).to_json()
                for k in range(frames)
            ]
            for i in range(streams)
        ]
        tick = round(RECORDING_FLUSH_SECONDS / 0.02)  # frames between two ticks of serve's clock
        began = time.process_time()
        for k in range(frames):
            for i in range(streams):
                lives[i].take(texts[i][k])
            if record and k % tick == tick - 1:
                for live in lives:
                    live.flush_recording()
        elapsed = time.process_time() - began
        for live in lives:
            if live.recorder is not None:
                live.recorder.close()
    return elapsed / (streams * frames) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, list[float]] = {name: [] for name in CASES}
    stdout = sys.stdout
    with open(os.devnull, "w") as devnull:
        sys.stdout = devnull  # the --json printer writes here
        try:
            for _ in range(args.repeat):
                for name, (record, feed) in CASES.items():
                    run = one_run(args.streams, args.frames, record, feed)
                    results[name].append(asyncio.run(run))
        finally:
            sys.stdout = stdout
    print(f"{'case':8} {'fastest':>9} {'median':>9}   us of CPU per frame")
    for name, values in results.items():
        print(f"{name:8} {min(values):9.2f} {statistics.median(values):9.2f}")


if __name__ == "__main__":
    main()
