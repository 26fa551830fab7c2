"""`pstream simulate` as a load generator: its CPU per frame sent beside a bare `websockets`
client that sends the same frames, and both generators' pacing lateness.

Not a test. Starts `floor_server.py` (a bare server that parses and decodes) once, then runs in
turns, each in a fresh process:

- `pstream simulate URL --audio CLIP --repeat N --concurrency N --linger 0 --json`;
- this script's `--bare` mode: N `websockets` connections, each sending a `start` and then the
  clip's 20 ms frames as `media` events (the same JSON, base64 and `json.dumps` per frame)
  with `await ws.send()`, one task per call sleeping to absolute 20 ms deadlines, and nothing
  else: no playback, no reading of what the server sends, no metrics.

For each: process CPU (user + system, `os.wait4`, start-up and handshakes included) per frame
sent, the pacing lateness (how late each 20 ms deadline was met) p50/p99/max, and how long the
generator waited for a CPU while runnable (Linux schedstat: other processes had it), with the
load average. The ratio is of the medians over `--repeat` rounds. With `--taskset` the server
runs on the other CPUs.

    python benchmarks/simulate_bench.py --calls 200 --seconds 10 --repeat 3
    python benchmarks/simulate_bench.py --calls 400 --seconds 10 --taskset 1   # one core each
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FRAME_S = 0.02


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_clip(path: Path, seconds: float) -> None:
    sys.path.insert(0, str(ROOT))
    from plivo_stream_cli import synth
    from plivo_stream_cli.adapters.audiofile import write_wav

    write_wav(path, synth.tones((440.0, 660.0), seconds, 8000), 8000)


# ------------------------------------------------------------------ the bare client


async def bare_call(url: str, frames: list[bytes], index: int, late: list[float]) -> int:
    from websockets.asyncio.client import connect

    ws = await connect(url, compression=None, ping_interval=None, max_size=None, open_timeout=60)
    sid = f"bare-{index:05d}"
    start = {
        "event": "start",
        "sequenceNumber": 1,
        "start": {
            "callId": f"call-{index:05d}",
            "streamId": sid,
            "accountId": "MABARECLIENT00000000",
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
        },
        "extra_headers": "",
    }
    await ws.send(json.dumps(start))
    loop = asyncio.get_running_loop()
    t0, t0_ms = loop.time(), int(time.time() * 1000)
    for k, payload in enumerate(frames):
        media = {
            "event": "media",
            "sequenceNumber": k + 2,
            "streamId": sid,
            "media": {
                "track": "inbound",
                "timestamp": str(t0_ms + k * 20),
                "chunk": k + 1,
                "payload": base64.b64encode(payload).decode(),
            },
            "extra_headers": "",
        }
        await ws.send(json.dumps(media))
        due = t0 + (k + 1) * FRAME_S
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        late.append((loop.time() - due) * 1000)
    await ws.close()
    return len(frames)


async def bare(url: str, calls: int, clip: Path) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from plivo_stream_cli import codec
    from plivo_stream_cli.adapters.audiofile import load_audio
    from plivo_stream_cli.formats import MULAW_8K

    frames = codec.frames(load_audio(clip, MULAW_8K), MULAW_8K)
    late: list[float] = []
    sent = await asyncio.gather(*(bare_call(url, frames, i, late) for i in range(calls)))
    return {"frames_sent": sum(sent), "pacing": pct(late)}


def pct(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(max(0.0, v) for v in values)
    if not ordered:
        return {"p50": None, "p99": None, "max": None}
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 2)  # noqa: E731
    return {"p50": pick(0.5), "p99": pick(0.99), "max": round(ordered[-1], 2)}


# ------------------------------------------------------------------ the runs


def timed(
    command: list[str], taskset: str | None, pythonpath: Path | None = None
) -> tuple[float, float, str]:
    """Run `command`; its CPU seconds (user + system), wall seconds and stdout."""
    if taskset:
        command = ["taskset", "-c", taskset, *command]
    env = {**os.environ, "PYTHONPATH": str(pythonpath)} if pythonpath else None
    began = time.monotonic()
    with tempfile.TemporaryFile() as out:
        cwd = pythonpath or ROOT  # python -m imports from the working directory first
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL, cwd=cwd, env=env)
        waited = 0.0
        while True:  # poll, to read how long it waited for a CPU (/proc goes when it exits)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            waited = run_queue_wait(proc.pid, waited)
            time.sleep(0.1)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode()
    if proc.returncode not in (0, 8):
        raise RuntimeError(f"{command[:4]} exited {proc.returncode}")
    WAITED[0] = waited
    return usage.ru_utime + usage.ru_stime, time.monotonic() - began, text


WAITED = [0.0]  # the last run's seconds runnable but not running (another process had the CPU)


def run_queue_wait(pid: int, last: float) -> float:
    """Seconds `pid` (all its threads) has waited on a run queue (Linux schedstat)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        return (
            sum(int(Path(f"/proc/{pid}/task/{t}/schedstat").read_text().split()[1]) for t in tasks)
            / 1e9
        )
    except (OSError, ValueError, IndexError):
        return last


