"""The simulator's connection (the sans-I/O `ClientLink`) and its shared pacer, over real sockets:
proxies, the upgrade's headers, timeouts, messages sent before the call listens, and the pacing
of many calls on one timer."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import USER_AGENT

from plivo_stream_cli.adapters import clientlink, simulator
from plivo_stream_cli.adapters.simulator import SimulateConfig, run_call, run_calls
from plivo_stream_cli.errors import NetworkError
from plivo_stream_cli.events import PlayAudio
from plivo_stream_cli.formats import L16_16K, MULAW_8K
from tests.conftest import run


@pytest.fixture
def proxy_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """A clean proxy configuration, read afresh (the link reads it once per process)."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ws_proxy", "wss_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    clientlink._proxies.cache_clear()
    clientlink.proxy_for.cache_clear()
    yield monkeypatch
    clientlink._proxies.cache_clear()
    clientlink.proxy_for.cache_clear()


async def _splice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def connect_proxy(seen: list[str], answer: bytes | None = None) -> tuple[asyncio.Server, int]:
    """An HTTP proxy that tunnels `CONNECT` (or answers `answer` and hangs up)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        seen.append(head)
        if answer is not None:
            writer.write(answer)
            await writer.drain()
            writer.close()
            return
        target = head.split()[1]
        host, _, port = target.rpartition(":")
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(_splice(reader, up_writer), _splice(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def recorder(ws: ServerConnection, got: list[dict[str, Any]]) -> None:
    async for message in ws:
        got.append(json.loads(message))


def test_a_call_goes_through_the_configured_http_proxy(proxy_env: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    got: list[dict[str, Any]] = []

    async def scenario() -> Any:
        proxy, proxy_port = await connect_proxy(seen)
        proxy_env.setenv("http_proxy", f"http://user:pa%3Ass@127.0.0.1:{proxy_port}")
        async with proxy, serve(lambda ws: recorder(ws, got), "127.0.0.1", 0) as bot:
            port = next(iter(bot.sockets)).getsockname()[1]
            config = SimulateConfig(url=f"ws://127.0.0.1:{port}/s", audio=b"\xff" * 480, speed=20)
            config.linger = 0
            return await run_call(config), port

    report, port = run(scenario())
    (head,) = seen
    assert head.startswith(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n")
    assert "Proxy-Authorization: Basic dXNlcjpwYTpzcw==" in head  # user:pa:ss
    assert [m["event"] for m in got] == ["start", "media", "media", "media"]
    assert report.frames_sent == 3 and report.close_code == 1000


def test_no_proxy_bypasses_the_proxy(proxy_env: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    async def scenario() -> Any:
        proxy, proxy_port = await connect_proxy(seen)
        proxy_env.setenv("http_proxy", f"http://127.0.0.1:{proxy_port}")
        proxy_env.setenv("no_proxy", "127.0.0.1")
        async with proxy, serve(lambda ws: recorder(ws, []), "127.0.0.1", 0) as bot:
            port = next(iter(bot.sockets)).getsockname()[1]
            return await run_call(SimulateConfig(url=f"ws://127.0.0.1:{port}/s", linger=0))

    assert run(scenario()).close_code == 1000 and seen == []


def test_a_proxy_that_refuses_is_a_one_line_handshake_error(
    proxy_env: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> None:
        answer = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"
        proxy, proxy_port = await connect_proxy([], answer)
        proxy_env.setenv("http_proxy", f"http://127.0.0.1:{proxy_port}")
        async with proxy:
            await run_call(SimulateConfig(url="ws://127.0.0.1:9/s", linger=0))

    with pytest.raises(NetworkError, match="handshake failed: proxy rejected connection: HTTP 407"):
        run(scenario())


def test_the_upgrade_says_websockets_user_agent_and_no_extensions() -> None:
    seen: dict[str, str] = {}

    async def bot(ws: ServerConnection) -> None:
        assert ws.request is not None
        seen.update((k.lower(), v) for k, v in ws.request.headers.raw_items())
        await recorder(ws, [])

    async def scenario() -> None:
        async with serve(bot, "127.0.0.1", 0, compression=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            await run_call(SimulateConfig(url=f"ws://127.0.0.1:{port}/s", linger=0))

    run(scenario())
    assert seen["user-agent"] == USER_AGENT
    assert "sec-websocket-extensions" not in seen  # no compression, as before


def test_a_server_that_never_answers_the_upgrade_times_out() -> None:
    async def scenario() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            config = SimulateConfig(url=f"ws://127.0.0.1:{port}/s", open_timeout=0.3)
            await run_call(config)

    with pytest.raises(NetworkError, match=r"cannot connect to .*: timed out"):
        run(scenario())


def test_what_the_bot_sends_right_after_the_upgrade_is_not_lost() -> None:
    """A bot that speaks first (before `start`): its message arrives with the 101 answer,
    before the call listens, and must still count."""

    async def bot(ws: ServerConnection) -> None:
        await ws.send(PlayAudio(MULAW_8K, b"\xff" * 160).to_json())
        await recorder(ws, [])

    async def scenario() -> Any:
        async with serve(bot, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            config = SimulateConfig(url=f"ws://127.0.0.1:{port}/s", audio=b"\xff" * 320)
            config.linger = 0.1
            return await run_call(config)

    report = run(scenario())
    assert report.play_messages == 1 and bytes(report.received_audio) == b"\xff" * 160


def test_many_calls_share_the_pacer_and_keep_their_own_deadlines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """40 calls of 0.4 s: every frame is sent, each call's lateness is measured against its own
    deadlines, and the one timer wakes far fewer times than frames were sent (calls on the same
    1 ms grid point share a wake) while the calls still start at different points."""
    wakes = 0
    wake = simulator.Pacer._wake

    def counting(self: simulator.Pacer) -> None:
        nonlocal wakes
        wakes += 1
        wake(self)

    monkeypatch.setattr(simulator.Pacer, "_wake", counting)
    starts: list[float] = []
    init = simulator.PlivoCall.__init__

    def recording(self: simulator.PlivoCall, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        starts.append(self.t0)

    monkeypatch.setattr(simulator.PlivoCall, "__init__", recording)
    got: list[dict[str, Any]] = []

    async def scenario() -> Any:
        async with serve(lambda ws: recorder(ws, got), "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            url = f"ws://127.0.0.1:{port}/s"
            configs = [SimulateConfig(url=url, audio=b"\xff" * 160 * 20) for _ in range(40)]
            for config in configs:
                config.linger = 0
            return await run_calls(configs, concurrency=40)

    reports = run(scenario())
    assert [r.frames_sent for r in reports] == [20] * 40
    assert sum(m["event"] == "media" for m in got) == 800
    assert all(len(r.pacing_late_ms) == 20 for r in reports)
    assert wakes < 800 / 2, wakes
    assert all(abs(t * 1000 - round(t * 1000)) < 1e-6 for t in starts)  # on the 1 ms grid
    assert len(set(starts)) > 1


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """A self-signed certificate for 127.0.0.1 that the simulator trusts; the server's context."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    trusting = ssl.create_default_context(cafile=str(cert))
    monkeypatch.setattr(clientlink, "_default_context", lambda: trusting)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    return server


