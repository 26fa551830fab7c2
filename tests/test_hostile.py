"""serve against hostile peers, over real sockets: broken Host headers, per-stream state a peer
could grow without bound, deeply nested control requests, chunked webhooks, a stalled stdout
reader, and peers that never answer the closing handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.frames import Close, Frame, Opcode
from websockets.streams import StreamReader
from websockets.utils import generate_key

from plivo_stream_cli import synth
from plivo_stream_cli.adapters import statefile
from plivo_stream_cli.adapters.audiofile import write_wav
from plivo_stream_cli.adapters.server import ServeConfig, StreamServer
from plivo_stream_cli.console.spool import WRITE_BYTES, Spool
from plivo_stream_cli.events import Dtmf, Media, Start
from plivo_stream_cli.feed import Record
from plivo_stream_cli.formats import MULAW_8K
from plivo_stream_cli.signature import sign_headers
from tests.conftest import ROOT, free_port, pstream_process, run, wait_for_port

TOKEN = "hostile-test-token"
TIMEOUT = 10.0
BROKEN_HOSTS = [None, "", "[::1", "[::1]x", "[zz]:80", "::1", "h:99999", "h:x", "a@b", "[", "]"]


def start_json(stream: str = "stream-1") -> str:
    return Start("call-1", stream, "MA1", ("inbound",), MULAW_8K).to_json()


def masked_text(message: str) -> bytes:
    return Frame(Opcode.TEXT, message.encode()).serialize(mask=True)


def head(method: str, target: str, host: str | None, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@contextlib.asynccontextmanager
async def serving(**config: Any) -> AsyncIterator[tuple[StreamServer, list[Record]]]:
    records: list[Record] = []
    async with StreamServer(ServeConfig(port=0, **config)) as server:
        server.subscribe(records.append)
        yield server, records


async def upgrade(
    port: int, host: str | None, headers: dict[str, str]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
    """A raw WebSocket handshake with exactly this Host (None: no Host line)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    ws_headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": generate_key(),
        "Sec-WebSocket-Version": "13",
        **headers,
    }
    writer.write(head("GET", "/stream", host, ws_headers))
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    return reader, writer, answer.decode("latin-1").split("\r\n")[0]


async def close_code(reader: asyncio.StreamReader) -> int:
    """The code of the server's close frame (frames before it are skipped)."""
    incoming = StreamReader()
    while True:
        parser = Frame.parse(incoming.read_exact, mask=False, max_size=None)
        while True:
            try:
                next(parser)
            except StopIteration as done:
                frame: Frame = done.value
                break
            data = await asyncio.wait_for(reader.read(65536), TIMEOUT)
            if not data:
                raise EOFError("the server closed the TCP stream without a close frame")
            incoming.feed_data(data)
        if frame.opcode is Opcode.CLOSE:
            return int(Close.parse(frame.data).code)


async def until(condition: Any, what: str = "condition") -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {TIMEOUT} s")
        await asyncio.sleep(0.01)


async def http_raw(port: int, request: bytes) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), TIMEOUT)
    writer.close()
    status, _, rest = answer.decode("latin-1").partition("\r\n")
    return int(status.split(" ")[1]), rest.partition("\r\n\r\n")[2]


# ---------------------------------------------------------------- 1. broken Host headers


@pytest.mark.parametrize("host", BROKEN_HOSTS)
@pytest.mark.parametrize("public_url", [None, "https://pub.example.app"])
def test_upgrade_with_a_broken_host_is_refused_1008_logged_and_counted(
    host: str | None, public_url: str | None
) -> None:
    async def scenario() -> None:
        async with serving(auth_token=TOKEN, public_url=public_url) as (server, records):
            signed = sign_headers("https://pub.example.app/stream", TOKEN if public_url else "x")
            reader, writer, status = await upgrade(server.port, host, signed)
            assert status.startswith("HTTP/1.1 101"), status
            if public_url:  # the Host header plays no part: a valid signature is accepted
                await until(lambda: server.streams or server.totals["rejected"])
                assert server.streams and not server.totals["rejected"]
                writer.close()
                return
            assert await close_code(reader) == 1008
            writer.close()
            assert server.totals["rejected"] == 1 and not server.streams
            (rejected,) = [r for r in records if r["event"] == "rejected"]
            assert "Host" in str(rejected["reason"]) and rejected["action"] == "closed 1008"

    run(scenario())