def run_simulate(
    url: str, calls: int, clip: Path, taskset: str | None, pythonpath: Path | None = None
) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "plivo_stream_cli", "simulate", url, "--audio", str(clip),
        "--repeat", str(calls), "--concurrency", str(calls), "--linger", "0", "--json",
    ]  # fmt: skip
    cpu, wall, text = timed(command, taskset, pythonpath)
    doc = json.loads(text.splitlines()[-1])
    frames = sum(c["frames_sent"] for c in doc["calls"])
    return {"cpu_s": cpu, "wall_s": wall, "frames_sent": frames, "pacing": doc.get("pacing")}


def run_bare(url: str, calls: int, clip: Path, taskset: str | None) -> dict[str, Any]:
    command = [sys.executable, __file__, "--bare", url, "--calls", str(calls), "--clip", str(clip)]
    cpu, wall, text = timed(command, taskset)
    doc = json.loads(text.splitlines()[-1])
    return {"cpu_s": cpu, "wall_s": wall, **doc}


def cpus(text: str) -> set[int]:
    """`taskset -c` syntax: `1`, `0,2`, `0-3`."""
    chosen: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        chosen.update(range(int(low), int(high or low) + 1))
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--taskset", help="CPU list for the generators (the server gets the rest)")
    parser.add_argument(
        "--before",
        type=Path,
        help="also run the simulate of another checkout (its package's parent directory)",
    )
    parser.add_argument("--bare", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--clip", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args()
    if args.bare:
        print(json.dumps(asyncio.run(bare(args.bare, args.calls, args.clip))), flush=True)
        return
    port = free_port()
    serve = [sys.executable, str(HERE / "floor_server.py"), "--port", str(port)]
    if args.taskset:  # the server on the other CPUs, so it never takes the generators' one
        rest = sorted(set(range(os.cpu_count() or 1)) - cpus(args.taskset))
        serve = ["taskset", "-c", ",".join(map(str, rest)), *serve] if rest else serve
    server = subprocess.Popen(serve, stdout=subprocess.DEVNULL)
    url = f"ws://127.0.0.1:{port}/stream"
    names = ["simulate", "bare", *(["before"] if args.before else [])]
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    try:
        time.sleep(1.0)
        with tempfile.TemporaryDirectory() as tmp:
            clip = Path(tmp) / "clip.wav"
            write_clip(clip, args.seconds)
            for round_ in range(args.repeat):
                order = names if round_ % 2 == 0 else names[::-1]
                for name in order:
                    if name == "bare":
                        row = run_bare(url, args.calls, clip, args.taskset)
                    else:
                        before = args.before if name == "before" else None
                        row = run_simulate(url, args.calls, clip, args.taskset, before)
                    row["us_per_frame"] = 1e6 * row["cpu_s"] / max(1, row["frames_sent"])
                    row["cpu_wait_s"] = WAITED[0]
                    rows[name].append(row)
                    pace = row["pacing"] or {}
                    print(
                        f"{name:<9} {row['us_per_frame']:7.1f} us/frame  "
                        f"cpu {row['cpu_s']:6.2f} s  wall {row['wall_s']:6.2f} s  "
                        f"frames {row['frames_sent']}  late p50/p99/max ms "
                        f"{pace.get('p50')}/{pace.get('p99')}/{pace.get('max')}  "
                        f"waited for a CPU {row['cpu_wait_s']:.2f} s  "
                        f"load {os.getloadavg()[0]:.2f}",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        server.terminate()
        server.wait(10)
    med = {k: statistics.median(r["us_per_frame"] for r in v) for k, v in rows.items()}
    ratio = med["simulate"] / med["bare"]
    print(
        f"simulate CPU per frame = {ratio:.2f} x the bare client (medians: "
        f"{med['simulate']:.1f} vs {med['bare']:.1f} us; {args.calls} calls x {args.seconds:g} s)"
    )
    if args.before:
        print(
            f"before: {med['before']:.1f} us = {med['before'] / med['bare']:.2f} x the bare client"
        )
    for name, runs in rows.items():
        p99 = statistics.median((r["pacing"] or {}).get("p99") or 0.0 for r in runs)
        waits = statistics.median(r["cpu_wait_s"] for r in runs)
        print(
            f"{name}: pacing lateness p99 median {p99:.1f} ms over {len(runs)} runs "
            f"(per run: {', '.join(str((r['pacing'] or {}).get('p99')) for r in runs)}); "
            f"waited for a CPU {waits:.2f} s (median)"
        )
    if args.json:
        print(json.dumps({"ratio": ratio, "median_us": med, "runs": rows}))


if __name__ == "__main__":
    main()
