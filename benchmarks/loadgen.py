"""Load generator for `benchmarks/load.py`: many Plivo-like calls from one asyncio process.

Not a test and not part of the package. Opens N WebSocket connections, sends each a `start`
event, then 20 ms mu-law `media` frames in real time for T seconds, and prints one JSON summary
on stdout. Each frame's `media.timestamp` is the epoch milliseconds at which it was sent, so the
server's feed (`t`) gives the lag between sending and handling.

It is lean on purpose, so the server, not the generator, is what a run measures: messages are
built with `events` once per distinct payload and only the changing fields are filled in per
frame; each frame is masked (as clients must) and written to the connection's transport in one
call, past the `websockets` send machinery, which costs more than the server's receive path;
the calls are grouped into 20 phases, 1 ms apart, and one task per phase wakes every 20 ms to
send that phase's frames, instead of one timer per call. `websockets` still does the opening
handshake, the start event and the closing handshake.

    python benchmarks/loadgen.py URL --calls 400 --seconds 30
    python benchmarks/loadgen.py URL --calls 400 --idle    # open, start, wait for stdin EOF
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import struct
import sys
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from plivo_stream_cli import codec
from plivo_stream_cli.events import Media, Start
from plivo_stream_cli.formats import MULAW_8K

try:
    from websockets.speedups import apply_mask
except ImportError:  # built without its C extension
    from websockets.utils import apply_mask

FRAME_S = 0.02
PHASES = 20  # send groups, 1 ms apart, so the load is spread over each 20 ms frame period
OPEN_CONCURRENCY = 50  # handshakes in flight at once (asyncio's listen backlog is 100)
_SEQ, _TS, _CHUNK = "9999999991", "TS-SLOT", "9999999992"


def tone_frames(count: int = 50) -> list[bytes]:
    """One second of a 440 Hz tone with a wandering level, as 20 ms mu-law payloads."""
    rate, n = MULAW_8K.sample_rate, MULAW_8K.sample_rate * count // 50
    samples = (
        round(9000 * (0.6 + 0.4 * math.sin(i / 700)) * math.sin(2 * math.pi * 440 * i / rate))
        for i in range(n)
    )
    wire = codec.encode(struct.pack(f"<{n}h", *samples), MULAW_8K)
    return codec.frames(wire, MULAW_8K)


def stream_id(index: int) -> str:
    # a UUID, as Plivo's are (Plivo's Node SDK refuses any other streamId)
    return f"00000000-0000-4000-8000-{index:012d}"


def call_id(index: int) -> str:
    return f"00000000-0000-4000-9000-{index:012d}"


class Templates:
    """The media messages of one stream, exactly as `events.Media.to_json` writes them."""

    def __init__(self, sid: str, payloads: list[bytes]) -> None:
        self.parts = []
        for payload in payloads:
            text = Media(sid, "inbound", _TS, payload, int(_CHUNK), int(_SEQ), "").to_json()
            self.parts.append(_split(text))

    def message(self, k: int, stamp_ms: int) -> str:
        """Frame `k` (0-based): sequenceNumber k+2 (start is 1), chunk k+1, sent at `stamp_ms`."""
        a, b, c, d = self.parts[k % len(self.parts)]
        return f"{a}{k + 2}{b}{stamp_ms}{c}{k + 1}{d}"


def _split(text: str) -> tuple[str, str, str, str]:
    a, rest = text.split(_SEQ)
    b, rest = rest.split(_TS)
    c, d = rest.split(_CHUNK)
    return a, b, c, d


async def open_call(url: str, index: int, gate: asyncio.Semaphore) -> ClientConnection:
    async with gate:
        ws = await connect(
            url, compression=None, ping_interval=None, open_timeout=60, max_size=2**20
        )
        start = Start(
            call_id(index),
            stream_id(index),
            "MALOADTEST0000000000",
            ("inbound",),
            MULAW_8K,
            "",
            sequence_number=1,
        )
        await ws.send(start.to_json())
        return ws


class RawSender:
    """Writes complete, masked text frames straight to one connection's transport."""

    __slots__ = ("mask", "templates", "transport")

    def __init__(self, ws: ClientConnection, templates: Templates) -> None:
        self.transport = ws.transport
        self.templates = templates
        self.mask = os.urandom(4)

    def send(self, k: int, stamp_ms: int) -> None:
        if self.transport.is_closing():
            raise ConnectionError("the server closed the connection")
        data = self.templates.message(k, stamp_ms).encode()
        n = len(data)
        if n < 126:
            head = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        self.transport.write(head + self.mask + apply_mask(data, self.mask))


class Phase:
    """The calls that send in the same millisecond of each 20 ms period."""

    def __init__(self, offset: float) -> None:
        self.offset = offset
        self.calls: list[RawSender] = []
        self.lateness: list[float] = []
        self.sent = 0
        self.failed = 0

    async def run(self, t0: float, frames: int) -> None:
        loop = asyncio.get_running_loop()
        for k in range(frames):
            due = t0 + self.offset + k * FRAME_S
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.lateness.append(loop.time() - due)
            stamp = int(time.time() * 1000)
            for call in self.calls:
                try:
                    call.send(k, stamp)
                    self.sent += 1
                except Exception:
                    self.failed += 1


async def open_all(url: str, calls: int) -> list[ClientConnection]:
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)
    return await asyncio.gather(*(open_call(url, i, gate) for i in range(calls)))


async def close_all(conns: list[ClientConnection]) -> None:
    await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)


async def stream(url: str, calls: int, seconds: float) -> dict[str, Any]:
    payloads = tone_frames()
    opened = time.monotonic()
    conns = await open_all(url, calls)
    open_s = time.monotonic() - opened
    phases = [Phase(i * FRAME_S / PHASES) for i in range(PHASES)]
    for i, ws in enumerate(conns):
        phases[i % PHASES].calls.append(RawSender(ws, Templates(stream_id(i), payloads)))
    frames = round(seconds / FRAME_S)
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.1
    began = time.monotonic()
    await asyncio.gather(*(p.run(t0, frames) for p in phases))
    streamed = time.monotonic() - began
    await close_all(conns)
    late = sorted(x for p in phases for x in p.lateness)
    return {
        "calls": calls,
        "frames_per_call": frames,
        "frames_sent": sum(p.sent for p in phases),
        "send_failures": sum(p.failed for p in phases),
        "open_s": round(open_s, 3),
        "stream_s": round(streamed, 3),
        "late_p50_ms": round(1000 * _pct(late, 50), 2),
        "late_p99_ms": round(1000 * _pct(late, 99), 2),
        "late_max_ms": round(1000 * (late[-1] if late else 0.0), 2),
        "cpu_s": round(time.process_time(), 3),
    }


async def idle(url: str, calls: int) -> None:
    conns = await open_all(url, calls)
    print(json.dumps({"ready": len(conns)}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await close_all(conns)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(len(values) * q / 100))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--idle", action="store_true", help="open and start only; hold until EOF")
    args = parser.parse_args()
    if args.idle:
        asyncio.run(idle(args.url, args.calls))
    else:
        print(json.dumps(asyncio.run(stream(args.url, args.calls, args.seconds))), flush=True)


if __name__ == "__main__":
    main()
