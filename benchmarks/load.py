"""Load benchmark for `pstream serve`: how many real-time calls it records with zero loss.

Not a test (only `--smoke` runs in CI). Starts `pstream serve --record DIR --json --media` in its
own process (the feed goes to a file, which is how lag and received frames are measured; a serve
older than `--media` printed media lines with `--json` alone: give it the variant `no-media`) and
`loadgen.py` in another, which runs N concurrent calls sending 20 ms mu-law frames in real
time for T seconds. With `--workers N` (N > 1) serve gets `--workers N` too and runs N
processes sharing the port (itself and N-1 children); without it serve's command line is as
before, so the script also works with a serve that has no such option.

Every figure is of the server's whole process tree: the serve process and all its descendants
(found by scanning /proc/*/stat for parent pids, at each reading and every second during
the load, so a child that exits mid-run is noticed and reported). For the server it reports:

- CPU seconds per 1000 frames, from idle before the load to idle after it, so handshakes, file
  creation and finalizing are included: at each of the two readings, the sum over the live
  tree of utime+stime plus cutime+cstime (children already reaped), so a child that exits in
  between still counts, once; and each process's share of a core, to show how evenly the
  load was spread ("101% of a core: 52% + 49%");
- frames received (media records in the feed) vs sent (the generator's count);
- recorded samples (every `*.inbound.wav`) vs sent samples, which must be equal;
- p50/p99 lag between a frame's send time (its `media.timestamp`, epoch ms) and its handling
  (the feed record's `t`);
- peak RSS: the sum of every process's VmHWM (each process's own peak, so an upper bound on
  the tree's peak at any one moment); and memory per idle stream (the tree's summed VmRSS delta
  over N started, silent streams).

The same run measures `floor_server.py`, a bare `websockets` server that only parses the JSON
and decodes the base64, under the same load, and prints pstream's CPU per frame as a ratio to
it. With `--repeat`, the runs are interleaved so that both see the same machine, and the ratio
is of the medians. A run holds real time when nothing is lost, p99 lag is under 50 ms and the
generator kept its schedule. `--search` finds the largest N that holds (`--search-floor` the
floor's too).

    python benchmarks/load.py --calls 400 --seconds 30
    python benchmarks/load.py --search --seconds 20
    python benchmarks/load.py --calls 800 --seconds 30 --workers 2
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
import threading
import time
import wave
from collections.abc import Iterator
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


def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (fields[0] is the state)."""
    # rsplit: the name in parentheses may itself contain ") "
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def status_kb(pid: int, key: str) -> int:
    """A `kB` line of /proc/<pid>/status (VmRSS, VmHWM); 0 once the process is a zombie."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0  # a zombie has no memory lines, and no memory


def descendants(root: int) -> list[int]:
    """The pids of `root`'s children, grandchildren, ... (parents before their children).

    By parent pid from /proc/*/stat: /proc/<pid>/task/*/children needs CONFIG_PROC_CHILDREN,
    which not every kernel has (this machine's does not).
    """
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):  # gone meanwhile
                kids.setdefault(int(_stat(int(entry.name))[1]), []).append(int(entry.name))
    found, level = [], [root]
    while level:
        level = sorted(pid for parent in level for pid in kids.get(parent, ()))
        found += level
    return found


@dataclass(frozen=True)
class ProcSample:
    """One reading of one process of the server's tree."""

    pid: int
    started: int  # starttime in clock ticks after boot: with pid, names a process (pids recycle)
    state: str  # R, S, ... or Z: exited, not yet waited for
    cpu_s: float  # utime + stime
    reaped_cpu_s: float  # cutime + cstime: its children that exited and were waited for
    rss_kb: int
    hwm_kb: int

    @property
    def key(self) -> tuple[int, int]:
        return self.pid, self.started


def sample(pid: int) -> ProcSample | None:
    """A reading of one process, or None if it is gone."""
    try:
        fields = _stat(pid)
        utime, stime, cutime, cstime, started = (int(fields[i]) for i in (11, 12, 13, 14, 19))
        return ProcSample(
            pid=pid,
            started=started,
            state=fields[0],
            cpu_s=(utime + stime) / _TICK,
            reaped_cpu_s=(cutime + cstime) / _TICK,
            rss_kb=status_kb(pid, "VmRSS"),
            hwm_kb=status_kb(pid, "VmHWM"),
        )
    except (OSError, IndexError, ValueError):  # gone (or going) while being read
        return None


Tree = dict[tuple[int, int], ProcSample]


def tree(root: int) -> Tree:
    """A reading of `root` and every live descendant, root first, keyed by (pid, starttime)."""
    found = (sample(pid) for pid in [root, *descendants(root)])
    return {s.key: s for s in found if s is not None}


def tree_cpu(reading: Tree) -> float:
    """CPU seconds the tree has used so far, exited processes included.

    A child that exits between two readings was in the live sum at the first and is in its
    parent's cutime+cstime at the second, so the difference counts all of its CPU, once. (Only
    a child whose parent never waits for it, or that is orphaned, would escape.)
    """
    return sum(s.cpu_s + s.reaped_cpu_s for s in reading.values())


def alive(key: tuple[int, int]) -> bool:
    """Whether the process is still running (not gone, not a zombie, not a recycled pid)."""
    now = sample(key[0])
    return now is not None and now.key == key and now.state != "Z"


def wait_idle(root: int, timeout: float = 60.0) -> None:
    """Until every process of the tree has used under 10 ms of CPU in the last half second.

    The set of processes must also be the same at both ends: while workers start or exit the
    tree is not idle. Gives up silently after `timeout` (a figure with background noise beats
    none).
    """
    deadline = time.monotonic() + timeout
    last = tree(root)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = tree(root)
        if now.keys() == last.keys() and all(
            (s.cpu_s + s.reaped_cpu_s) - (last[k].cpu_s + last[k].reaped_cpu_s) < 0.011
            for k, s in now.items()
        ):
            return
        last = now


def wait_processes(
    root: int, count: int, proc: subprocess.Popen[bytes], timeout: float = 30.0
) -> None:
    """Until the tree has at least `count` processes (serve's workers have been started)."""
    deadline = time.monotonic() + timeout
    while (found := len(tree(root))) < count:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} while starting workers")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{found} of {count} server processes after {timeout} s")
        time.sleep(0.1)


