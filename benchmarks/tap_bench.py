"""Tap benchmark: what `pstream serve --upstream` adds between Plivo and a bot.

Not a test. In one run, for each number of concurrent calls, it measures the same load twice,
interleaved (direct, tap, tap, direct, ...): a caller process sends N real-time calls (20 ms
mu-law frames, `loadgen.py`'s lean sender) to a bot process, either directly or through
`pstream serve --upstream` (signature checking on, plain feed lines to /dev/null, as a piped
serve prints them). The bot answers every 5th frame with 200 ms of audio, so both directions
pass through the tap and its replies queue up as a streaming TTS's do. Reported per mode:

- one-way latency per message, caller -> bot (each frame carries its send time in
  microseconds in `media.timestamp`; the bot reads the clock on arrival) and bot -> caller
  (each answer carries its send time in an extra top-level field), p50 and p99; the added
  latency is the tap's figure minus the direct one, from the medians over repeats;
- loss: frames the bot received vs frames sent, answers the caller received vs answers sent
  (the caller hangs up only once its own send buffers are empty and no answer came for 2 s,
  so a server that fell behind shows as latency, and only what it dropped as loss);
- the tap's CPU per forwarded message (serve's utime+stime from idle before the load to idle
  after it, over every message it forwarded, both directions), in microseconds, and the share
  of it spent in the kernel; with `--with-serve`, a plain serve (no bot) under the same
  caller, for comparison.

Every process runs on this machine's one clock (CLOCK_REALTIME), so one-way times compare.
On a 2-CPU machine, caller, tap and bot are three busy processes on two CPUs: `--taskset 1:0`
gives serve CPU 1 and the caller and bot CPU 0 (in both modes), as a tap on a developer's
machine has its CPU to itself while Plivo and the bot run elsewhere.

    python benchmarks/tap_bench.py --calls 100 400 --seconds 20 --repeat 3
    python benchmarks/tap_bench.py --calls 100 --seconds 10 --repeat 3 --taskset 1:0

Linux only (/proc).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from load import free_port, stop, wait_idle, wait_port

TOKEN = "tap-bench-token"
ANSWER_EVERY = 5  # the bot sends 200 ms of audio every 5th frame (100 ms): faster than it plays
ROOT = Path(__file__).resolve().parent.parent


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# ---------------------------------------------------------------- the bot


async def bot(port: int) -> None:
    """A sink bot: stamps each frame's arrival, answers every 5th; stats on stdin EOF.

    Lean, so that the direct baseline measures the network and not the bot: websockets'
    sans-I/O `ServerProtocol` driven from an asyncio `Protocol` (no task or future per
    message). It checks the V3 signature of a signed upgrade like a real bot would.
    """
    from websockets.frames import Frame, Opcode
    from websockets.http11 import Request
    from websockets.protocol import State
    from websockets.server import ServerProtocol

    from plivo_stream_cli.signature import NONCE_HEADER, SIGNATURE_HEADER, validate_v3

    latencies: list[float] = []
    counts = {"frames": 0, "answers": 0, "refused": 0, "calls": 0}
    payload = "/" * 2132 + "/w=="  # 1600 bytes of mu-law (200 ms), base64
    head = b'"timestamp":"'

    class Sink(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport
            self.ws = ServerProtocol(max_size=2**20)
            self.n = 0

        def data_received(self, data: bytes) -> None:
            ws = self.ws
            ws.receive_data(data)
            for event in ws.events_received():
                if isinstance(event, Request):
                    self._upgrade(event)
                elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                    self._frame(event.data)
            for chunk in ws.data_to_send():
                if chunk:
                    self.transport.write(chunk)
                elif self.transport.can_write_eof():
                    self.transport.write_eof()

        def _upgrade(self, request: Request) -> None:
            ws = self.ws
            url = f"http://{request.headers['Host']}{request.path}"
            nonce, sig = request.headers.get(NONCE_HEADER), request.headers.get(SIGNATURE_HEADER)
            if sig is not None and not validate_v3(url, nonce, sig, TOKEN):
                counts["refused"] += 1
                ws.send_response(ws.reject(403, "bad signature\n"))
                return
            counts["calls"] += 1
            ws.send_response(ws.accept(request))

        def _frame(self, data: bytes) -> None:
            i = data.find(head)
            if i < 0:
                return
            now = time.time_ns() // 1000
            j = i + len(head)
            latencies.append(now - int(data[j : data.index(b'"', j)]))
            counts["frames"] += 1
            self.n += 1
            if self.n % ANSWER_EVERY == 0 and self.ws.state is State.OPEN:
                t = time.time_ns() // 1000
                self.ws.send_text(
                    (
                        '{"event":"playAudio","media":{"contentType":"audio/x-mulaw",'
                        f'"sampleRate":8000,"payload":"{payload}"}},"t":"{t}"}}'
                    ).encode()
                )
                counts["answers"] += 1

    loop = asyncio.get_running_loop()
    server = await loop.create_server(Sink, "127.0.0.1", port)
    print(json.dumps({"ready": True}), flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()
    print(
        json.dumps(
            {
                **counts,
                "p50_us": _pct(latencies, 50),
                "p99_us": _pct(latencies, 99),
                "cpu_s": time.process_time(),
            }
        ),
        flush=True,
    )


# ---------------------------------------------------------------- the caller


async def caller(url: str, calls: int, seconds: float) -> None:
    """N calls of real-time frames (stamped in microseconds); reads the bot's answers."""
    from loadgen import FRAME_S, PHASES, Phase, RawSender, Templates, open_all, tone_frames

    from plivo_stream_cli.signature import sign_headers

    answers: list[float] = []

    class MicroPhase(Phase):
        async def run(self, t0: float, frames: int) -> None:
            loop = asyncio.get_running_loop()
            for k in range(frames):
                due = t0 + self.offset + k * FRAME_S
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                self.lateness.append(loop.time() - due)
                for call in self.calls:
                    try:
                        call.send(k, time.time_ns() // 1000)
                        self.sent += 1
                    except Exception:
                        self.failed += 1

    async def read(ws: Any) -> None:
        with contextlib.suppress(Exception):
            async for message in ws:
                i = message.rfind('"t":"')
                if i >= 0:
                    now = time.time_ns() // 1000
                    answers.append(now - int(message[i + 5 : message.index('"', i + 5)]))

    import loadgen
    from websockets.asyncio.client import connect as ws_connect

    def signed_connect(target: str, **kw: Any) -> Any:  # the tap checks Plivo's signature
        return ws_connect(target, additional_headers=sign_headers(target, TOKEN), **kw)

    loadgen.connect = signed_connect  # type: ignore[attr-defined]
    conns = await open_all(url, calls)
    readers = [asyncio.ensure_future(read(ws)) for ws in conns]
    phases = [MicroPhase(i * FRAME_S / PHASES) for i in range(PHASES)]
    payloads = tone_frames()
    for i, ws in enumerate(conns):
        phases[i % PHASES].calls.append(RawSender(ws, Templates(f"s-{i:05d}", payloads)))
    frames = round(seconds / FRAME_S)
    t0 = asyncio.get_running_loop().time() + 0.2
    await asyncio.gather(*(p.run(t0, frames) for p in phases))
    deadline = time.monotonic() + 300  # a server that fell behind: its backlog drains first
    while time.monotonic() < deadline and any(ws.transport.get_write_buffer_size() for ws in conns):
        await asyncio.sleep(0.1)
    quiet_since, seen = time.monotonic(), -1
    while time.monotonic() - quiet_since < 2.0:  # until answers stop (a backlog drains)
        if len(answers) != seen:
            seen, quiet_since = len(answers), time.monotonic()
        await asyncio.sleep(0.1)
    await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)
    for reader in readers:
        reader.cancel()
    late = [x for p in phases for x in p.lateness]
    print(
        json.dumps(
            {
                "sent": sum(p.sent for p in phases),
                "failed": sum(p.failed for p in phases),
                "answers": len(answers),
                "p50_us": _pct(answers, 50),
                "p99_us": _pct(answers, 99),
                "late_p99_ms": round(1000 * _pct(late, 99), 2),
            }
        ),
        flush=True,
    )


