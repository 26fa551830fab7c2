"""`pstream serve --workers N` as a user runs it: real processes sharing one port, real calls.

Each test starts `pstream serve` as a child process and drives it from outside: simulated calls
(the simulator's `PlivoCall` on an event loop in a background thread, so the test knows each
call's client port and can tell from the feed's `connected` records which process took it),
`pstream streams/play/clear/checkpoint/tail` as further child processes, and signals. The kernel
hashes connections over the listening sockets: where a test needs both processes to hold a
stream it opens 24 calls (all on one process: probability 2^-23); elsewhere it asserts totals.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from plivo_stream_cli import codec, synth
from plivo_stream_cli.adapters.audiofile import load_audio, write_wav
from plivo_stream_cli.adapters.simulator import PlivoCall, converse, open_stream
from plivo_stream_cli.callreport import CallReport
from plivo_stream_cli.events import Media, Start
from plivo_stream_cli.feed import Record
from plivo_stream_cli.formats import FRAME_MS, MULAW_8K
from plivo_stream_cli.signature import sign_headers
from tests.conftest import ROOT, free_port, pstream_process

TOKEN = "workers-e2e-token"
CALL_SECONDS = 1.0  # each caller's audio; calls then stay up until serve closes them
GOING_AWAY = 1001
BANNER = re.compile(r"(\d+) processes share the port \(pids ([\d, ]+)\)")
WAV_HEADER = 44  # the recorder writes the canonical PCM header


# ---------------------------------------------------------------- helpers


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Poll `check` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def pstream(*args: str) -> subprocess.CompletedProcess[str]:
    """`pstream ARGS` to completion (finds the serve through the test's PSTREAM_STATE_DIR)."""
    return subprocess.run(
        [sys.executable, "-m", "plivo_stream_cli", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip


def streams_json() -> list[dict[str, Any]]:
    result = pstream("streams", "--json")
    assert result.returncode == 0, result.stderr
    snapshots: list[dict[str, Any]] = json.loads(result.stdout)
    return snapshots


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not: an exited worker is no parent's child here)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def workers_running() -> list[int]:
    """Pids of live worker processes started under this test's PSTREAM_STATE_DIR.

    Other tests may run serves at the same time: a worker inherits the serve's environment,
    so the private state directory tells this test's apart.
    """
    mine = f"PSTREAM_STATE_DIR={os.environ['PSTREAM_STATE_DIR']}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        ours = b"plivo_stream_cli.adapters.workers" in cmdline and mine in environ.split(b"\0")
        if ours and alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


class Serve:
    """`pstream serve ARGS` in a child process, its stdout and stderr read as they come.

    Both pipes are drained all along: with --json a blocked stdout would stall the serve.
    """

    def __init__(self, *args: str, token: str | None = TOKEN) -> None:
        self.port = free_port()
        env = {"PLIVO_AUTH_TOKEN": token} if token else {}
        self.process = pstream_process("serve", "--port", str(self.port), *args, env=env)
        self.url = f"ws://127.0.0.1:{self.port}/stream"
        self.records: list[Record] = []
        self.err_lines: list[str] = []
        self.companions: list[subprocess.Popen[str]] = []  # e.g. a `tail`: stopped with it
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, True), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, False), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, pipe: Any, is_feed: bool) -> None:
        for line in pipe:
            with self._changed:
                if is_feed:
                    self.records.append(json.loads(line))
                else:
                    self.err_lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    @property
    def err(self) -> str:
        with self._changed:
            return "\n".join(self.err_lines)

    def wait_err(self, pattern: re.Pattern[str], timeout: float = 30) -> re.Match[str]:
        found: list[re.Match[str]] = []

        def seen() -> bool:
            found[:] = [m for line in self.err_lines if (m := pattern.search(line))]
            return bool(found) or self.process.poll() is not None

        with self._changed:
            self._changed.wait_for(seen, timeout)
        assert found, f"no stderr line matching {pattern.pattern!r}; stderr:\n{self.err}"
        return found[0]

    def wait_ready(self) -> list[int]:
        """Wait for the banner (printed once every worker listens) and the control channel's
        state file; returns the pids the banner names (first process first)."""
        match = self.wait_err(BANNER)
        pids = [int(p) for p in match.group(2).split(",")]
        assert len(pids) == int(match.group(1)) and pids[0] == self.process.pid
        self.wait_control()
        return pids

    def wait_control(self) -> None:
        state = Path(os.environ["PSTREAM_STATE_DIR"])
        wait_until(lambda: state.is_dir() and any(state.iterdir()), "the control state file")

    def feed(self, match: Callable[[Record], bool]) -> list[Record]:
        with self._changed:
            return [r for r in self.records if match(r)]

    def events_of(self, stream: str, event: str) -> list[Record]:
        return self.feed(lambda r: r["stream"] == stream and r["event"] == event)

    def wait_record(self, stream: str, event: str) -> Record:
        """The one `event` record of `stream`, waiting for it to be printed."""
        wait_until(lambda: bool(self.events_of(stream, event)), f"{event} of {stream}")
        (record,) = self.events_of(stream, event)
        return record

    def wait_record_where(self, wanted: Callable[[Record], bool]) -> list[Record]:
        wait_until(lambda: bool(self.feed(wanted)), "a record")
        return self.feed(wanted)

    def holder(self, call: Call) -> str:
        """`first` or `worker`: the process whose `connected` record names this call's port."""
        wanted = f"127.0.0.1:{call.port}"
        found: list[Record] = []

        def seen() -> bool:
            found[:] = [r for r in self.records if r["event"] == "connected"]
            found[:] = [r for r in found if r.get("remote") == wanted]
            return bool(found)

        with self._changed:
            assert self._changed.wait_for(seen, 30), f"no connected record from {wanted}"
        (record,) = found
        return "worker" if str(record["stream"]).startswith("conn-w1-") else "first"

    def stop(self, sig: int) -> int:
        """Send `sig`, wait for the exit (workers inherit stderr: theirs too) and the readers."""
        self.process.send_signal(sig)
        code = self.process.wait(60)
        for reader in self._readers:
            reader.join(60)
        return code

    def cleanup(self) -> None:
        """After a failed test: stop the serve (it stops its workers), killing it if stuck."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        for pid in workers_running():  # a worker that failed to exit on its own
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for other in self.companions:
            if other.poll() is None:
                other.kill()
                other.communicate(timeout=30)
        for reader in self._readers:
            reader.join(30)


@pytest.fixture
def serves() -> Iterator[Callable[..., Serve]]:
    started: list[Serve] = []

    def start(*args: str, token: str | None = TOKEN) -> Serve:
        started.append(Serve(*args, token=token))
        return started[-1]

    yield start
    for serve in started:
        serve.cleanup()


@dataclass
class Call:
    """One simulated call: what its caller sends, and what happened (filled in as it runs)."""

    index: int
    audio: bytes  # mu-law 8 kHz, a whole number of 20 ms frames
    report: CallReport
    port: int | None = None  # the client's port once connected
    future: concurrent.futures.Future[CallReport] | None = None
    connected: threading.Event = field(default_factory=threading.Event)

    @property
    def stream_id(self) -> str:
        return self.report.stream_id

    @property
    def frames(self) -> list[bytes]:
        return codec.frames(self.audio, MULAW_8K)

    def settled(self) -> bool:
        """Connected, or failed to."""
        return self.connected.is_set() or (self.future is not None and self.future.done())


class Callers:
    """Simulated calls on an event loop in a background thread.

    A caller sends `start` and its audio in real-time 20 ms frames, then stays on the line until
    the serve closes the stream (as `serve` does on SIGINT/SIGTERM or when a worker stops).
    """

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.calls: list[Call] = []

    def dial(self, url: str, count: int, token: str | None = TOKEN) -> list[Call]:
        """Start `count` concurrent calls, each with its own tone read from a real WAV file;
        returns once every one is connected."""
        new = []
        for _ in range(count):
            index = len(self.calls)
            wav = self.tmp_path / f"caller-{index}.wav"
            write_wav(wav, synth.tone(300 + 40 * index, CALL_SECONDS, 16000), 16000)
            audio = load_audio(wav, MULAW_8K)
            assert len(audio) % MULAW_8K.frame_bytes() == 0
            report = CallReport(f"call-{index:02d}", f"stream-{index:02d}", MULAW_8K)
            call = Call(index, audio, report)
            call.future = asyncio.run_coroutine_threadsafe(self._run(url, token, call), self.loop)
            self.calls.append(call)
            new.append(call)
        for call in new:
            wait_until(functools.partial(Call.settled, call), f"call {call.index} to connect")
            assert call.future is not None
            if call.future.done():
                call.future.result()  # raises what went wrong
        return new

    async def _run(self, url: str, token: str | None, call: Call) -> CallReport:
        ws = await open_stream(url, token, 10)
        call.port = int(ws.local_address[1])
        call.connected.set()
        report = call.report

        async def caller(plivo: PlivoCall) -> None:
            start = Start(
                report.call_id, report.stream_id, "MAWORKERS", ("inbound",), MULAW_8K,
                sequence_number=plivo.next_seq(),
            )  # fmt: skip
            await plivo.send(start.to_json())
            for index, frame in enumerate(call.frames):
                stamp = str(plivo.t0_ms + index * FRAME_MS)
                media = Media(
                    report.stream_id, "inbound", stamp, frame, index + 1, plivo.next_seq()
                )
                await plivo.send(media.to_json())
                plivo.sent_media(len(frame), speech=True)
                await plivo.sleep_until((index + 1) * plivo.interval)
            await plivo.done.wait()  # until the serve closes the stream

        return await converse(PlivoCall(ws, report), caller, linger=0)

    def results(self, calls: list[Call] | None = None) -> list[CallReport]:
        out = []
        for call in self.calls if calls is None else calls:
            assert call.future is not None
            out.append(call.future.result(60))
        return out

    def close(self) -> None:
        """Hang up calls still open (after a failed test): cancelled, each closes its socket,
        so the serve, stopped after this, does not wait on callers that no longer answer."""

        async def hang_up() -> None:
            tasks = asyncio.all_tasks() - {asyncio.current_task()}
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=20)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(hang_up(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


@pytest.fixture
def callers(tmp_path: Path) -> Iterator[Callers]:
    made = Callers(tmp_path)
    yield made
    made.close()


def wait_all_media(calls: list[Call]) -> dict[str, dict[str, Any]]:
    """Poll `pstream streams --json` until every call is listed with all its frames received
    (the worker's snapshots are up to half a second old); returns the snapshots by stream."""
    latest: dict[str, dict[str, Any]] = {}

    def complete() -> bool:
        latest.clear()
        latest.update({s["stream"]: s for s in streams_json()})
        return all(
            call.stream_id in latest and latest[call.stream_id]["media"] == len(call.frames)
            for call in calls
        )

    wait_until(complete, "every stream listed with all its frames", timeout=60)
    return latest


def two_processes_with_calls(
    serves: Callable[..., Serve], callers: Callers, tmp_path: Path, count: int = 24
) -> tuple[Serve, int, list[Call], Path]:
    """`serve --workers 2 --record --json` with `count` calls streaming: (serve, the worker's
    pid, the calls, the recording directory)."""
    record_dir = tmp_path / "rec"
    serve = serves("--workers", "2", "--record", str(record_dir), "--json")
    _, worker_pid = serve.wait_ready()
    calls = callers.dial(serve.url, count)
    wait_all_media(calls)
    return serve, worker_pid, calls, record_dir


def check_recording(record: Record, call: Call) -> None:
    """The stream's `closed` record lists its files, all finalized; inbound.wav holds exactly
    the caller's audio, decoded."""
    paths = [Path(f["path"]) for f in record["files"]]
    assert {p.name.split(".", 1)[1] for p in paths} == {"inbound.wav", "outbound.wav", "jsonl"}
    for path in paths:
        if path.suffix == ".wav":
            with wave.open(str(path)) as wav:
                assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
                assert path.stat().st_size == WAV_HEADER + 2 * wav.getnframes(), path
                if path.name.endswith(".inbound.wav"):
                    assert wav.readframes(wav.getnframes()) == codec.decode(call.audio, MULAW_8K)


def one_line(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------- serving from two processes


def test_two_processes_serve_feed_record_and_are_controlled_as_one(
    serves: Callable[..., Serve], callers: Callers, tmp_path: Path
) -> None:
    record_dir = tmp_path / "rec"
    serve = serves("--workers", "2", "--record", str(record_dir), "--json", "--media")
    _, worker_pid = serve.wait_ready()
    assert workers_running() == [worker_pid]
    tail = pstream_process("tail", "--json")
    serve.companions.append(tail)
    wait_until(lambda: bool(serve.feed(lambda r: r.get("action") == "monitor")), "tail attached")

    calls = callers.dial(serve.url, 24)
    snapshots = wait_all_media(calls)
    holders = {call.stream_id: serve.holder(call) for call in calls}
    assert set(holders.values()) == {"first", "worker"}  # all 24 on one side: p = 2^-23
    assert {s["state"] for s in snapshots.values()} == {"streaming"}
    worker_call = next(c for c in calls if holders[c.stream_id] == "worker")
    sid = worker_call.stream_id

    # play / clear / checkpoint on a stream the worker holds, through the first's control.
    greeting = tmp_path / "greeting.wav"
    write_wav(greeting, synth.sweep(300, 3000, 0.5, 16000), 16000)
    played = pstream("play", "--stream", sid, "--checkpoint", "greeted", str(greeting))
    assert played.returncode == 0, played.stderr
    assert f"queued 0.50 s of greeting.wav (4000 bytes) to stream {sid}" in played.stderr
    report = worker_call.report
    wait_until(lambda: report.checkpoints_confirmed == ["greeted"], "the greeting to play out")
    assert bytes(report.received_audio) == load_audio(greeting, MULAW_8K)
    cleared = pstream("clear", "--stream", sid)
    assert cleared.returncode == 0 and f"clearAudio sent to stream {sid}" in cleared.stderr
    marked = pstream("checkpoint", "mark", "--stream", sid)
    assert marked.returncode == 0 and f"checkpoint 'mark' sent to stream {sid}" in marked.stderr
    wait_until(lambda: report.clears == 1, "clearAudio at the caller")
    wait_until(lambda: report.checkpoints_confirmed == ["greeted", "mark"], "'mark' confirmed")
    unknown = pstream("clear", "--stream", "nope")
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1
    listing = "; live streams: " + ", ".join(sorted(holders))
    assert unknown.stderr == f"error: no live stream 'nope'{listing}\n"
    others = [c for c in calls if c is not worker_call]
    assert all(not c.report.received_audio and not c.report.clears for c in others)

    code = serve.stop(signal.SIGINT)
    reports = callers.results()
    tail_out, tail_err = tail.communicate(timeout=60)

    assert code == 130, serve.err
    assert not alive(worker_pid) and workers_running() == []
    assert "Traceback" not in serve.err
    assert "pstream serve stopped: 24 streams, 24 connections, 0 rejected, 0 bad messages" in (
        one_line(serve.err)
    )
    # Every connection, both processes', in the first's feed; every frame sent, per stream.
    connected = serve.feed(lambda r: r["event"] == "connected")
    assert len(connected) == 24 and {r["auth"] for r in connected} == {"signature valid"}
    ids = sorted(str(r["stream"]) for r in connected)
    assert any(re.fullmatch(r"conn-w1-\d+", i) for i in ids)
    assert any(re.fullmatch(r"conn-\d+", i) for i in ids)
    assert all(re.fullmatch(r"conn-(w1-)?\d+", i) for i in ids) and len(set(ids)) == 24
    for call in calls:
        media = serve.events_of(call.stream_id, "media")
        assert [r["chunk"] for r in media] == list(range(1, len(call.frames) + 1)), call.stream_id
        assert {r["bytes"] for r in media} == {MULAW_8K.frame_bytes()}
    # The worker's replies to control reached the feed too: what it sent, and the notes.
    out = serve.feed(lambda r: r["stream"] == sid and r["dir"] == "out")
    assert {r["event"] for r in out} == {"playAudio", "checkpoint", "clearAudio"}
    assert sum(r["bytes"] for r in out if r["event"] == "playAudio") == 4000
    notes = serve.feed(lambda r: r["event"] == "control" and r["stream"] == sid)
    assert [(n["action"], n["remote"]) for n in notes] == [
        ("play", "serve"),
        ("clear", "serve"),
        ("checkpoint", "serve"),
    ]
    # Both processes closed their live streams on SIGINT, recordings finalized.
    closed = {str(r["stream"]): r for r in serve.feed(lambda r: r["event"] == "closed")}
    assert sorted(closed) == sorted(holders)
    for call in calls:
        assert closed[call.stream_id]["media"] == len(call.frames)
        check_recording(closed[call.stream_id], call)
    assert len(list(record_dir.glob("*.inbound.wav"))) == 24
    for got in reports:
        assert got.closed_by_server and got.close_code == GOING_AWAY, got.stream_id
        assert not got.violations
    # `pstream tail` saw the worker's streams too, to the last `closed` record.
    assert tail.returncode == 0, tail_err
    tailed = [json.loads(line) for line in tail_out.splitlines()]
    assert sorted(str(r["stream"]) for r in tailed if r["event"] == "closed") == sorted(holders)
    assert sorted(str(r["stream"]) for r in tailed if r["event"] == "connected") == ids


def test_media_lines_are_opt_in_and_workers_relay_them_only_while_someone_listens(
    serves: Callable[..., Serve], callers: Callers
) -> None:
    serve = serves("--workers", "2", "--json")  # no --media: no line per frame
    serve.wait_ready()
    tail = pstream_process("tail", "--json", "--media")  # ...but this listener wants them
    serve.companions.append(tail)
    wait_until(lambda: bool(serve.feed(lambda r: r.get("action") == "monitor")), "tail attached")
    calls = callers.dial(serve.url, 24)
    wait_all_media(calls)
    holders = {call.stream_id: serve.holder(call) for call in calls}
    assert set(holders.values()) == {"first", "worker"}
    code = serve.stop(signal.SIGINT)
    callers.results()
    tail_out, tail_err = tail.communicate(timeout=60)
    assert code == 130, serve.err
    assert not serve.feed(lambda r: r["event"] == "media")
    closed = {str(r["stream"]): r for r in serve.feed(lambda r: r["event"] == "closed")}
    assert {sid: closed[sid]["media"] for sid in holders} == {
        call.stream_id: len(call.frames) for call in calls
    }
    # The worker built and relayed its streams' frames for the tail, every one of them.
    assert tail.returncode == 0, tail_err
    tailed = [json.loads(line) for line in tail_out.splitlines()]
    for call in calls:
        media = [r for r in tailed if r["stream"] == call.stream_id and r["event"] == "media"]
        assert [r["chunk"] for r in media] == list(range(1, len(call.frames) + 1)), holders[
            call.stream_id
        ]


def test_sigterm_with_live_streams_exits_0_and_stops_the_worker(
    serves: Callable[..., Serve], callers: Callers, tmp_path: Path
) -> None:
    record_dir = tmp_path / "rec"
    serve = serves("--workers", "2", "--record", str(record_dir))  # plain lines, not --json
    _, worker_pid = serve.wait_ready()
    calls = callers.dial(serve.url, 8)
    wait_all_media(calls)
    code = serve.stop(signal.SIGTERM)
    reports = callers.results()
    assert code == 0, serve.err
    assert not alive(worker_pid) and workers_running() == []
    assert "stopped: 8 streams, 8 connections, 0 rejected, 0 bad messages" in one_line(serve.err)
    assert "worker 1" not in serve.err  # a worker stopped by serve is no news
    for call, got in zip(calls, reports, strict=True):
        assert got.closed_by_server and got.close_code == GOING_AWAY
        (inbound,) = record_dir.glob(f"*_{call.stream_id}.inbound.wav")
        with wave.open(str(inbound)) as wav:
            assert wav.readframes(wav.getnframes()) == codec.decode(call.audio, MULAW_8K)
        assert inbound.stat().st_size == WAV_HEADER + 2 * len(call.audio)


def test_the_worker_exits_by_itself_when_the_first_process_is_killed(
    serves: Callable[..., Serve], callers: Callers, tmp_path: Path
) -> None:
    serve, worker_pid, calls, record_dir = two_processes_with_calls(serves, callers, tmp_path)
    on_worker = [c for c in calls if serve.holder(c) == "worker"]
    assert on_worker  # none of 24: p = 2^-24
    assert alive(worker_pid)
    serve.process.send_signal(signal.SIGKILL)
    assert serve.process.wait(30) == -signal.SIGKILL
    wait_until(lambda: not alive(worker_pid), "the worker to exit", timeout=60)
    assert workers_running() == []
    reports = callers.results()
    # The worker saw its input end and closed its streams as a stopping serve does.
    for call in on_worker:
        got = reports[calls.index(call)]
        assert got.closed_by_server and got.close_code == GOING_AWAY, call.stream_id
        (inbound,) = record_dir.glob(f"*_{call.stream_id}.inbound.wav")
        with wave.open(str(inbound)) as wav:
            assert wav.readframes(wav.getnframes()) == codec.decode(call.audio, MULAW_8K)


def test_a_worker_ignores_sigint_and_stops_alone_on_sigterm(
    serves: Callable[..., Serve], callers: Callers, tmp_path: Path
) -> None:
    serve, worker_pid, calls, _ = two_processes_with_calls(serves, callers, tmp_path)
    on_worker = [c for c in calls if serve.holder(c) == "worker"]
    on_first = [c for c in calls if c not in on_worker]
    assert on_worker and on_first  # all 24 on one side: p = 2^-23
    sid = on_worker[0].stream_id

    # Ctrl-C is the first process's to handle: the worker still answers after a SIGINT.
    os.kill(worker_pid, signal.SIGINT)
    marked = pstream("checkpoint", "alive", "--stream", sid)
    assert marked.returncode == 0, marked.stderr
    wait_until(lambda: on_worker[0].report.checkpoints_confirmed == ["alive"], "'alive' confirmed")
    assert alive(worker_pid)

    # SIGTERM stops the worker alone, as the end of its input does: its streams closed and
    # recorded, their last records relayed; the first process serves on.
    os.kill(worker_pid, signal.SIGTERM)
    wait_until(lambda: not alive(worker_pid), "the worker to exit")
    for call, got in zip(on_worker, callers.results(on_worker), strict=True):
        assert got.closed_by_server and got.close_code == GOING_AWAY, call.stream_id
        # Relayed, then printed by the first process's --json batcher: a moment later.
        closed = serve.wait_record(call.stream_id, "closed")
        check_recording(closed, call)
    first_ids = sorted(c.stream_id for c in on_first)
    wait_until(
        lambda: sorted(s["stream"] for s in streams_json()) == first_ids,
        "the worker's streams to leave `pstream streams`",
    )
    gone = pstream("clear", "--stream", sid)
    assert gone.returncode == 2 and f"no live stream {sid!r}" in gone.stderr
    # A worker that stops while serve goes on is reported: capacity and streams were lost.
    (lost,) = serve.wait_record_where(lambda r: r["event"] == "error" and "worker 1" in r["error"])
    assert f"pid {worker_pid}" in lost["error"] and "exited" in lost["error"]
    assert all(not c.future.done() for c in on_first if c.future is not None)

    code = serve.stop(signal.SIGINT)
    callers.results()
    assert code == 130, serve.err
    assert "stopped: 24 streams, 24 connections, 0 rejected, 0 bad messages" in one_line(serve.err)
    for call in on_first:
        (closed,) = serve.events_of(call.stream_id, "closed")
        check_recording(closed, call)


# ---------------------------------------------------------------- refusals


def finish(process: subprocess.Popen[str]) -> tuple[str, str]:
    """Output of a serve expected to exit at once; one that serves instead is stopped (with its
    workers) so the failure shows rather than a leftover process."""
    try:
        return process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
        raise AssertionError(f"serve kept running; stderr:\n{err}") from None


def test_reject_replays_remembers_for_every_process(serves: Callable[..., Serve]) -> None:
    # One memory in the first process: a replay is refused whichever process accepts the
    # connection. Had each process its own, one of 12 replays would reach the process that has
    # not seen the signature (all 12 on one side: p = 2^-12) and be served.
    serve = serves("--workers", "2", "--reject-replays", "--json")
    serve.wait_ready()
    signed = sign_headers(serve.url, TOKEN)

    async def upgrade(headers: dict[str, str]) -> int | None:
        """None if the upgrade was accepted (the stream waits for its start), else the close
        code."""
        async with connect(serve.url, additional_headers=headers, compression=None) as ws:
            try:
                await asyncio.wait_for(ws.recv(), 1.0)
            except asyncio.TimeoutError:
                return None  # still open: accepted
            except ConnectionClosed:
                return ws.close_code
        raise AssertionError("serve sent a message before the start event")

    async def scenario() -> list[int | None]:
        first = await upgrade(signed)
        replays = await asyncio.gather(*(upgrade(signed) for _ in range(12)))
        fresh = await upgrade(sign_headers(serve.url, TOKEN))
        return [first, *replays, fresh]

    codes = asyncio.run(scenario())
    assert codes == [None, *[1008] * 12, None]
    wait_until(lambda: len(serve.feed(lambda r: r["event"] == "rejected")) == 12, "12 rejected")
    rejected = serve.feed(lambda r: r["event"] == "rejected")
    assert all(str(r["reason"]).startswith("replayed signature") for r in rejected)
    code = serve.stop(signal.SIGTERM)
    assert code == 0, serve.err
    assert "14 connections, 12 rejected" in one_line(serve.err)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "--workers: accepts a whole number of processes from 1 to 64 (got 0)"),
        (
            ["--workers", "65"],
            "--workers: accepts a whole number of processes from 1 to 64 (got 65)",
        ),
    ],
)
def test_workers_that_cannot_serve_are_refused_in_one_line(args: list[str], message: str) -> None:
    port = free_port()
    process = pstream_process("serve", "--port", str(port), *args, env={"PLIVO_AUTH_TOKEN": TOKEN})
    out, err = finish(process)
    assert process.returncode == 2
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert out == ""
    assert workers_running() == []
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # never listened


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "so-reuseport"])
def test_a_taken_port_fails_before_any_worker_starts(reuse_port: bool) -> None:
    # A listener that set SO_REUSEPORT itself would otherwise let serve's sockets join it.
    with socket.socket() as taken:
        if reuse_port:
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = pstream_process("serve", "--workers", "2", "--port", str(port))
        out, err = finish(process)
        assert workers_running() == []
    assert process.returncode == 2
    assert err == (
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use; pick another --port\n"
    )
    assert out == ""


# ---------------------------------------------------------------- one process, as before


def test_without_workers_the_feed_has_no_worker_ids(
    serves: Callable[..., Serve], callers: Callers
) -> None:
    serve = serves("--json")
    serve.wait_err(re.compile(r"^control on ws://"))
    serve.wait_control()
    calls = callers.dial(serve.url, 3)
    wait_all_media(calls)
    code = serve.stop(signal.SIGTERM)
    callers.results()
    assert code == 0, serve.err
    assert "processes share the port" not in serve.err
    assert "stopped: 3 streams, 3 connections" in one_line(serve.err)
    ids = sorted(str(r["stream"]) for r in serve.feed(lambda r: r["event"] == "connected"))
    assert ids == ["conn-1", "conn-2", "conn-3"]
    assert not serve.feed(lambda r: "conn-w" in str(r["stream"]))
