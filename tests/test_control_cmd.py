"""`pstream tail/play/clear/checkpoint/streams` through the CLI against a real serve.

Most tests run the serve (stream server + control channel, published in an isolated state
directory) on an event loop in a background thread and drive the commands with CliRunner; the
wiring of `pstream serve` itself, `--follow` and the interactive prompt run as real processes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import queue
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from typer.testing import CliRunner, Result

from plivo_stream_cli import codec, synth
from plivo_stream_cli.adapters import statefile
from plivo_stream_cli.adapters.audiofile import load_audio, load_pcm, write_wav
from plivo_stream_cli.adapters.control import ControlServer, start_control
from plivo_stream_cli.adapters.server import ServeConfig, StreamServer
from plivo_stream_cli.adapters.simulator import SimulateConfig, run_call
from plivo_stream_cli.callreport import CallReport
from plivo_stream_cli.cli import app
from plivo_stream_cli.feed import Record
from plivo_stream_cli.formats import MULAW_8K
from tests.conftest import pstream_process

T = TypeVar("T")
runner = CliRunner()


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "state"
    monkeypatch.setenv(statefile.STATE_DIR_ENV, str(directory))
    monkeypatch.delenv("PSTREAM_CONTROL_TOKEN", raising=False)
    return directory


class ThreadServe:
    """A serve (stream server + published control channel) on a loop in a background thread."""

    def __init__(self, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.records: list[Record] = []
        self._changed = threading.Condition()
        self.server, self.control = self.call(self._start(options))

    async def _start(self, options: dict[str, Any]) -> tuple[StreamServer, ControlServer]:
        server = StreamServer(ServeConfig(port=0, **options))
        await server.start()
        server.subscribe(self._on_record, media=True)
        return server, await start_control(server)

    def _on_record(self, record: Record) -> None:
        with self._changed:
            self.records.append(record)
            self._changed.notify_all()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def wait_for(self, match: Callable[[Record], bool], count: int = 1) -> Record:
        with self._changed:
            found: list[Record] = []

            def enough() -> bool:
                found[:] = [r for r in self.records if match(r)]
                return len(found) >= count

            assert self._changed.wait_for(enough, 15), f"waited for {count} matching records"
            return found[count - 1]

    def events(self, direction: str | None = None) -> list[str]:
        with self._changed:
            return [r["event"] for r in self.records if direction in (None, r["dir"])]

    def caller(self, seconds: float = 0.1, **options: Any) -> concurrent.futures.Future[CallReport]:
        """A simulated call that stays up until `hang_up()`."""
        audio = codec.encode(synth.silence(seconds, 8000), MULAW_8K)
        config = SimulateConfig(url=self.server.local_url, audio=audio, linger=30, **options)
        return self.spawn(run_call(config))

    def hang_up(self) -> None:
        async def close_all() -> None:
            for live in list(self.server.streams.values()):
                await live.ws.close()

        self.call(close_all())

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.call(self.server.close())
        self.call(self.control.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def serve_factory() -> Iterator[Callable[..., ThreadServe]]:
    started: list[ThreadServe] = []

    def make(**options: Any) -> ThreadServe:
        started.append(ThreadServe(**options))
        return started[-1]

    yield make
    for serve in started:
        serve.stop()


@pytest.fixture
def serve(serve_factory: Callable[..., ThreadServe]) -> ThreadServe:
    return serve_factory()


def event(name: str, direction: str | None = None) -> Callable[[Record], bool]:
    return lambda r: r["event"] == name and direction in (None, r["dir"])


def pstream(*args: str) -> Result:
    return runner.invoke(app, list(args))


@pytest.fixture
def wav(tmp_path: Path) -> Path:
    path = tmp_path / "greeting.wav"
    write_wav(path, synth.sweep(300, 3000, 0.5, 16000), 16000)
    return path


# ---------------------------------------------------------------- finding the serve


@pytest.mark.parametrize(
    "args", [["streams"], ["clear"], ["checkpoint", "x"], ["tail"], ["play", "WAV"]]
)
def test_without_a_running_serve_one_line_says_to_start_one(args: list[str], wav: Path) -> None:
    result = pstream(*[str(wav) if a == "WAV" else a for a in args])
    assert result.exit_code == 3
    assert result.stderr.count("\n") == 1
    assert "start `pstream serve`" in result.stderr


def test_each_command_has_an_example_in_its_help() -> None:
    for name in ("tail", "play", "clear", "checkpoint", "streams"):
        result = pstream(name, "--help")
        assert result.exit_code == 0 and "Example: pstream" in result.stdout, name


# ---------------------------------------------------------------- streams


def test_streams_as_json_and_as_a_table(serve: ThreadServe) -> None:
    empty = pstream("streams")
    assert empty.exit_code == 0 and empty.stdout == "" and "no streams" in empty.stderr
    call = serve.caller(stream_id="stream-one", call_id="call-one", dtmf=[("4", 0.0)])
    serve.wait_for(event("dtmf"))
    as_json = pstream("streams", "--json")
    table = pstream("streams")
    serve.hang_up()
    call.result(30)
    assert as_json.exit_code == 0, as_json.output
    (snapshot,) = json.loads(as_json.stdout)
    assert snapshot["stream"] == "stream-one" and snapshot["call"] == "call-one"
    assert snapshot["dtmf"] == "4" and snapshot["format"] == "audio/x-mulaw;rate=8000"
    assert table.exit_code == 0
    header, row = [line.split("\t") for line in table.stdout.splitlines()]  # piped: TSV
    assert len(header) == len(row)
    assert header[:4] == ["stream", "call", "format", "state"]
    assert row[:4] == ["stream-one", "call-one", "audio/x-mulaw;rate=8000", "streaming"]


# ---------------------------------------------------------------- play, clear, checkpoint


def test_play_of_a_wav_arrives_as_exactly_the_converted_audio_checkpoint_confirmed(
    serve: ThreadServe, wav: Path
) -> None:
    call = serve.caller(speed=4)
    serve.wait_for(event("start"))
    result = pstream("play", str(wav), "--checkpoint", "greeted")
    serve.wait_for(event("playedStream"))
    serve.hang_up()
    report = call.result(30)
    assert result.exit_code == 0, result.output
    assert "queued 0.50 s of greeting.wav" in result.stderr and "'greeted'" in result.stderr
    pcm, rate = load_pcm(wav)
    expected = codec.encode(codec.resample(pcm, rate, 8000), MULAW_8K)
    assert expected == load_audio(wav, MULAW_8K)  # what `serve --play` would send, too
    assert bytes(report.received_audio) == expected
    assert report.checkpoints_confirmed == ["greeted"] and not report.violations


def test_play_names_its_checkpoint_after_the_file_and_bad_files_fail_first(
    serve: ThreadServe, wav: Path, tmp_path: Path
) -> None:
    call = serve.caller(speed=4)
    serve.wait_for(event("start"))
    result = pstream("play", str(wav))
    serve.wait_for(event("playedStream"))
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("hello")
    bad = pstream("play", str(not_audio))
    serve.hang_up()
    assert result.exit_code == 0 and call.result(30).checkpoints_confirmed == ["greeting"]
    assert bad.exit_code == 2 and "not a WAV" in bad.stderr
    assert serve.events("out").count("playAudio") == 1  # nothing was sent for the bad file


def test_clear_mid_playback_yields_clear_then_cleared_and_no_further_audio(
    serve_factory: Callable[..., ThreadServe],
) -> None:
    serve = serve_factory(play_audio=synth.tone(440, 30, 8000), max_buffer=0.5, max_b64=2000)
    call = serve.caller(seconds=10)
    serve.wait_for(event("playAudio", "out"), count=4)
    result = pstream("clear")
    cleared = serve.wait_for(event("clearedAudio", "in"))
    seen = serve.records.index(cleared)
    media_so_far = sum(1 for r in serve.records[:seen] if r["event"] == "media")
    # 0.5 s more of the caller's audio: the paced player would have sent 2-3 chunks.
    serve.wait_for(event("media", "in"), count=media_so_far + 25)
    serve.hang_up()
    report = call.result(30)
    assert result.exit_code == 0 and "clearAudio sent to stream" in result.stderr
    out = serve.events("out")
    assert out[-1] == "clearAudio" and set(out[:-1]) == {"playAudio"} and len(out) >= 5
    events = serve.events()
    assert events.index("clearAudio") < events.index("clearedAudio")
    (clear_t,) = report.times("clear")
    assert max(report.times("play")) < clear_t
    assert report.clears == 1


def test_several_streams_need_stream_when_not_interactive(serve: ThreadServe) -> None:
    calls = [serve.caller(stream_id=sid, speed=4) for sid in ("alpha-1", "beta-2")]
    serve.wait_for(event("start"), count=2)
    ambiguous = pstream("clear")
    unknown = pstream("checkpoint", "mark", "--stream", "zz")
    chosen = pstream("checkpoint", "mark", "--stream", "be")
    serve.wait_for(event("playedStream"))
    serve.hang_up()
    reports = [c.result(30) for c in calls]
    assert ambiguous.exit_code == 2
    assert "2 live streams: choose one with --stream ID: alpha-1, beta-2" in ambiguous.stderr
    assert unknown.exit_code == 2 and "no live stream 'zz'" in unknown.stderr
    assert chosen.exit_code == 0 and "'mark' sent to stream beta-2" in chosen.stderr
    assert [r.checkpoints_confirmed for r in reports] == [[], ["mark"]]
    assert "clearAudio" not in serve.events()


def test_several_streams_are_offered_at_a_terminal(serve: ThreadServe, state_dir: Path) -> None:
    import pty

    calls = [serve.caller(stream_id=sid, speed=4) for sid in ("alpha-1", "beta-2")]
    serve.wait_for(event("start"), count=2)
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "plivo_stream_cli", "checkpoint", "picked"],
        stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "NO_COLOR": "1", "PSTREAM_STATE_DIR": str(state_dir)},
    )  # fmt: skip
    os.close(slave)
    try:
        os.write(master, b"2\n")
        _, err = process.communicate(timeout=30)
    finally:
        os.close(master)
    serve.wait_for(event("playedStream"))
    serve.hang_up()
    reports = [c.result(30) for c in calls]
    assert process.returncode == 0, err
    assert "2 live streams:" in err and "2) beta-2" in err
    assert [r.checkpoints_confirmed for r in reports] == [[], ["picked"]]


# ---------------------------------------------------------------- tail (attached)


def test_tail_json_and_plain_lines_show_the_dtmf_of_a_simulated_call(
    serve: ThreadServe, state_dir: Path
) -> None:
    plain = pstream_process("tail", env={"PSTREAM_STATE_DIR": str(state_dir)})
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        attached = pool.submit(pstream, "tail", "--json")
        serve.wait_for(lambda r: r.get("action") == "monitor", count=2)
        call = serve.caller(seconds=0.3, speed=4, dtmf=[("5", 0.0), ("#", 0.1)])
        serve.wait_for(event("dtmf"), count=2)
        serve.hang_up()
        call.result(30)
        serve.wait_for(event("closed"))
        serve.stop()  # tail ends when the serve stops
        result = attached.result(30)
    out, err = plain.communicate(timeout=30)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["digit"] for r in records if r["event"] == "dtmf"] == ["5", "#"]
    assert {"start", "dtmf", "closed"} <= {r["event"] for r in records}
    assert "media" not in {r["event"] for r in records}
    assert "attached to pstream serve" in result.stderr and "serve stopped" in result.stderr
    assert plain.returncode == 0, err
    dtmf_lines = [line for line in out.splitlines() if "<- dtmf" in line]
    assert [line.split()[-1] for line in dtmf_lines] == ["5", "#"]
    assert all(line[:2].isdigit() and line[2] == ":" for line in dtmf_lines)  # time-stamped


def test_a_wrong_token_is_refused_with_exit_3(serve: ThreadServe) -> None:
    result = pstream("streams", "--control", serve.control.url, "--token", "not-it")
    assert result.exit_code == 3 and "refused the token" in result.stderr
    assert serve.wait_for(event("control-refused"))["reason"] == "wrong token"
    right = pstream("streams", "--control", serve.control.url)  # token from the state file
    assert right.exit_code == 0, right.output


# ---------------------------------------------------------------- tail (capture file)


@pytest.fixture
def capture(serve_factory: Callable[..., ThreadServe], tmp_path: Path) -> tuple[Path, ThreadServe]:
    """A real recorded call: DTMF in, a played file with its checkpoint out."""
    record_dir = tmp_path / "calls"
    record_dir.mkdir()
    serve = serve_factory(
        record_dir=record_dir, play_audio=synth.tone(600, 0.2, 8000), play_name="beep"
    )
    call = serve.caller(seconds=0.4, speed=4, dtmf=[("9", 0.1)])
    serve.wait_for(event("playedStream"))
    serve.wait_for(event("dtmf"))
    serve.hang_up()
    call.result(30)
    serve.wait_for(event("closed"))
    (path,) = record_dir.glob("*.jsonl")
    return path, serve


def without_t(records: list[Record]) -> list[Record]:
    return [{k: v for k, v in r.items() if k != "t"} for r in records]


def test_tail_of_a_capture_gives_the_records_serve_showed_live(
    capture: tuple[Path, ThreadServe],
) -> None:
    path, serve = capture
    as_json = pstream("tail", str(path), "--json")
    with_media = pstream("tail", str(path), "--json", "--media")
    plain = pstream("tail", str(path))
    assert as_json.exit_code == 0, as_json.output
    decoded = [json.loads(line) for line in as_json.stdout.splitlines()]
    live = [r for r in serve.records if r["dir"] != "-" and r["event"] != "media"]
    if decoded[0]["event"] != "start":
        # serve opens its recorder on `start`, after that message went by: not in the capture.
        live = [r for r in live if r["event"] != "start"]
    assert without_t(decoded) == without_t(live)
    assert all(abs(d["t"] - r["t"]) < 0.002 for d, r in zip(decoded, live, strict=True))
    kinds = {r["event"] for r in decoded}
    assert {"dtmf", "playAudio", "checkpoint", "playedStream"} <= kinds
    media = [json.loads(line) for line in with_media.stdout.splitlines()]
    assert len([r for r in media if r["event"] == "media"]) == serve.events().count("media")
    assert plain.exit_code == 0
    assert any(line.endswith("<- dtmf          digit 9") for line in plain.stdout.splitlines())


def test_tail_of_a_file_that_is_not_a_capture_fails_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "notes.jsonl"
    path.write_text('{"t": 1, "dir": "in", "msg": {"event": "dtmf"}}\nhello\n')
    result = pstream("tail", str(path), "--json")
    assert result.exit_code == 2
    assert f"{path}:2: not a pstream capture line" in result.stderr
    assert json.loads(result.stdout.splitlines()[0])["event"] == "error"  # bad dtmf, decoded
    missing = pstream("tail", str(tmp_path / "nope.jsonl"))
    assert missing.exit_code == 2 and "cannot read capture" in missing.stderr
    assert pstream("tail", "--follow").exit_code == 2


def test_tail_follow_reads_a_capture_as_it_grows(
    capture: tuple[Path, ThreadServe], tmp_path: Path
) -> None:
    source, _ = capture
    lines = [line for line in source.read_text().splitlines(keepends=True) if '"media"' not in line]
    growing = tmp_path / "growing.jsonl"
    growing.write_text(lines[0])
    process = pstream_process("tail", str(growing), "--follow", "--json")
    out: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [out.put(x) for x in process.stdout or []], daemon=True).start()
    try:
        first = json.loads(out.get(timeout=30))
        with growing.open("a") as handle:
            rest = "".join(lines[1:])
            handle.write(rest[:-10])  # a line still being written ...
            handle.flush()
            time.sleep(0.3)  # ... is not decoded until it is complete
            handle.write(rest[-10:])
        later = [json.loads(out.get(timeout=30)) for _ in lines[1:]]
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(30)
    assert first["event"] == json.loads(lines[0])["msg"]["event"]
    assert [r["event"] for r in later] == [json.loads(x)["msg"]["event"] for x in lines[1:]]
    assert out.empty()
    assert process.returncode == 130


# ---------------------------------------------------------------- pstream serve itself


def test_two_serve_processes_at_once_with_0600_state_files(state_dir: Path) -> None:
    env = {"PSTREAM_STATE_DIR": str(state_dir)}
    serves = [pstream_process("serve", "--port", "0", env=env) for _ in range(2)]
    try:
        deadline = time.monotonic() + 30
        while len(statefile.live_serves()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        entries = statefile.live_serves()
        assert sorted(e.pid for e in entries) == sorted(p.pid for p in serves)
        assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
        for path in state_dir.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        several = pstream("streams")
        picked = pstream("streams", "--json", "--control", entries[1].control_url)
        wrong = pstream("clear", "--control", entries[0].control_url, "--token", "guess")
    finally:
        for process in serves:
            process.send_signal(signal.SIGTERM)
        results = [p.communicate(timeout=30) for p in serves]
    assert several.exit_code == 2 and "2 pstream serves are running" in several.stderr
    assert all(f"pid {p.pid}" in several.stderr for p in serves)
    assert picked.exit_code == 0 and json.loads(picked.stdout) == []
    assert wrong.exit_code == 3
    assert [p.returncode for p in serves] == [0, 0]
    assert all("control on ws://127.0.0.1:" in err for _, err in results)
    refused_err = results[[p.pid for p in serves].index(entries[0].pid)][1]
    assert "control-refused" in refused_err and "guess" not in refused_err
    assert list(state_dir.iterdir()) == []  # each serve removed its file on exit
