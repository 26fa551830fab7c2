"""The locustfile end to end: Locust headless, a master and two local workers, against a real bot
on loopback; what it reports is read back from Locust's own CSV."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import importlib.util
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve

from plivo_stream_cli import synth
from plivo_stream_cli.adapters.audiofile import write_wav
from tests.conftest import free_port, serving_in_thread

# Never import locust here: importing it monkey-patches this whole process with gevent (it broke
# later tests' pseudo-terminal reads). Locust runs in its own processes only.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("locust") is None, reason="needs the [locust] extra"
)

LOCUSTFILE = Path(__file__).resolve().parents[1] / "plivo_stream_cli" / "adapters" / "locustfile.py"


async def talking_bot(ws: ServerConnection) -> None:
    """Sends 100 ms of audio and a checkpoint every 200 ms once the stream has started."""
    stream_id: list[str] = []

    async def talk() -> None:
        while True:
            await asyncio.sleep(0.2)
            if stream_id:
                payload = base64.b64encode(b"\xff" * 800).decode()
                media = {"contentType": "audio/x-mulaw", "sampleRate": 8000, "payload": payload}
                await ws.send(json.dumps({"event": "playAudio", "media": media}))
                await ws.send(
                    json.dumps({"event": "checkpoint", "streamId": stream_id[0], "name": "c"})
                )

    talker = asyncio.ensure_future(talk())
    try:
        async for message in ws:
            event = json.loads(message)
            if event["event"] == "start":
                stream_id.append(event["start"]["streamId"])
    except Exception:
        pass
    finally:
        talker.cancel()


@contextlib.contextmanager
def bot_url() -> Iterator[str]:
    @contextlib.asynccontextmanager
    async def open_server() -> AsyncIterator[str]:
        async with serve(talking_bot, "127.0.0.1", 0) as server:
            yield f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}/stream"

    with serving_in_thread(open_server) as url:
        yield url


def locust(*args: str, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *args]
    return subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def test_master_and_two_workers_report_every_metric_in_the_csv(tmp_path: Path) -> None:
    audio = tmp_path / "caller.wav"
    write_wav(audio, synth.tones((440.0,), 0.4, 8000), 8000)  # 0.4 s of speech
    port = str(free_port())
    with bot_url() as url:
        workers = [
            locust("--worker", "--master-port", port, log=tmp_path / f"worker{i}.log")
            for i in (1, 2)
        ]
        try:
            master = locust(
                "--master", "--master-bind-port", port, "--headless",
                "--expect-workers", "2", "--expect-workers-max-wait", "60",
                "-u", "4", "-r", "4", "-t", "6s", "--stop-timeout", "10",
                "--host", url, "--csv", str(tmp_path / "run"),
                "--pstream-audio", str(audio), "--pstream-linger", "0.2",
                "--pstream-max-late-ms", "1000",  # this test checks the plumbing, not the machine
                log=tmp_path / "master.log",
            )  # fmt: skip
            code = master.wait(timeout=90)
            for worker in workers:
                worker.wait(timeout=30)
        finally:
            for proc in workers:
                if proc.poll() is None:
                    proc.kill()
    log = (tmp_path / "master.log").read_text()
    assert code == 0, log
    with (tmp_path / "run_stats.csv").open() as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    for name in ("connect", "first_audio", "checkpoint", "call", "pacing_late_p99"):
        assert int(rows[name]["Request Count"]) > 0, (name, rows)
        assert int(rows[name]["Failure Count"]) == 0, (name, rows)
    calls = int(rows["call"]["Request Count"])
    assert calls >= 4  # four users for six seconds, calls of about 0.7 s
    assert int(rows["first_audio"]["Request Count"]) == calls
    # the bot answers every 200 ms: the first reply after the speech comes within about that
    assert 0 < float(rows["first_audio"]["Max Response Time"]) < 600
    assert 0.3 * 1000 < float(rows["call"]["Median Response Time"]) < 3000
    assert rows["checkpoint"]["Type"] == "pstream"
    worker_logs = [(tmp_path / f"worker{i}.log").read_text() for i in (1, 2)]
    assert all("Traceback" not in text for text in [log, *worker_logs]), worker_logs


def test_a_refusing_host_is_a_failed_call_and_exit_1(tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{free_port()}/stream"  # nothing listens there
    done = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
         "-u", "1", "-r", "1", "-t", "6s", "--host", url, "--csv", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    with (tmp_path / "run_stats.csv").open() as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    assert int(rows["connect"]["Failure Count"]) == int(rows["connect"]["Request Count"]) > 0
    assert int(rows["call"]["Failure Count"]) == int(rows["call"]["Request Count"])
    assert "first_audio" not in rows  # nothing to measure without a connection
    assert "cannot connect" in (tmp_path / "run_failures.csv").read_text()


def test_the_module_prints_its_path_for_locust_f() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "plivo_stream_cli.adapters.locustfile"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == LOCUSTFILE
