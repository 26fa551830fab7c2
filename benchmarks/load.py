"""Load benchmark for `pstream serve`: how many real-time calls it records with zero loss.

Not a test (only `--smoke` runs in CI). Starts `pstream serve --record DIR --json` in its own
process (the feed goes to a file, which is how lag and received frames are measured) and
`loadgen.py` in another, which runs N concurrent calls sending 20 ms mu-law frames in real
time for T seconds. For the server it reports:

- CPU seconds per 1000 frames (utime+stime from /proc/<pid>/stat, from idle before the load
  to idle after it, so handshakes, file creation and finalizing are included);
- frames received (media records in the feed) vs sent (the generator's count);
- recorded samples (every `*.inbound.wav`) vs sent samples, which must be equal;
- p50/p99 lag between a frame's send time (its `media.timestamp`, epoch ms) and its handling
  (the feed record's `t`);
- peak RSS (VmHWM), and memory per idle stream (VmRSS delta over N started, silent streams).

The same run measures `floor_server.py`, a bare `websockets` server that only parses the JSON
and decodes the base64, under the same load, and prints pstream's CPU per frame as a ratio to
it. With `--repeat`, the runs are interleaved so that both see the same machine, and the ratio
is of the medians. A run holds real time when nothing is lost, p99 lag is under 50 ms and the
generator kept its schedule. `--search` finds the largest N that holds (`--search-floor` the
floor's too).

    python benchmarks/load.py --calls 400 --seconds 30
    python benchmarks/load.py --search --seconds 20
    python benchmarks/load.py --smoke          # 20 calls, 8 s, pstream only; exit 1 on loss

Linux only (/proc).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LAG_LIMIT_MS = 50.0
SERVERS = ("pstream", "floor")
SAMPLES_PER_FRAME = 160  # 20 ms of mu-law at 8 kHz
_TICK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def status_kb(pid: int, key: str) -> int:
    """A `kB` line of /proc/<pid>/status (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def wait_idle(pid: int, timeout: float = 60.0) -> None:
    """Until the process has used under 10 ms of CPU in the last half second."""
    deadline = time.monotonic() + timeout
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_seconds(pid)
        if now - last < 0.011:
            return
        last = now


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


# ---------------------------------------------------------------- processes


def _env() -> dict[str, str]:
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
    env.pop("PLIVO_AUTH_TOKEN", None)  # signature checks off: the load is unsigned
    return env


def start_pstream(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    args = ["serve", "--port", str(port), "--record", str(workdir / "rec"), "--json"]
    return subprocess.Popen(
        [sys.executable, "-m", "plivo_stream_cli", *args],
        stdout=(workdir / "feed.jsonl").open("wb"),
        stderr=(workdir / "serve.err").open("wb"),
        env=_env(),
        cwd=workdir,
    )


def start_floor(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(HERE / "floor_server.py"), "--port", str(port)],
        stdout=(workdir / "floor.json").open("wb"),
        stderr=(workdir / "floor.err").open("wb"),
        env=_env(),
    )


def generator(url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HERE / "loadgen.py"), url, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------- one run


@dataclass
class Trial:
    """What one run of N calls against one server measured."""

    server: str
    calls: int
    seconds: float
    frames_sent: int = 0
    frames_received: int = 0
    samples_sent: int = 0
    samples_recorded: int = 0
    cpu_s: float = 0.0
    cpu_s_per_1000: float = 0.0
    cpu_share: float = 0.0  # of one core, over the streaming time
    lag_p50_ms: float = 0.0
    lag_p99_ms: float = 0.0
    lag_max_ms: float = 0.0
    peak_rss_mb: float = 0.0
    generator: dict[str, Any] = field(default_factory=dict)

    @property
    def lossless(self) -> bool:
        expected = self.calls * int(self.generator.get("frames_per_call", 0))
        received_all = self.frames_received == self.frames_sent == expected
        if self.server == "floor":
            return received_all  # it records nothing
        return received_all and self.samples_recorded == self.samples_sent

    @property
    def generator_kept_up(self) -> bool:
        return float(self.generator.get("stream_s", 0)) <= self.seconds * 1.02 + 0.2

    @property
    def holds(self) -> bool:
        return self.lossless and self.lag_p99_ms < LAG_LIMIT_MS and self.generator_kept_up


def run_trial(server: str, calls: int, seconds: float) -> Trial:
    with tempfile.TemporaryDirectory(prefix=f"pstream-load-{server}-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        start = start_pstream if server == "pstream" else start_floor
        proc = start(port, workdir)
        trial = Trial(server, calls, seconds)
        try:
            wait_port(port, proc)
            wait_idle(proc.pid)
            cpu0 = cpu_seconds(proc.pid)
            gen = generator(f"ws://127.0.0.1:{port}/stream", "--calls", str(calls),
                            "--seconds", str(seconds))  # fmt: skip
            out, _ = gen.communicate(timeout=seconds * 4 + 120)
            if gen.returncode != 0:
                raise RuntimeError(f"load generator failed with exit code {gen.returncode}")
            trial.generator = json.loads(out)
            wait_idle(proc.pid)
            trial.cpu_s = cpu_seconds(proc.pid) - cpu0
            trial.peak_rss_mb = status_kb(proc.pid, "VmHWM") / 1024
        finally:
            stop(proc)
        _fill(trial, workdir)
        return trial


def _fill(trial: Trial, workdir: Path) -> None:
    gen = trial.generator
    trial.frames_sent = int(gen["frames_sent"])
    trial.samples_sent = trial.frames_sent * SAMPLES_PER_FRAME
    if trial.server == "pstream":
        trial.frames_received, lags = read_feed(workdir / "feed.jsonl")
        trial.samples_recorded = recorded_samples(workdir / "rec")
        lags.sort()
        trial.lag_p50_ms, trial.lag_p99_ms = _pct(lags, 50), _pct(lags, 99)
        trial.lag_max_ms = lags[-1] if lags else 0.0
    else:
        counts = json.loads((workdir / "floor.json").read_text())
        trial.frames_received = int(counts["media"])
        trial.lag_p50_ms = round(counts.get("lag_p50_ms", 0.0), 1)
        trial.lag_p99_ms = round(counts.get("lag_p99_ms", 0.0), 1)
    trial.cpu_s_per_1000 = 1000 * trial.cpu_s / max(1, trial.frames_received)
    trial.cpu_share = trial.cpu_s / max(0.001, float(gen["stream_s"]))


def read_feed(path: Path) -> tuple[int, list[float]]:
    """(media records, lag in ms of each) from a `serve --json` feed."""
    count, lags = 0, []
    with path.open(encoding="utf-8") as feed:
        for line in feed:
            if '"event":"media"' not in line:
                continue
            record = json.loads(line)
            count += 1
            lags.append(record["t"] * 1000 - int(record["timestamp"]))
    return count, lags


def recorded_samples(directory: Path) -> int:
    total = 0
    for path in directory.glob("*.inbound.wav"):
        with wave.open(str(path)) as wav:
            total += wav.getnframes()
    return total


def idle_memory(calls: int) -> dict[str, float]:
    """VmRSS growth per started-but-silent stream under `serve --record --json`."""
    with tempfile.TemporaryDirectory(prefix="pstream-load-idle-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        proc = start_pstream(port, workdir)
        try:
            wait_port(port, proc)
            wait_idle(proc.pid)
            before = status_kb(proc.pid, "VmRSS")
            gen = generator(f"ws://127.0.0.1:{port}/stream", "--calls", str(calls), "--idle")
            assert gen.stdout is not None and gen.stdin is not None
            ready = json.loads(gen.stdout.readline())["ready"]
            wait_idle(proc.pid)
            after = status_kb(proc.pid, "VmRSS")
            gen.stdin.close()
            gen.wait(timeout=120)
        finally:
            stop(proc)
    return {
        "streams": ready,
        "rss_before_mb": before / 1024,
        "kb_per_stream": (after - before) / ready,
    }


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return round(values[min(len(values) - 1, int(len(values) * q / 100))], 1)


# ---------------------------------------------------------------- reporting


def describe(trial: Trial) -> str:
    gen = trial.generator
    verdict = "holds" if trial.holds else "FAILS"
    line = (
        f"{trial.server:7} {trial.calls:4d} calls x {trial.seconds:g} s: {verdict}; "
        f"frames {trial.frames_received}/{trial.frames_sent}; "
        f"CPU {trial.cpu_s:.2f} s = {trial.cpu_s_per_1000:.4f} s/1000 frames "
        f"({100 * trial.cpu_share:.0f}% of a core); peak RSS {trial.peak_rss_mb:.0f} MB"
    )
    if trial.server == "pstream":
        line += f"; samples {trial.samples_recorded}/{trial.samples_sent}"
    line += f"; lag p50 {trial.lag_p50_ms:.0f} ms p99 {trial.lag_p99_ms:.0f} ms"
    if trial.server == "pstream":
        line += f" max {trial.lag_max_ms:.0f} ms"
    line += (
        f"; generator late p99 {gen.get('late_p99_ms')} ms, streamed {gen.get('stream_s')} s,"
        f" CPU {gen.get('cpu_s')} s"
    )
    return line


def search(server: str, seconds: float, start: int, step: int) -> int:
    """The largest N (to within `step`) whose run against `server` holds real time."""

    def holds(n: int) -> bool:
        trial = run_trial(server, n, seconds)
        print(describe(trial), flush=True)
        return trial.holds

    good, n = 0, start
    while holds(n):
        good, n = n, n * 2
    bad = n
    while bad - good > step:
        mid = (good + bad) // 2 // step * step or step
        if mid in (good, bad):
            break
        if holds(mid):
            good = mid
        else:
            bad = mid
    return good


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=400, help="concurrent calls (default 400)")
    parser.add_argument("--seconds", type=float, default=30.0, help="audio per call (default 30)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each server (medians)")
    parser.add_argument("--search", action="store_true", help="find the largest N that holds")
    parser.add_argument("--search-floor", action="store_true", help="the same for the floor")
    parser.add_argument("--start", type=int, default=100, help="first N of a search")
    parser.add_argument("--step", type=int, default=25, help="resolution of a search")
    parser.add_argument("--smoke", action="store_true", help="20 calls, 8 s, pstream only")
    parser.add_argument("--no-floor", action="store_true", help="skip the floor and idle memory")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args()
    if args.smoke:
        args.calls, args.seconds, args.no_floor, args.repeat = 20, 8.0, True, 1
    results: dict[str, Any] = {}
    if args.search_floor:
        results["floor_largest_calls"] = best = search("floor", args.seconds, args.start, args.step)
        print(f"floor: largest N holding real time: {best}", flush=True)
    if args.search:
        best = search("pstream", args.seconds, args.start, args.step)
        print(f"pstream: largest N holding real time: {best}", flush=True)
        results["largest_calls"] = best
        args.calls = best or args.start
    runs: dict[str, list[Trial]] = {name: [] for name in SERVERS[: 1 if args.no_floor else 2]}
    for _ in range(max(1, args.repeat)):
        for name, trials in runs.items():  # interleaved, so all see the same machine
            trials.append(run_trial(name, args.calls, args.seconds))
            print(describe(trials[-1]), flush=True)
    ours = runs["pstream"]
    for name, trials in runs.items():
        results[name] = [{**asdict(t), "holds": t.holds, "lossless": t.lossless} for t in trials]
    many = f" (medians of {len(ours)} runs each)" if len(ours) > 1 else ""
    if "floor" in runs:
        results["ratio"] = ratio = _median(ours) / max(1e-9, _median(runs["floor"]))
        print(f"pstream CPU per frame = {ratio:.2f} x the bare websockets floor{many}", flush=True)
        memory = idle_memory(args.calls)
        print(
            f"idle streams: {memory['kb_per_stream']:.1f} KB each "
            f"({memory['streams']} streams over {memory['rss_before_mb']:.0f} MB at start)",
            flush=True,
        )
        results["idle"] = memory
    if args.json:
        print(json.dumps(results))
    return 0 if all(t.lossless for t in ours) else 1


def _median(trials: list[Trial]) -> float:
    return float(statistics.median(t.cpu_s_per_1000 for t in trials))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