@pytest.mark.parametrize("host", BROKEN_HOSTS)
@pytest.mark.parametrize("path", ["/answer", "/status"])
def test_webhook_post_with_a_broken_host_gets_403_logged_and_counted(
    host: str | None, path: str
) -> None:
    async def scenario() -> None:
        async with serving(auth_token=TOKEN) as (server, records):
            body = b"CallUUID=abc&From=1"
            signed = sign_headers(f"http://127.0.0.1:{server.port}{path}", TOKEN)
            headers = {
                **signed,
                "Content-Type": "application/x-www-form-urlencoded",
                "Content-Length": str(len(body)),
            }
            status, _ = await http_raw(server.port, head("POST", path, host, headers) + body)
            assert status == 403
            assert server.totals["rejected"] == 1
            (rejected,) = [r for r in records if r["event"] == "rejected"]
            assert rejected["action"] == "HTTP 403"

    run(scenario())


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_target_urlsplit_cannot_parse_gets_no_500(method: str) -> None:
    async def scenario() -> None:
        async with serving(auth_token=TOKEN) as (server, _):
            headers = {"Content-Length": "0"} if method == "POST" else {}
            request = head(method, "http://[::1/answer", f"127.0.0.1:{server.port}", headers)
            status, _ = await http_raw(server.port, request)
            assert status in (403, 404)

    run(scenario())


def test_answer_without_token_ignores_a_broken_host() -> None:
    async def scenario() -> None:
        async with serving() as (server, _):
            status, body = await http_raw(server.port, head("GET", "/answer", "[::1", {}))
            assert status == 200
            assert f"ws://127.0.0.1:{server.port}/stream" in body and "[::1" not in body

    run(scenario())


# ---------------------------------------------------------------- 2. bounded per-stream state


@pytest.mark.parametrize(
    "count", [5_000, pytest.param(25_000, marks=pytest.mark.slow)], ids=["20k", "100k"]
)
def test_one_signed_stream_cannot_grow_serves_memory(tmp_path: Path, count: int) -> None:
    """Messages that each add something new (a DTMF "digit", a checkpoint name, a track name,
    played audio with no caller audio): the stream's collections, its recorder's stereo buffer
    and its snapshot stay under fixed bounds, and serve goes on serving."""

    def messages() -> Iterator[str]:
        for i in range(count):
            seq = 4 * i + 2
            yield Dtmf("stream-1", f"{i:05d}" * 20, sequence_number=seq).to_json()
            yield json.dumps({"event": "playedStream", "sequenceNumber": seq + 1,
                              "streamId": "stream-1", "name": f"name-{i}" * 30})  # fmt: skip
            yield Media("stream-1", f"track-{i}", "1", b"\x7f" * 2, i, seq + 2).to_json()
            yield Media("stream-1", "outbound", "1", b"\x7f" * 160, i, seq + 3).to_json()

    async def scenario() -> None:
        async with serving(auth_token=TOKEN, record_dir=tmp_path, stereo=True) as (server, _):
            signed = sign_headers(server.local_url, TOKEN)
            async with connect(server.local_url, additional_headers=signed) as ws:
                await ws.send(start_json())
                for message in messages():
                    await ws.send(message)
                await until(lambda: server.streams["stream-1"].session.stats.messages > 4 * count)
                live = server.streams["stream-1"]
                session, stats = live.session, live.session.stats
                assert len(stats.dtmf) <= 64 and len(session.confirmed_checkpoints) <= 64
                assert stats.dtmf_count == count and stats.checkpoints_confirmed == count
                assert len(stats.media_bytes) <= 10
                assert live.recorder.buffered_bytes <= 2 * 8000 * 2 * 61  # a minute, not 100+ s
                snapshot = json.dumps(server.snapshot())
                assert len(snapshot) < 16_000, len(snapshot)
                status, _ = await http_raw(server.port, head("GET", "/healthz", "h", {}))
                assert status == 200

    run(scenario(), timeout=120)


