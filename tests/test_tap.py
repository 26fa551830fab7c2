"""`serve --upstream`: simulate -> serve (the tap) -> a bot written here, over real sockets."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from plivo_stream_cli import codec, synth
from plivo_stream_cli.adapters.control import ControlClient, Target, start_control
from plivo_stream_cli.adapters.server import ServeConfig, StreamServer
from plivo_stream_cli.adapters.simulator import SimulateConfig, run_call
from plivo_stream_cli.adapters.tap import (
    check_upstream,
    close_args,
    forwarded_headers,
    upstream_url,
)
from plivo_stream_cli.errors import UsageError
from plivo_stream_cli.feed import Record
from plivo_stream_cli.formats import MULAW_8K
from plivo_stream_cli.signature import NONCE_HEADER, SIGNATURE_HEADER, validate_v3
from tests.conftest import run

TOKEN = "tap-test-token"
REPLY = codec.encode(synth.tone(500, 0.2, 8000), MULAW_8K)  # one 200 ms chunk of the bot's reply


class Bot:
    """A voice bot: answers each caller utterance 500 ms after it ends (the built-in clip is
    speech, with shorter pauses between its words) with 1 s of audio and a checkpoint; when the
    caller talks over its reply, sends clearAudio. Keeps what it got."""

    def __init__(
        self,
        *,
        token: str | None = None,
        close_after: int | None = None,
        reply_after: float = 0.5,
    ) -> None:
        self.token = token
        self.close_after = close_after  # close (1000) after this many messages
        self.reply_after = reply_after
        self.received: list[str | bytes] = []
        self.requests: list[Request] = []
        self.refused = 0
        self.close_codes: list[int | None] = []
        self.sent: list[str] = []
        self.done = asyncio.Event()

    async def process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        self.requests.append(request)
        if self.token is None:
            return None
        url = f"http://{request.headers['Host']}{request.path}"
        headers = request.headers
        if validate_v3(url, headers.get(NONCE_HEADER), headers.get(SIGNATURE_HEADER), self.token):
            return None
        self.refused += 1
        return Response(403, "Forbidden", Headers([("Content-Length", "0")]), b"")

    async def handler(self, ws: ServerConnection) -> None:
        last_speech: float | None = None
        answered = True
        playing_until = 0.0
        cleared = False

        async def send(event: dict[str, Any]) -> None:
            text = json.dumps(event)
            self.sent.append(text)
            await ws.send(text)

        async def watch() -> None:
            nonlocal answered, playing_until, cleared
            while True:
                await asyncio.sleep(0.01)
                now = time.monotonic()
                quiet = last_speech is not None and now - last_speech > self.reply_after
                if not answered and quiet:
                    answered, cleared = True, False
                    for _ in range(5):
                        payload = base64.b64encode(REPLY).decode()
                        await send(
                            {
                                "event": "playAudio",
                                "media": {
                                    "contentType": "audio/x-mulaw",
                                    "sampleRate": 8000,
                                    "payload": payload,
                                },
                            }
                        )
                    await send({"event": "checkpoint", "streamId": sid, "name": "reply-end"})
                    playing_until = now + 1.0

        sid = ""
        watcher = asyncio.ensure_future(watch())
        try:
            async for message in ws:
                self.received.append(message)
                if self.close_after is not None and len(self.received) >= self.close_after:
                    await ws.close(1000, "bot done")
                    break
                event = json.loads(message)
                if event["event"] == "start":
                    sid = event["start"]["streamId"]
                if event["event"] != "media":
                    continue
                pcm = codec.decode(base64.b64decode(event["media"]["payload"]), MULAW_8K)
                if codec.level_dbfs(pcm) > -50:
                    now = time.monotonic()
                    if now < playing_until and not cleared:
                        cleared = True
                        playing_until = 0.0
                        await send({"event": "clearAudio", "streamId": sid})
                    last_speech, answered = now, False
        except ConnectionClosed:
            pass
        finally:
            watcher.cancel()
            self.close_codes.append(ws.close_code)
            self.done.set()


@asynccontextmanager
async def bot_serving(bot: Bot) -> AsyncIterator[str]:
    async with serve(
        bot.handler, "127.0.0.1", 0, process_request=bot.process_request, compression=None
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/ws"


@asynccontextmanager
async def tap(upstream: str, **options: Any) -> AsyncIterator[tuple[StreamServer, list[Record]]]:
    records: list[Record] = []
    async with StreamServer(ServeConfig(port=0, upstream=upstream, **options)) as server:
        server.subscribe(records.append)
        yield server, records


def simulate(url: str, **options: Any) -> SimulateConfig:
    options.setdefault("linger", 1.5)
    return SimulateConfig(url=url, audio=synth.default_caller_audio(MULAW_8K), **options)


def of(records: list[Record], event: str) -> list[Record]:
    return [r for r in records if r["event"] == event]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- end to end


def test_the_bot_gets_what_simulate_sent_and_the_caller_gets_the_bot(tmp_path: Path) -> None:
    async def scenario() -> None:
        bot = Bot(token=TOKEN)
        async with (
            bot_serving(bot) as bot_url,
            tap(bot_url, auth_token=TOKEN, record_dir=tmp_path, stereo=True) as (server, records),
        ):
            plain: list[Record] = []
            server.subscribe(plain.append, media=False)
            config = simulate(
                server.local_url + "?userId=7", auth_token=TOKEN, extra_headers="a=1;b=two"
            )
            report = await run_call(config)
            await asyncio.wait_for(bot.done.wait(), 5)
        # the signature-checking bot accepted serve's signature of the upstream URL
        assert bot.refused == 0
        request = bot.requests[0]
        assert request.path == "/ws?userId=7"
        assert request.headers["X-Forwarded-For"] == "127.0.0.1"
        # the bot received exactly the caller's messages: start with its fields, every frame
        events = [json.loads(m) for m in bot.received]
        start = events[0]
        assert start["event"] == "start"
        assert start["start"]["callId"] == config.call_id
        assert start["extra_headers"] == "a=1;b=two"
        media = [e for e in events if e["event"] == "media"]
        assert len(media) == report.frames_sent
        sent_audio = b"".join(base64.b64decode(e["media"]["payload"]) for e in media)
        # the clip, then the line's silence while the caller lingers
        assert sent_audio.startswith(config.audio) and len(sent_audio) > len(config.audio)
        assert set(sent_audio[len(config.audio) :]) == {0xFF}
        assert [e["sequenceNumber"] for e in events] == sorted(e["sequenceNumber"] for e in events)
        # the caller heard the bot and confirmed its checkpoint, which reached the bot
        assert report.received_audio == REPLY * 5
        assert report.checkpoints_confirmed == ["reply-end"]
        assert any(e["event"] == "playedStream" and e["name"] == "reply-end" for e in events)
        assert report.close_code == 1000 and not report.violations
        # the recording holds both directions exactly
        stem = f"{config.call_id}_{config.stream_id}"
        inbound = _wav(tmp_path / f"{stem}.inbound.wav")
        outbound = _wav(tmp_path / f"{stem}.outbound.wav")
        assert inbound == codec.decode(sent_audio, MULAW_8K)
        assert outbound == codec.decode(REPLY * 5, MULAW_8K)
        assert (tmp_path / f"{stem}.call.wav").exists()
        capture = [json.loads(line) for line in (tmp_path / f"{stem}.jsonl").open()]
        assert sum(1 for c in capture if c["dir"] == "in" and c["msg"]["event"] == "media") == len(
            media
        )
        assert [c["msg"] for c in capture if c["dir"] == "out"] == [json.loads(t) for t in bot.sent]
        # the feed shows both directions and the latency of the turn
        assert of(records, "upstream")[0]["state"] == "connected"
        assert len(of(records, "playAudio")) == 5
        # a reply's later chunks are per-frame records: not for the live view and plain lines
        assert [r.get("continues") for r in of(records, "playAudio")] == [None] + [True] * 4
        assert len(of(plain, "playAudio")) == 1
        closed = of(records, "closed")[0]
        assert closed["upstream"] == "connected"
        measured = closed["metrics"]
        first = measured["first_audio_ms"]
        assert first["count"] == 1
        # the bot answers 500 ms after the caller's last speech frame (plus its 10 ms tick)
        assert 490 <= first["max"] <= 620, first
        assert measured["checkpoint_ms"]["count"] == 1
        assert report_first_audio(report) == pytest.approx(first["max"], abs=40)

    run(scenario())


def test_a_tapped_capture_replays_against_the_bot_directly(tmp_path: Path) -> None:
    from plivo_stream_cli.adapters.replay import ReplayConfig, run_replay

    async def scenario() -> None:
        bot = Bot()
        async with bot_serving(bot) as bot_url:
            async with tap(bot_url, record_dir=tmp_path) as (server, _):
                config = simulate(server.local_url, linger=0.8)
                original = await run_call(config)
            (capture,) = tmp_path.glob("*.jsonl")
            again = await run_replay(ReplayConfig(url=bot_url, capture=capture, linger=0.8))
        # every captured frame again, then the line's silence while lingering (0.8 s)
        assert original.frames_sent <= again.frames_sent <= original.frames_sent + 41
        assert again.received_audio == REPLY * 5  # the bot answered the replayed caller too

    run(scenario())


def report_first_audio(report: Any) -> float:
    from plivo_stream_cli.metrics import first_audio_ms

    value = first_audio_ms(report)
    assert value is not None
    return value


def _wav(path: Path) -> bytes:
    with wave.open(str(path)) as wav:
        return wav.readframes(wav.getnframes())


def test_barge_in_to_clear_audio_is_measured_from_the_tapped_traffic() -> None:
    async def scenario() -> None:
        bot = Bot()
        async with bot_serving(bot) as bot_url, tap(bot_url) as (server, records):
            report = await run_call(simulate(server.local_url, barge_in_at=0.3, linger=0.5))
        assert report.clears == 1, (report.warnings, report.timeline, bot.sent[-1][:80])
        from plivo_stream_cli.metrics import clear_ms

        simulated = clear_ms(report)
        assert simulated is not None
        tapped = of(records, "closed")[0]["metrics"]["clear_ms"]
        assert tapped["count"] == 1
        # the tap sees the caller's frame a little after simulate sent it, the clear a little
        # before simulate receives it: the two agree within a few ms
        assert tapped["max"] == pytest.approx(simulated, abs=25)
        turns = of(records, "latency")
        assert any(t.get("clear_ms") is not None for t in turns)

    run(scenario())


def test_an_injected_clear_reaches_the_caller_as_if_the_bot_sent_it() -> None:
    async def scenario() -> None:
        bot = Bot()
        async with bot_serving(bot) as bot_url, tap(bot_url) as (server, records):
            control = await start_control(server)
            try:
                target = Target(control.url, control.token, "t")
                call = asyncio.ensure_future(run_call(simulate(server.local_url, linger=1.0)))
                while not of(records, "playAudio"):
                    await asyncio.sleep(0.01)
                async with ControlClient(target) as client:
                    reply = await client.request("clear")
                    assert reply.get("ok"), reply
                report = await call
            finally:
                await control.close()
            await asyncio.wait_for(bot.done.wait(), 5)
        assert report.clears == 1, (report.clears, report.timeline)  # the bot never cleared
        assert len(report.played_audio) < len(REPLY * 5)  # the rest was dropped
        events = [json.loads(m)["event"] for m in bot.received]
        assert "clearedAudio" in events  # the bot learns its audio was dropped
        assert "clearAudio" in [r["event"] for r in records if r["dir"] == "out"]

    run(scenario())


def test_injected_checkpoint_is_confirmed_to_the_tap_but_not_passed_to_the_bot() -> None:
    async def scenario() -> None:
        bot = Bot()
        async with bot_serving(bot) as bot_url, tap(bot_url) as (server, records):
            call = asyncio.ensure_future(run_call(simulate(server.local_url, linger=2.0)))
            while not server.streams or not next(iter(server.streams.values())).session.start:
                await asyncio.sleep(0.01)
            live = next(iter(server.streams.values()))
            await live.send_checkpoint("pstream-mark")
            report = await call
            await asyncio.wait_for(bot.done.wait(), 5)
        assert "pstream-mark" in report.checkpoints_confirmed
        played = [r for r in of(records, "playedStream") if r["name"] == "pstream-mark"]
        assert played  # serve saw it
        names = [json.loads(m).get("name") for m in bot.received]
        assert "pstream-mark" not in names
        assert "reply-end" in names  # the bot's own confirmation was passed on

    run(scenario())


def test_a_bot_with_another_token_refuses_and_the_caller_is_told_why() -> None:
    async def scenario() -> None:
        bot = Bot(token="some-other-token")
        async with (
            bot_serving(bot) as bot_url,
            tap(bot_url, auth_token=TOKEN) as (
                server,
                records,
            ),
        ):
            report = await run_call(simulate(server.local_url, auth_token=TOKEN, linger=0.5))
        assert bot.refused == 1
        assert report.close_code == 1011
        assert report.close_reason == "upstream: HTTP 403 Forbidden"
        failed = of(records, "upstream")[0]
        assert failed["state"] == "failed" and failed["reason"] == "HTTP 403 Forbidden"
        # nothing already received is lost: the start still reached the feed
        assert of(records, "start")

    run(scenario())


def test_a_down_bot_is_reported_in_one_line_and_closes_the_caller(tmp_path: Path) -> None:
    async def scenario() -> None:
        url = f"ws://127.0.0.1:{free_port()}/ws"
        async with tap(url, record_dir=tmp_path) as (server, records):
            report = await run_call(simulate(server.local_url, linger=0.5))
        assert report.close_code == 1011
        assert report.close_reason == "upstream: connection refused"
        failed = of(records, "upstream")[0]
        assert failed["reason"] == "connection refused"
        assert failed["action"] == "closed 1011"
        closed = of(records, "closed")[0]
        assert closed["upstream"] == "failed: connection refused"
        assert [f for f in closed["files"] if f["path"].endswith(".jsonl")]

    run(scenario())


def test_a_signature_failure_reaches_no_bot() -> None:
    async def scenario() -> None:
        bot = Bot()
        async with bot_serving(bot) as bot_url, tap(bot_url, auth_token=TOKEN) as (server, _):
            report = await run_call(simulate(server.local_url, auth_token="wrong", linger=0.2))
        assert report.close_code == 1008
        assert bot.requests == []

    run(scenario())


def test_a_bot_that_closes_mid_call_closes_the_caller_the_same_way() -> None:
    async def scenario() -> None:
        bot = Bot(close_after=10)
        async with bot_serving(bot) as bot_url, tap(bot_url) as (server, records):
            report = await run_call(simulate(server.local_url, linger=1))
        assert report.close_code == 1000
        assert report.close_reason == "bot done"
        assert report.closed_by_server
        closed = of(records, "upstream")[-1]
        assert closed["state"] == "closed" and closed["code"] == 1000
        assert of(records, "closed")[0]["upstream"].startswith("closed by the bot")

    run(scenario())


def test_a_bot_that_never_answers_the_upgrade_times_out() -> None:
    import socket

    async def scenario() -> None:
        with socket.socket() as silent:  # accepts TCP (backlog) but never answers HTTP
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            url = f"ws://127.0.0.1:{silent.getsockname()[1]}/ws"
            async with tap(url, upstream_timeout=0.3) as (server, records):
                report = await run_call(simulate(server.local_url, linger=0.3))
        assert report.close_code == 1011
        assert report.close_reason == "upstream: timed out after 0.3 s"
        assert of(records, "upstream")[0]["reason"] == "timed out after 0.3 s"

    run(scenario())


def test_the_callers_hang_up_reaches_the_bot() -> None:
    async def scenario() -> None:
        bot = Bot()
        async with bot_serving(bot) as bot_url, tap(bot_url) as (server, _):
            await run_call(simulate(server.local_url, linger=0.2))
            await asyncio.wait_for(bot.done.wait(), 5)
        assert bot.close_codes == [1000]

    run(scenario())


def test_messages_pass_byte_for_byte_in_order_both_ways() -> None:
    """Odd spacing, unicode, unknown events, a binary frame: all reach the bot unchanged."""
    received: list[str | bytes] = []
    back: list[str | bytes] = [
        '{"event":"playAudio" , "media":{"contentType":"audio/x-mulaw","sampleRate":8000,'
        '"payload":"AAAA"}}',
        b"\x00\x01binary",
        '{"event": "sendDTMF", "dtmf": "12"}',
    ]

    async def handler(ws: ServerConnection) -> None:
        first = await ws.recv()
        received.append(first)
        for message in back:
            await ws.send(message)
        async for message in ws:
            received.append(message)

    async def scenario() -> list[str | bytes]:
        async with serve(handler, "127.0.0.1", 0) as bot:
            port = next(iter(bot.sockets)).getsockname()[1]
            async with tap(f"ws://127.0.0.1:{port}/") as (server, _):
                sent: list[str | bytes] = [
                    '{"event":"start","sequenceNumber":1,"start":{"callId":"c","streamId":"s",'
                    '"accountId":"MA","tracks":["inbound"],"mediaFormat":{"encoding":'
                    '"audio/x-mulaw","sampleRate":8000}},"extra_headers":"é=ü"}',
                    '{ "event" : "media", "sequenceNumber": 2, "streamId": "s", "media": '
                    '{"track":"inbound","timestamp":"1","chunk":1,"payload":"////"}}',
                    '{"event":"mystery","x":[1,2]}',
                    b"\xff\xfe",
                    "not json at all",
                ]
                got: list[str | bytes] = []
                async with connect(server.local_url, proxy=None) as ws:
                    for message in sent:
                        await ws.send(message)
                    for _ in back:
                        got.append(await ws.recv())
                    await asyncio.sleep(0.2)
                assert got == back
                return sent

    sent = run(scenario())
    assert received == sent


def test_a_fragmented_message_and_a_ping_from_the_bot_are_handled() -> None:
    pong: list[float] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()  # the start
        await ws.send(['{"event":"sendDTMF",', '"dtmf":"1"}'])  # two fragments
        latency = await ws.ping()
        pong.append(await asyncio.wait_for(latency, 5))
        await ws.send(b"\x01" * 70000)  # over 64 KiB: several TCP reads
        async for _ in ws:
            pass

    async def scenario() -> list[str | bytes]:
        async with serve(handler, "127.0.0.1", 0) as bot:
            port = next(iter(bot.sockets)).getsockname()[1]
            async with tap(f"ws://127.0.0.1:{port}/") as (server, _):
                async with connect(server.local_url, proxy=None) as ws:
                    await ws.send(
                        '{"event":"start","sequenceNumber":1,"start":{"callId":"c",'
                        '"streamId":"s","accountId":"MA","tracks":["inbound"],"mediaFormat":'
                        '{"encoding":"audio/x-mulaw","sampleRate":8000}},"extra_headers":""}'
                    )
                    return [await ws.recv(), await ws.recv()]

    got = run(scenario())
    assert got == ['{"event":"sendDTMF","dtmf":"1"}', b"\x01" * 70000]
    assert len(pong) == 1  # the tap answered the bot's ping


# ---------------------------------------------------------------- pieces


def test_upstream_urls_are_checked() -> None:
    assert check_upstream("ws://127.0.0.1:8765/ws") == "ws://127.0.0.1:8765/ws"
    assert check_upstream("wss://bot.example.com") == "wss://bot.example.com"
    for bad in ("http://x/ws", "ws://", "127.0.0.1:8765", "ws://h:notaport/"):
        with pytest.raises(UsageError):
            check_upstream(bad)


def test_plivos_query_is_appended_to_the_upstream_url() -> None:
    assert upstream_url("ws://b:1/ws", "/stream?a=1") == "ws://b:1/ws?a=1"
    assert upstream_url("ws://b:1/ws?k=v", "/stream?a=1") == "ws://b:1/ws?k=v&a=1"
    assert upstream_url("ws://b:1", "/stream") == "ws://b:1/"


def test_forwarded_headers_are_resigned_for_the_upstream_url() -> None:
    raw = [
        ("Host", "abc.ngrok.app"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Key", "k"),
        (SIGNATURE_HEADER, "old"),
        (NONCE_HEADER, "1"),
        ("X-Custom", "kept"),
    ]
    url = "ws://127.0.0.1:9/ws?a=1"
    headers = dict(
        forwarded_headers(
            raw, url=url, remote="10.0.0.1:5", auth_token=TOKEN, public_url="https://abc.ngrok.app"
        )
    )
    assert "Host" not in headers and "Sec-WebSocket-Key" not in headers
    assert headers["X-Custom"] == "kept"
    assert validate_v3(url, headers[NONCE_HEADER], headers[SIGNATURE_HEADER], TOKEN)
    assert headers["X-Forwarded-Proto"] == "https"
    assert headers["X-Forwarded-Host"] == "abc.ngrok.app"
    assert headers["X-Forwarded-For"] == "10.0.0.1"


def test_close_codes_that_cannot_be_sent_become_normal_ones() -> None:
    assert close_args(1000, "bye", "x") == (1000, "bye")
    assert close_args(4001, "custom", "x") == (4001, "custom")
    assert close_args(1006, None, "went away") == (1001, "went away")
    assert close_args(1005, None, "x") == (1000, "")
    assert close_args(None, None, "gone") == (1001, "gone")


# ---------------------------------------------------------------- the command


def test_serve_upstream_from_the_command_line_reports_latency_at_exit() -> None:
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT, pstream_process, serving_in_thread, wait_for_port

    bot = Bot(token=TOKEN)

    @asynccontextmanager
    async def open_bot() -> AsyncIterator[str]:
        async with bot_serving(bot) as url:
            yield url

    with serving_in_thread(open_bot) as bot_url:
        port = free_port()
        serve_proc = pstream_process(
            "serve", "--port", str(port), "--json", "--upstream", bot_url,
            env={"PLIVO_AUTH_TOKEN": TOKEN},
        )  # fmt: skip
        try:
            wait_for_port(port)
            done = subprocess.run(
                [sys.executable, "-m", "plivo_stream_cli", "simulate",
                 f"ws://127.0.0.1:{port}/stream", "--linger", "1"],
                capture_output=True, text=True, timeout=60, cwd=ROOT,
                env={"PLIVO_AUTH_TOKEN": TOKEN, "PATH": "/usr/bin:/bin", "NO_COLOR": "1"},
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
        finally:
            serve_proc.send_signal(signal.SIGTERM)
            out, err = serve_proc.communicate(timeout=60)
    assert serve_proc.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["state"] for r in records if r["event"] == "upstream"] == ["connected"]
    assert any(r["event"] == "latency" and r.get("first_audio_ms") for r in records)
    assert "passing every stream through to your bot at " + bot_url in err
    assert "latency of the bot, per stream" in err and "first audio" in err
    assert TOKEN not in out + err
    assert bot.refused == 0


def test_serve_upstream_with_workers_covers_every_stream() -> None:
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT, pstream_process, serving_in_thread, wait_for_port

    bot = Bot()

    @asynccontextmanager
    async def open_bot() -> AsyncIterator[str]:
        async with bot_serving(bot) as url:
            yield url

    with serving_in_thread(open_bot) as bot_url:
        port = free_port()
        serve_proc = pstream_process(
            "serve", "--port", str(port), "--workers", "2", "--upstream", bot_url
        )
        try:
            wait_for_port(port)
            time.sleep(1.0)  # the worker binds too
            for _ in range(3):
                done = subprocess.run(
                    [sys.executable, "-m", "plivo_stream_cli", "simulate",
                     f"ws://127.0.0.1:{port}/stream", "--linger", "0.5"],
                    capture_output=True, text=True, timeout=60, cwd=ROOT,
                    env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1"},
                )  # fmt: skip
                assert done.returncode == 0, done.stderr
        finally:
            serve_proc.send_signal(signal.SIGTERM)
            _, err = serve_proc.communicate(timeout=60)
    assert serve_proc.returncode == 0, err
    assert "stopped: 3 streams" in err
    summary = err.split("latency of the bot, per stream")[1]
    assert summary.count("first audio") == 3, err


def test_bad_upstream_flags_are_one_error_line_and_exit_2() -> None:
    from typer.testing import CliRunner

    from plivo_stream_cli.cli import app

    runner = CliRunner()
    for args, says in (
        (["--upstream", "http://127.0.0.1:8765/ws"], "ws:// or wss://"),
        (["--upstream", "ws://127.0.0.1:8765/ws", "--echo"], "--echo would talk over it"),
        (["--upstream", "ws://127.0.0.1:8765/ws", "--upstream-timeout", "0"], "above 0"),
    ):
        result = runner.invoke(app, ["serve", *args])
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], lines