class Watch:
    """Reads the tree every second in a thread, while the load runs.

    So a process that exits before the final reading is known, and so is its last VmHWM (its
    CPU needs no watching: see `tree_cpu`).
    """

    def __init__(self, root: int) -> None:
        self.root = root
        self.seen: Tree = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.seen.update(tree(self.root))
            if self._stop.wait(1.0):
                return

    @contextlib.contextmanager
    def running(self) -> Iterator[Watch]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(
    port: int, proc: subprocess.Popen[bytes], errlog: Path, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            # its stderr says why (e.g. "No such option: --workers" from an older serve)
            said = errlog.read_text(errors="replace")[-600:].strip()
            raise RuntimeError(f"server exited with {proc.returncode} before listening: {said}")
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


def start_pstream(
    port: int, workdir: Path, workers: int = 1, extra: list[str] | None = None
) -> subprocess.Popen[bytes]:
    args = ["serve", "--port", str(port), "--record", str(workdir / "rec"), "--json", "--media"]
    extra = list(extra or [])
    if "no-json" in extra:  # a variant without the feed: frames are counted from the WAVs
        extra.remove("no-json")
        args.remove("--json")
        args.remove("--media")
    if "no-media" in extra:  # serve --json as it is by default: no line per media frame
        extra.remove("no-media")
        args.remove("--media")
    env = _env()
    for token in [t for t in extra if t.startswith("pythonpath=")]:  # another checkout's serve
        extra.remove(token)
        env["PYTHONPATH"] = token.partition("=")[2]
    args += extra
    if workers > 1:  # only then: a serve without the option still runs one process
        args += ["--workers", str(workers)]
    return subprocess.Popen(
        [sys.executable, "-m", "plivo_stream_cli", *args],
        # append mode: workers may inherit this file as their stdout too, and O_APPEND keeps
        # one process's lines from landing over another's
        stdout=(workdir / "feed.jsonl").open("ab"),
        stderr=(workdir / "serve.err").open("wb"),
        env=env,
        cwd=workdir,
    )


OTHERS: dict[str, list[str]] = {}  # --also NAME=COMMAND: servers that report as the floor does
PSTREAM_VARIANTS: dict[str, list[str]] = {}  # --variant NAME=ARGS: serve with other options


def start_floor(port: int, workdir: Path, server: str = "floor") -> subprocess.Popen[bytes]:
    command = [sys.executable, str(HERE / "floor_server.py"), "--port", str(port)]
    if server in OTHERS:
        command = [part.replace("{port}", str(port)) for part in OTHERS[server]]
    return subprocess.Popen(
        command,
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
    """SIGTERM the server and wait for it and for every process of its tree to be gone.

    Serve is expected to stop its own workers; any that outlive it are reported and killed,
    since they would hold the port and leave recordings half written.
    """
    rest = [key for key in tree(proc.pid) if key[0] != proc.pid]
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 30
    while (left := [key for key in rest if alive(key)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid, _ in left:
        print(f"warning: server process {pid} outlived serve by 30 s; killing it", file=sys.stderr)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------- one run


@dataclass
class Trial:
    """What one run of N calls against one server measured."""

    server: str
    calls: int
    seconds: float
    workers: int = 1  # asked for (`--workers`); the floor always runs one
    processes: int = 0  # in the server's tree at the final reading
    exited: int = 0  # processes of the tree that were gone by the final reading
    frames_sent: int = 0
    frames_received: int = 0
    samples_sent: int = 0
    samples_recorded: int = 0
    cpu_s: float = 0.0
    cpu_s_per_1000: float = 0.0
    cpu_share: float = 0.0  # of one core, over the streaming time, the whole tree
    cpu_s_per_process: list[float] = field(default_factory=list)  # own utime+stime, root first
    cpu_share_per_process: list[float] = field(default_factory=list)
    lag_p50_ms: float = 0.0
    lag_p99_ms: float = 0.0
    lag_max_ms: float = 0.0
    peak_rss_mb: float = 0.0  # sum of every process's VmHWM
    generator: dict[str, Any] = field(default_factory=dict)

    @property
    def lossless(self) -> bool:
        expected = self.calls * int(self.generator.get("frames_per_call", 0))
        received_all = self.frames_received == self.frames_sent == expected
        if not is_pstream(self.server):
            return received_all  # it records nothing
        return received_all and self.samples_recorded == self.samples_sent

    @property
    def generator_kept_up(self) -> bool:
        return float(self.generator.get("stream_s", 0)) <= self.seconds * 1.02 + 0.2

    @property
    def holds(self) -> bool:
        return self.lossless and self.lag_p99_ms < LAG_LIMIT_MS and self.generator_kept_up


def is_pstream(server: str) -> bool:
    return server == "pstream" or server in PSTREAM_VARIANTS


def run_trial(server: str, calls: int, seconds: float, workers: int = 1) -> Trial:
    with tempfile.TemporaryDirectory(prefix=f"pstream-load-{server}-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        if is_pstream(server):
            extra = PSTREAM_VARIANTS.get(server)
            proc, errlog = start_pstream(port, workdir, workers, extra), workdir / "serve.err"
        else:
            workers = 1  # the floor is one process, whatever --workers says
            proc, errlog = start_floor(port, workdir, server), workdir / "floor.err"
        trial = Trial(server, calls, seconds, workers)
        try:
            wait_port(port, proc, errlog)
            wait_processes(proc.pid, workers, proc)
            wait_idle(proc.pid)
            before = tree(proc.pid)
            gen = generator(f"ws://127.0.0.1:{port}/stream", "--calls", str(calls),
                            "--seconds", str(seconds))  # fmt: skip
            with Watch(proc.pid).running() as watch:
                out, _ = gen.communicate(timeout=seconds * 4 + 120)
            if gen.returncode != 0:
                raise RuntimeError(f"load generator failed with exit code {gen.returncode}")
            trial.generator = json.loads(out)
            wait_idle(proc.pid)
            _measure(trial, before, tree(proc.pid), watch.seen)
        finally:
            stop(proc)
        _fill(trial, workdir)
        return trial


def _measure(trial: Trial, before: Tree, after: Tree, seen: Tree) -> None:
    """CPU and peak memory of the tree, from readings at idle before and after the load."""
    trial.cpu_s = tree_cpu(after) - tree_cpu(before)
    trial.processes = len(after)
    # a process that started during the load counts from zero
    trial.cpu_s_per_process = [
        round(s.cpu_s - (before[k].cpu_s if k in before else 0.0), 3) for k, s in after.items()
    ]
    # gone by the end: its CPU is in its parent's cutime+cstime, its peak in its last sample
    gone = {k: s for k, s in {**before, **seen}.items() if k not in after}
    trial.exited = len(gone)
    hwm_kb = sum(s.hwm_kb for s in after.values()) + sum(s.hwm_kb for s in gone.values())
    trial.peak_rss_mb = hwm_kb / 1024


def _fill(trial: Trial, workdir: Path) -> None:
    gen = trial.generator
    trial.frames_sent = int(gen["frames_sent"])
    trial.samples_sent = trial.frames_sent * SAMPLES_PER_FRAME
    if is_pstream(trial.server):
        trial.frames_received, lags = read_feed(workdir / "feed.jsonl")
        trial.samples_recorded = recorded_samples(workdir / "rec")
        variant = PSTREAM_VARIANTS.get(trial.server, [])
        if "no-json" in variant or "no-media" in variant:  # no media lines: no lag either
            trial.frames_received = trial.samples_recorded // SAMPLES_PER_FRAME
        lags.sort()
        trial.lag_p50_ms, trial.lag_p99_ms = _pct(lags, 50), _pct(lags, 99)
        trial.lag_max_ms = lags[-1] if lags else 0.0
    else:
        counts = json.loads((workdir / "floor.json").read_text())
        trial.frames_received = int(counts["media"])
        trial.lag_p50_ms = round(counts.get("lag_p50_ms", 0.0), 1)
        trial.lag_p99_ms = round(counts.get("lag_p99_ms", 0.0), 1)
    trial.cpu_s_per_1000 = 1000 * trial.cpu_s / max(1, trial.frames_received)
    stream_s = max(0.001, float(gen["stream_s"]))
    trial.cpu_share = trial.cpu_s / stream_s
    trial.cpu_share_per_process = [round(cpu / stream_s, 4) for cpu in trial.cpu_s_per_process]


def read_feed(path: Path) -> tuple[int, list[float]]:
    """(media records, lag in ms of each) from a `serve --json` feed."""
    count, lags = 0, []
    with path.open(encoding="utf-8") as feed:
        for number, line in enumerate(feed, 1):
            if '"event":"media"' not in line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                # several processes write this file: say so rather than miscount frames
                raise RuntimeError(
                    f"{path} line {number} is not one JSON record (writes of several "
                    f"processes interleaved?): {line[:200]!r}"
                ) from None
            count += 1
            lags.append(record["t"] * 1000 - int(record["timestamp"]))
    return count, lags


def recorded_samples(directory: Path) -> int:
    total = 0
    for path in directory.glob("*.inbound.wav"):
        with wave.open(str(path)) as wav:
            total += wav.getnframes()
    return total


def idle_memory(calls: int, workers: int = 1) -> dict[str, float]:
    """VmRSS growth per started-but-silent stream under `serve --record --json`.

    Of the whole tree: its summed VmRSS, before the streams and with them.
    """
    with tempfile.TemporaryDirectory(prefix="pstream-load-idle-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        proc = start_pstream(port, workdir, workers)
        try:
            wait_port(port, proc, workdir / "serve.err")
            wait_processes(proc.pid, workers, proc)
            wait_idle(proc.pid)
            before = tree(proc.pid)
            gen = generator(f"ws://127.0.0.1:{port}/stream", "--calls", str(calls), "--idle")
            assert gen.stdout is not None and gen.stdin is not None
            ready = json.loads(gen.stdout.readline())["ready"]
            wait_idle(proc.pid)
            after = tree(proc.pid)
            gen.stdin.close()
            gen.wait(timeout=120)
        finally:
            stop(proc)
    rss_before = sum(s.rss_kb for s in before.values())
    rss_after = sum(s.rss_kb for s in after.values())
    return {
        "streams": ready,
        "workers": workers,
        "processes": len(after),
        "rss_before_mb": rss_before / 1024,
        "kb_per_stream": (rss_after - rss_before) / max(1, ready),
    }


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return round(values[min(len(values) - 1, int(len(values) * q / 100))], 1)


# ---------------------------------------------------------------- reporting


def describe(trial: Trial) -> str:
    gen = trial.generator
    verdict = "holds" if trial.holds else "FAILS"
    workers = f", {trial.workers} workers" if trial.workers > 1 else ""
    share = f"{100 * trial.cpu_share:.0f}% of a core"
    if len(trial.cpu_share_per_process) > 1:  # how evenly the processes shared the load
        share += ": " + " + ".join(f"{100 * s:.0f}%" for s in trial.cpu_share_per_process)
    rss = f"peak RSS {trial.peak_rss_mb:.0f} MB"
    if trial.processes + trial.exited > 1:
        rss += f" (sum of {trial.processes + trial.exited} processes)"
    line = (
        f"{trial.server:7} {trial.calls:4d} calls x {trial.seconds:g} s{workers}: {verdict}; "
        f"frames {trial.frames_received}/{trial.frames_sent}; "
        f"CPU {trial.cpu_s:.2f} s = {trial.cpu_s_per_1000:.4f} s/1000 frames ({share}); {rss}"
    )
    if trial.exited:
        line += f"; {trial.exited} server process(es) EXITED during the run"
    if is_pstream(trial.server):
        line += f"; samples {trial.samples_recorded}/{trial.samples_sent}"
    line += f"; lag p50 {trial.lag_p50_ms:.0f} ms p99 {trial.lag_p99_ms:.0f} ms"
    if is_pstream(trial.server):
        line += f" max {trial.lag_max_ms:.0f} ms"
    line += (
        f"; generator late p99 {gen.get('late_p99_ms')} ms, streamed {gen.get('stream_s')} s,"
        f" CPU {gen.get('cpu_s')} s"
    )
    return line


def search(server: str, seconds: float, start: int, step: int, workers: int = 1) -> int:
    """The largest N (to within `step`) whose run against `server` holds real time."""

    def holds(n: int) -> bool:
        trial = run_trial(server, n, seconds, workers)
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
    parser.add_argument("--no-idle", action="store_true", help="skip the idle-memory run")
    parser.add_argument(
        "--workers", type=int, default=1, help="serve's processes (`serve --workers N` if N > 1)"
    )
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="NAME=COMMAND",
        help="another server in the same rounds ({port} in COMMAND is its port); it must print "
        "floor_server.py's JSON counters on SIGTERM",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=ARGS",
        help="pstream serve with extra options in the same rounds, e.g. 'asyncio=--loop asyncio'; "
        "the token no-json drops --json, no-media drops --media (serve --json's default); "
        "frames are then counted from the recordings, and lag is not measured. The token "
        "pythonpath=DIR runs the serve of the checkout in DIR (e.g. 'before=pythonpath="
        "/tmp/before' after `git worktree add /tmp/before COMMIT`; a serve older than --media "
        "printed media lines with --json alone)",
    )
    args = parser.parse_args()
    for item in args.also:
        name, _, command = item.partition("=")
        if not name or not command or name in SERVERS:
            parser.error(f"--also {item!r}: expected NAME=COMMAND with a new NAME")
        OTHERS[name] = command.split()
    for item in args.variant:
        name, _, extra = item.partition("=")
        if not name or name in SERVERS or name in OTHERS:
            parser.error(f"--variant {item!r}: expected NAME=ARGS with a new NAME")
        PSTREAM_VARIANTS[name] = extra.split()
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.smoke:
        args.calls, args.seconds, args.no_floor, args.repeat = 20, 8.0, True, 1
    ours_label = f"pstream ({args.workers} worker{'s' if args.workers > 1 else ''})"
    results: dict[str, Any] = {"workers": args.workers}
    if args.search_floor:
        results["floor_largest_calls"] = best = search("floor", args.seconds, args.start, args.step)
        print(f"floor: largest N holding real time: {best}", flush=True)
    if args.search:
        best = search("pstream", args.seconds, args.start, args.step, args.workers)
        print(f"{ours_label}: largest N holding real time: {best}", flush=True)
        results["largest_calls"] = best
        args.calls = best or args.start
    names = [*SERVERS[: 1 if args.no_floor else 2], *PSTREAM_VARIANTS, *OTHERS]
    runs: dict[str, list[Trial]] = {name: [] for name in names}
    for _ in range(max(1, args.repeat)):
        for name, trials in runs.items():  # interleaved, so all see the same machine
            trials.append(run_trial(name, args.calls, args.seconds, args.workers))
            print(describe(trials[-1]), flush=True)
    ours = runs["pstream"]
    for name, trials in runs.items():
        results[name] = [{**asdict(t), "holds": t.holds, "lossless": t.lossless} for t in trials]
    many = f" (medians of {len(ours)} runs each)" if len(ours) > 1 else ""
    if "floor" in runs:
        results["ratio"] = ratio = _median(ours) / max(1e-9, _median(runs["floor"]))
        print(f"{ours_label} CPU per frame = {ratio:.2f} x the bare websockets floor{many}",
              flush=True)  # fmt: skip
    for name in [*PSTREAM_VARIANTS, *OTHERS]:
        results[f"ratio_{name}"] = other = _median(ours) / max(1e-9, _median(runs[name]))
        print(f"{ours_label} CPU per frame = {other:.2f} x {name}{many}", flush=True)
    if "floor" in runs and not args.no_idle:
        memory = idle_memory(args.calls, args.workers)
        summed = f", summed over {memory['processes']} processes" if memory["processes"] > 1 else ""
        print(
            f"idle streams, {ours_label}: {memory['kb_per_stream']:.1f} KB each "
            f"({memory['streams']} streams over {memory['rss_before_mb']:.0f} MB at start{summed})",
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