# ---------------------------------------------------------------- one run


def _cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _python(*args: str, **kw: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [*_pinned(PEERS_CPUS), sys.executable, *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        **kw,
    )


def _pinned(cpus: str) -> list[str]:
    """`taskset -c CPUS` before a command, when --taskset asked for it."""
    return ["taskset", "-c", cpus] if cpus else []


def trial(mode: str, calls: int, seconds: float) -> dict[str, Any]:
    bot_port = free_port()
    bot_proc = _python(__file__, "bot", str(bot_port), stdin=subprocess.PIPE)
    assert bot_proc.stdout is not None
    json.loads(bot_proc.stdout.readline())
    serve: subprocess.Popen[bytes] | None = None
    url = f"ws://127.0.0.1:{bot_port}/ws"
    try:
        if mode in ("tap", "serve", "before"):
            port = free_port()
            path = BEFORE if mode == "before" else str(ROOT)  # before: another checkout's tap
            env = {**os.environ, "PYTHONPATH": path, "PLIVO_AUTH_TOKEN": TOKEN}
            errlog = Path(f"/tmp/tap_bench_serve_{port}.err")
            upstream = ["--upstream", url] if mode in ("tap", "before") else []
            serve = subprocess.Popen(
                [
                    *_pinned(TAP_CPUS),
                    sys.executable,
                    "-m",
                    "plivo_stream_cli",
                    "serve",
                    "--port",
                    str(port),
                    *upstream,
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=errlog.open("wb"),
            )
            wait_port(port, serve, errlog)
            wait_idle(serve.pid)
            url = f"ws://127.0.0.1:{port}/stream"
            cpu_before = _cpu(serve.pid)
        gen = _python(__file__, "caller", url, str(calls), str(seconds))
        out, _ = gen.communicate(timeout=seconds + 300)
        made = json.loads(out.strip().splitlines()[-1])
        result: dict[str, Any] = {"mode": mode, "calls": calls, "caller": made}
        if serve is not None:
            wait_idle(serve.pid)
            user, system = (b - a for a, b in zip(cpu_before, _cpu(serve.pid), strict=True))
            used = user + system
            forwarded = made["sent"] + made["answers"] + 2 * calls  # frames, answers, starts
            result["tap_cpu_us_per_msg"] = round(1e6 * used / max(forwarded, 1), 1)
            result["tap_cpu_s"] = round(used, 2)
            result["tap_system_share"] = round(system / used, 2) if used else 0.0
    finally:
        if serve is not None:
            stop(serve)  # type: ignore[arg-type]
        assert bot_proc.stdin is not None
        bot_proc.stdin.close()
        bot_out = bot_proc.stdout.read()
        bot_proc.wait(30)
    result["bot"] = json.loads(bot_out.strip().splitlines()[-1])
    return result


BEFORE = ""  # --before DIR: the checkout whose tap runs as mode "before"
TAP_CPUS = ""  # --taskset TAP:PEERS: serve's CPUs, and the caller's and bot's
PEERS_CPUS = ""


def describe(r: dict[str, Any]) -> str:
    c, b = r["caller"], r["bot"]
    if r["mode"] == "serve":
        return (
            f"serve  {r['calls']:4} calls  (plain serve, no bot: its CPU for comparison)  "
            f"serve CPU {r['tap_cpu_us_per_msg']} us/msg ({r['tap_cpu_s']} s, "
            f"{100 * r['tap_system_share']:.0f}% in the kernel)"
        )
    loss = (c["sent"] - b["frames"], b["answers"] - c["answers"])
    line = (
        f"{r['mode']:6} {r['calls']:4} calls  to bot p50 {b['p50_us'] / 1000:6.2f} ms "
        f"p99 {b['p99_us'] / 1000:6.2f} ms  back p50 {c['p50_us'] / 1000:6.2f} ms "
        f"p99 {c['p99_us'] / 1000:6.2f} ms  lost {loss[0]}/{c['sent']} frames, "
        f"{loss[1]}/{b['answers']} answers  refused {b['refused']}  "
        f"sender late p99 {c['late_p99_ms']} ms"
    )
    if "tap_cpu_us_per_msg" in r:
        line += (
            f"  tap CPU {r['tap_cpu_us_per_msg']} us/msg ({r['tap_cpu_s']} s, "
            f"{100 * r['tap_system_share']:.0f}% in the kernel)"
        )
    return line


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "bot":
        asyncio.run(bot(int(sys.argv[2])))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "caller":
        asyncio.run(caller(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[100, 400])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print every trial as JSON too")
    parser.add_argument(
        "--with-serve", action="store_true", help="also run a plain serve (no bot) for its CPU"
    )
    parser.add_argument(
        "--before",
        metavar="DIR",
        help="also run the tap of the checkout in DIR (on PYTHONPATH) in the same rounds, "
        "e.g. one made with `git worktree add /tmp/before COMMIT`",
    )
    parser.add_argument(
        "--taskset",
        metavar="TAP:PEERS",
        help="pin serve to the CPUs TAP and the caller and bot to PEERS (taskset -c syntax), "
        "e.g. 1:0, so the tap's added latency is not the three processes' contention",
    )
    args = parser.parse_args()
    global BEFORE, TAP_CPUS, PEERS_CPUS
    BEFORE = args.before or ""
    if args.taskset:
        TAP_CPUS, found, PEERS_CPUS = args.taskset.partition(":")
        if not found or not TAP_CPUS or not PEERS_CPUS:
            parser.error("--taskset: expected TAP:PEERS, e.g. 1:0")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for calls in args.calls:
        trials: dict[str, list[dict[str, Any]]] = {
            "direct": [],
            "tap": [],
            "before": [],
            "serve": [],
        }
        for rep in range(args.repeat):
            order: tuple[str, ...] = ("direct", "tap") if rep % 2 == 0 else ("tap", "direct")
            if args.before:
                order = ("direct", "tap", "before") if rep % 2 == 0 else ("before", "tap", "direct")
            if args.with_serve:
                order += ("serve",)
            for mode in order:
                r = trial(mode, calls, args.seconds)
                trials[mode].append(r)
                print(describe(r), flush=True)
                if args.json:
                    print(json.dumps(r), flush=True)
        print(summary(calls, trials), flush=True)
        if args.before:
            print(summary(calls, trials, "before"), flush=True)
    return 0


def summary(calls: int, trials: dict[str, list[dict[str, Any]]], mode: str = "tap") -> str:
    def med(mode: str, side: str, key: str) -> float:
        return statistics.median(t[side][key] for t in trials[mode]) / 1000

    added = {
        f"{name} {p}": med(mode, side, f"{p}_us") - med("direct", side, f"{p}_us")
        for name, side in (("to bot", "bot"), ("back", "caller"))
        for p in ("p50", "p99")
    }
    cpu = statistics.median(t["tap_cpu_us_per_msg"] for t in trials[mode])
    lost = sum(
        t["caller"]["sent"] - t["bot"]["frames"] + t["bot"]["answers"] - t["caller"]["answers"]
        for t in trials[mode]
    )
    parts = "  ".join(f"{k} {v:+.2f} ms" for k, v in added.items())
    name = "the tap" if mode == "tap" else f"the {mode} tap ({BEFORE})"
    return (
        f"== {calls} calls, added by {name} (median of {len(trials[mode])} runs): {parts}; "
        f"tap CPU {cpu:g} us per message; lost through the tap: {lost}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
