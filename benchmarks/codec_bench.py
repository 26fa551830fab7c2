"""Codec benchmark: seconds of audio converted per CPU second, pstream's path beside raw audioop.

Not a test. Each case runs the same audio through `plivo_stream_cli.codec` and through the
`audioop` call underneath it, alternating the two several times and keeping each side's best
run (CPU time, `time.process_time`). The ratio is how many times slower pstream's path is;
the target is at most 1.2.

    python benchmarks/codec_bench.py [--seconds 60] [--repeat 21] [--check 1.2]

With `--check`, exits 1 if any ratio is above the given limit.
"""

from __future__ import annotations

import argparse
import math
import os
import struct
import sys
import time
from collections.abc import Callable

from plivo_stream_cli import codec
from plivo_stream_cli.formats import MULAW_8K, MediaFormat

audioop = codec.audioop  # the module codec imported (warning silenced), not a second import

Job = Callable[[], None]


def speech_like(seconds: float, rate: int) -> bytes:
    """A tone with a wandering level: exercises every mu-law segment, unlike a constant sine."""
    n = int(seconds * rate)
    return struct.pack(
        f"<{n}h",
        *(
            round(
                12000 * (0.55 + 0.45 * math.sin(i / 2900)) * math.sin(2 * math.pi * 230 * i / rate)
            )
            for i in range(n)
        ),
    )


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def cases(seconds: float, block_ms: int) -> list[tuple[str, Job, Job]]:
    """(name, pstream job, audioop job); each job converts `seconds` of audio in blocks."""
    fmt: MediaFormat = MULAW_8K
    pcm = speech_like(seconds, 8000)
    pcm_blocks = split(pcm, 16 * block_ms)
    ulaw_blocks = split(audioop.lin2ulaw(pcm, 2), 8 * block_ms)
    decode, encode, ulaw2lin, lin2ulaw = (
        codec.decode,
        codec.encode,
        audioop.ulaw2lin,
        audioop.lin2ulaw,
    )
    ratecv, level, rms, log10 = audioop.ratecv, codec.level_dbfs, audioop.rms, math.log10

    def ps_decode() -> None:
        for block in ulaw_blocks:
            decode(block, fmt)

    def raw_decode() -> None:
        for block in ulaw_blocks:
            ulaw2lin(block, 2)

    def ps_encode() -> None:
        for block in pcm_blocks:
            encode(block, fmt)

    def raw_encode() -> None:
        for block in pcm_blocks:
            lin2ulaw(block, 2)

    def ps_resample() -> None:
        process = codec.Resampler(8000, 16000).process
        for block in pcm_blocks:
            process(block)

    def raw_resample() -> None:
        state = None
        for block in pcm_blocks:
            _, state = ratecv(block, 2, 1, 8000, 16000, state)

    def ps_level() -> None:
        for block in pcm_blocks:
            level(block)

    def raw_level() -> None:
        for block in pcm_blocks:
            value = rms(block, 2)
            _ = 20 * log10(value / 32768) if value else -96.0

    return [
        ("decode mu-law -> PCM", ps_decode, raw_decode),
        ("encode PCM -> mu-law", ps_encode, raw_encode),
        ("resample 8k -> 16k", ps_resample, raw_resample),
        ("level (dBFS)", ps_level, raw_level),
    ]


def best_cpu_seconds(job: Job, loops: int) -> float:
    start = time.process_time()
    for _ in range(loops):
        job()
    return (time.process_time() - start) / loops


def calibrate(job: Job) -> int:
    """Loops for a run of about 0.05 CPU s: long enough to time, short enough to dodge load."""
    once = max(best_cpu_seconds(job, 1), 1e-6)
    return max(1, math.ceil(0.05 / once))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="audio per run (default 60)")
    parser.add_argument("--repeat", type=int, default=21, help="alternating runs per side")
    parser.add_argument("--check", type=float, default=None, help="fail if a ratio exceeds this")
    args = parser.parse_args()

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.seconds:g} s of audio")
    header = (
        f"{'case':24} {'block':>6} {'pstream':>12} {'audioop':>12} {'ratio':>6} {'extra/block':>12}"
    )
    print(header + "\n" + "-" * len(header))
    worst = 0.0
    for block_ms in (20, 1000):
        for name, ps_job, raw_job in cases(args.seconds, block_ms):
            loops = calibrate(raw_job)
            ps_best = raw_best = math.inf
            for _ in range(args.repeat):  # alternate, so drifting machine load hits both sides
                ps_best = min(ps_best, best_cpu_seconds(ps_job, loops))
                raw_best = min(raw_best, best_cpu_seconds(raw_job, loops))
            ratio = ps_best / raw_best
            worst = max(worst, ratio)
            blocks = math.ceil(args.seconds * 1000 / block_ms)
            extra_ns = (ps_best - raw_best) / blocks * 1e9
            print(
                f"{name:24} {block_ms:>4}ms {args.seconds / ps_best:>10,.0f}x "
                f"{args.seconds / raw_best:>10,.0f}x {ratio:>6.2f} {extra_ns:>9,.0f} ns"
            )
    print(
        "(pstream/audioop: seconds of audio per CPU second; ratio: pstream time / audioop time;\n"
        " extra/block: pstream's added CPU time per block)"
    )
    if args.check is not None and worst > args.check:
        print(f"worst ratio {worst:.2f} is above {args.check:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