# ---------------------------------------------------------------- 3. a stalled stdout reader


def healthz_seconds(port: int) -> float:
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 200")
    return time.monotonic() - began


async def call_of(port: int, stream: str, frames: int) -> int:
    """A stream of `frames` media frames, closed by the client; the close code it got back."""
    media = b"\x7f" * 160
    async with connect(f"ws://127.0.0.1:{port}/stream") as ws:
        await ws.send(start_json(stream))
        for i in range(frames):
            await ws.send(Media(stream, "inbound", "1", media, i, i + 2).to_json())
    return ws.close_code or 0


def test_a_stdout_nobody_reads_stalls_nothing_and_drops_are_counted(tmp_path: Path) -> None:
    port = free_port()
    serve = pstream_process(
        "serve", "--port", str(port), "--json", "--media", "--record", str(tmp_path)
    )
    try:
        wait_for_port(port)
        # ~3.5 MB of feed lines into a stdout pipe no one reads (64 KB) and serve's buffer (1 MB)
        assert run(call_of(port, "flood", 20_000), timeout=60) == 1000
        took = max(healthz_seconds(port) for _ in range(5))
        assert took < 1.0, f"/healthz took {took:.2f} s"
        began = time.monotonic()
        assert run(call_of(port, "after", 50), timeout=10) == 1000  # a stream still works
        assert time.monotonic() - began < 2.0
        serve.send_signal(signal.SIGTERM)
        _, err = serve.communicate(timeout=10)
    finally:
        if serve.poll() is None:
            serve.kill()
    assert serve.returncode == 0, err
    assert "stdout is not read fast enough" in err
    (summary,) = [line for line in err.splitlines() if "pstream serve stopped" in line]
    lost = int(summary.split(", ")[-1].split(" ")[0])
    assert lost > 1000 and "output lines dropped" in summary
    with wave.open(str(next(tmp_path.glob("*after*.inbound.wav")))) as wav:
        assert wav.getnframes() == 50 * 160  # recordings never waited for stdout
    with wave.open(str(next(tmp_path.glob("*flood*.inbound.wav")))) as wav:
        assert wav.getnframes() == 20_000 * 160


def test_live_view_on_a_stopped_terminal_stalls_nothing(tmp_path: Path) -> None:
    """Ctrl-S on serve's terminal (XOFF: the tty stops taking output): the live view's redraws
    and status lines must not freeze the streams, /healthz or the exit."""
    port = free_port()
    master, slave = pty.openpty()
    attrs = termios.tcgetattr(slave)
    attrs[0] |= termios.IXON  # the terminal honours Ctrl-S / Ctrl-Q
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    env.pop("NO_COLOR", None)
    serve = subprocess.Popen(
        [sys.executable, "-m", "plivo_stream_cli", "serve", "--port", str(port),
         "--record", str(tmp_path)],
        stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT,
    )  # fmt: skip
    os.close(slave)
    reader = threading.Thread(target=_drain_until_stopped, args=(master,), daemon=True)
    try:
        wait_for_port(port)
        os.write(master, b"\x13")  # Ctrl-S
        time.sleep(0.1)
        reader.start()  # reads whatever the tty still lets through (nothing, once stopped)
        for n in range(3):
            assert run(call_of(port, f"s{n}", 100), timeout=10) == 1000
            took = max(healthz_seconds(port) for _ in range(3))
            assert took < 1.0, f"/healthz took {took:.2f} s"
            time.sleep(0.5)  # two redraws of the live view into the stopped terminal
        began = time.monotonic()
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=10)
        exit_took = time.monotonic() - began
    finally:
        if serve.poll() is None:
            serve.kill()
        with contextlib.suppress(OSError):
            os.write(master, b"\x11")  # Ctrl-Q
        os.close(master)
    assert serve.returncode == 0
    assert exit_took < 3.0, f"exit took {exit_took:.2f} s"
    assert len(list(tmp_path.glob("*.inbound.wav"))) == 3


def _drain_until_stopped(fd: int) -> None:
    with contextlib.suppress(OSError):
        while os.read(fd, 65536):
            pass