@pytest.mark.parametrize("through_proxy", [False, True])
def test_wss_directly_and_through_an_http_proxy(
    tls: ssl.SSLContext, proxy_env: pytest.MonkeyPatch, through_proxy: bool
) -> None:
    seen: list[str] = []
    got: list[dict[str, Any]] = []

    async def scenario() -> Any:
        proxy, proxy_port = await connect_proxy(seen)
        if through_proxy:
            proxy_env.setenv("https_proxy", f"http://127.0.0.1:{proxy_port}")
        async with proxy, serve(lambda ws: recorder(ws, got), "127.0.0.1", 0, ssl=tls) as bot:
            port = next(iter(bot.sockets)).getsockname()[1]
            config = SimulateConfig(url=f"wss://127.0.0.1:{port}/s", audio=b"\xff" * 320)
            config.linger = 0
            return await run_call(config)

    report = run(scenario())
    assert [m["event"] for m in got] == ["start", "media", "media"]
    assert report.close_code == 1000
    assert len(seen) == (1 if through_proxy else 0)


def test_a_server_that_stops_reading_loses_no_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server reads nothing for 0.6 s, through 4 KB socket buffers: the simulator's write
    buffer fills (pause_writing), the next frames wait for it to drain, none is lost or
    reordered, and the wait shows as pacing lateness."""
    paused = 0
    pause = clientlink.ClientLink.pause_writing

    def counting(self: clientlink.ClientLink) -> None:
        nonlocal paused
        paused += 1
        pause(self)

    monkeypatch.setattr(clientlink.ClientLink, "pause_writing", counting)
    made = clientlink.ClientLink.connection_made

    def small_buffer(self: clientlink.ClientLink, transport: asyncio.BaseTransport) -> None:
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        made(self, transport)

    monkeypatch.setattr(clientlink.ClientLink, "connection_made", small_buffer)
    got: list[dict[str, Any]] = []

    async def bot(ws: ServerConnection) -> None:
        await asyncio.sleep(0.6)
        await recorder(ws, got)

    async def scenario() -> Any:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.bind(("127.0.0.1", 0))
        async with serve(bot, sock=sock, max_queue=1) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            audio = b"\x01\x02" * 16000 * 20  # 20 s of L16 at 16 kHz: 1000 frames of 640 bytes
            config = SimulateConfig(url=f"ws://127.0.0.1:{port}/s", audio=audio, speed=50)
            config.media_format = L16_16K
            config.linger = 0
            return await run_call(config)

    report = run(scenario())
    assert paused > 0
    media = [m for m in got if m["event"] == "media"]
    assert len(media) == report.frames_sent == 1000
    assert [m["sequenceNumber"] for m in got] == list(range(1, len(got) + 1))
    assert [m["media"]["chunk"] for m in media] == list(range(1, 1001))
    assert max(report.pacing_late_ms) > 100  # the frames that waited went late, and say so


def test_a_send_after_the_server_closed_raises_connection_closed_while_closing() -> None:
    """The server's close frame arrived, its TCP connection is still open (closing, not
    closed): a send raises ConnectionClosed, as websockets' own `send` does, not an error."""
    from websockets.exceptions import ConnectionClosed
    from websockets.http11 import Request
    from websockets.protocol import State
    from websockets.server import ServerProtocol

    from plivo_stream_cli.adapters.clientlink import open_link

    async def scenario() -> None:
        held: list[asyncio.StreamWriter] = []

        async def upgrade_and_close(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            protocol = ServerProtocol()
            requests: list[Request] = []
            while not requests:
                protocol.receive_data(await reader.read(65536))
                requests = [e for e in protocol.events_received() if isinstance(e, Request)]
            protocol.send_response(protocol.accept(requests[0]))
            protocol.send_close(1008, "invalid signature")
            for data in protocol.data_to_send():
                writer.write(data)
            held.append(writer)  # the TCP connection stays open: the client is closing

        server = await asyncio.start_server(upgrade_and_close, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        link = await open_link(
            f"ws://127.0.0.1:{port}/s", None, headers=[], user_agent=None, timeout=5, max_size=None
        )
        while link.ws.state is State.OPEN:
            await asyncio.sleep(0.01)
        assert link.ws.state is State.CLOSING
        with pytest.raises(ConnectionClosed) as closed:
            link.send("hello")
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        link.abort()
        for writer in held:
            writer.close()
        server.close()

    run(scenario())