def test_spool_never_blocks_and_counts_what_it_drops() -> None:
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w") as target:
        out = Spool(target, limit=64 * 1024)  # type: ignore[arg-type]
        began = time.monotonic()
        for i in range(20_000):  # ~2 MB into a pipe no one reads
            out.write(f"line {i:06d} " + "x" * 90 + "\n")
        assert time.monotonic() - began < 1.0
        assert out.buffered <= 64 * 1024
        assert out.dropped_lines > 10_000
        dropped = out.close(timeout=0.2)
        written = 0
        os.set_blocking(read_end, False)
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(read_end, 1 << 20):
                written += chunk.count(b"\n")
    os.close(read_end)
    # Every line reached the reader or was counted; a write blocked when close gave up may
    # complete once the reader wakes (WRITE_BYTES of lines of 102 bytes counted twice at most).
    assert 20_000 <= dropped + written <= 20_000 + WRITE_BYTES // 102 + 1


# ---------------------------------------------------------------- 6. shutdown whatever the peers do


def raw_peer(
    port: int, *frames: str, path: str = "/stream", headers: dict[str, str] | None = None
) -> socket.socket:
    """A blocking client that upgrades, sends `frames`, and from then on never reads (so never
    answers the closing handshake either)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ws_headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": generate_key(),
        "Sec-WebSocket-Version": "13",
        **(headers or {}),
    }
    sock.sendall(head("GET", path, f"127.0.0.1:{port}", ws_headers))
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(1)  # byte by byte: no frame bytes are read past the head
    assert answer.startswith(b"HTTP/1.1 101"), answer
    sock.sendall(b"".join(masked_text(f) for f in frames))
    return sock


def test_sigterm_exits_within_2_s_with_peers_that_never_close(tmp_path: Path) -> None:
    port = free_port()
    greeting = tmp_path / "greeting.wav"
    write_wav(greeting, synth.tone(440, 30.0, 8000), 8000)  # 30 s to play: writes pile up
    record = tmp_path / "calls"
    serve = pstream_process(
        "serve", "--port", str(port), "--record", str(record), "--play", str(greeting),
        "--json", "--media",
    )  # fmt: skip
    peers: list[socket.socket] = []
    try:
        wait_for_port(port)
        media = [Media("stream-1", "inbound", "1", b"\x7f" * 160, i, i + 2).to_json()
                 for i in range(50)]  # fmt: skip
        peers.append(raw_peer(port, start_json(), *media))
        peers.append(socket.create_connection(("127.0.0.1", port)))  # never sends its request
        # a `tail` that subscribes to everything, media included, and never reads
        deadline = time.monotonic() + TIMEOUT
        while not (serves := statefile.live_serves()) and time.monotonic() < deadline:
            time.sleep(0.05)
        (entry,) = serves
        control_port = int(entry.control_url.rsplit(":", 1)[1].split("/")[0])
        monitor = json.dumps({"id": 1, "op": "monitor", "media": True})
        bearer = {"Authorization": f"Bearer {entry.token}"}
        peers.append(raw_peer(control_port, monitor, path="/control", headers=bearer))
        assert serve.stdout is not None
        seen = 0
        for line in serve.stdout:  # the feed shows every frame arrived
            record_ = json.loads(line)
            seen += record_["event"] == "media" and record_["dir"] == "in"
            if seen == 50:
                break
        began = time.monotonic()
        serve.send_signal(signal.SIGTERM)
        out, err = serve.communicate(timeout=30)
        took = time.monotonic() - began
    finally:
        for peer in peers:
            peer.close()
        if serve.poll() is None:
            serve.kill()
    assert serve.returncode == 0, err
    assert took < 2.0, f"serve took {took:.2f} s to exit"
    (closed,) = [json.loads(x) for x in out.splitlines() if '"event":"closed"' in x]
    (inbound,) = [f["path"] for f in closed["files"] if f["path"].endswith(".inbound.wav")]
    with wave.open(inbound) as wav:
        assert wav.getnframes() == 50 * 160
    print(f"SIGTERM to exit: {took:.2f} s")
