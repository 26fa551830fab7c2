"""The control channel over real sockets: token checks, ops, monitors, and finding a serve."""

from __future__ import annotations

import asyncio
import base64
import json
import stat
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from plivo_stream_cli import codec, synth
from plivo_stream_cli.adapters import statefile
from plivo_stream_cli.adapters.control import (
    ControlClient,
    ControlRequestError,
    ControlServer,
    Target,
    encode_play,
    find_serve,
    start_control,
)
from plivo_stream_cli.adapters.server import ServeConfig, StreamServer
from plivo_stream_cli.adapters.simulator import SimulateConfig, run_call
from plivo_stream_cli.callreport import CallReport
from plivo_stream_cli.errors import ConfigError, UsageError
from plivo_stream_cli.feed import Record
from plivo_stream_cli.formats import MULAW_8K
from tests.conftest import run


@pytest.fixture(autouse=True)
def isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "state"
    monkeypatch.setenv(statefile.STATE_DIR_ENV, str(directory))
    return directory


class Feed:
    """Every record the server publishes, with a way to wait for one."""

    def __init__(self, server: StreamServer) -> None:
        self.records: list[Record] = []
        self._changed = asyncio.Event()
        server.subscribe(self._on_record, media=True)

    def _on_record(self, record: Record) -> None:
        self.records.append(record)
        self._changed.set()

    async def wait_for(self, match: Callable[[Record], bool], count: int = 1) -> Record:
        async def scan() -> Record:
            while True:
                found = [r for r in self.records if match(r)]
                if len(found) >= count:
                    return found[count - 1]
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(scan(), 15)

    def events(self, direction: str | None = None) -> list[str]:
        return [r["event"] for r in self.records if direction in (None, r["dir"])]


def event(name: str, direction: str | None = None) -> Callable[[Record], bool]:
    return lambda r: r["event"] == name and direction in (None, r["dir"])


@asynccontextmanager
async def serving(**options: Any) -> AsyncIterator[tuple[StreamServer, ControlServer, Feed]]:
    async with StreamServer(ServeConfig(port=0, **options)) as server:
        feed = Feed(server)
        control = await start_control(server)
        try:
            yield server, control, feed
        finally:
            await server.close()
            await control.close()


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()  # an open socket would hold the server's shutdown
        return exc.code


def target(control: ControlServer) -> Target:
    return Target(control.url, control.token, "test")


def caller(url: str, seconds: float = 0.1, **options: Any) -> asyncio.Task[CallReport]:
    """A simulated call that stays up until the server hangs up (or `seconds` + 30 s)."""
    audio = codec.encode(synth.silence(seconds, 8000), MULAW_8K)
    config = SimulateConfig(url=url, audio=audio, linger=30, **options)
    return asyncio.ensure_future(run_call(config))


async def hang_up(server: StreamServer) -> None:
    for live in list(server.streams.values()):
        await live.ws.close()


# ---------------------------------------------------------------- authentication


def test_requests_without_or_with_a_wrong_token_are_refused_and_logged() -> None:
    async def scenario() -> None:
        async with serving() as (_, control, feed):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(control.url, additional_headers=headers, proxy=None):
                        pass
                assert refused.value.response.status_code == 401
            with pytest.raises(ConfigError, match="refused the token"):
                async with ControlClient(Target(control.url, control.token + "x", "t")):
                    pass
            async with ControlClient(target(control)) as client:
                assert (await client.request("streams"))["streams"] == []
            notes = [r for r in feed.records if r["event"] == "control-refused"]
            assert [n["reason"] for n in notes] == [
                "no token",
                "wrong token",
                "no token",
                "wrong token",
            ]
            assert all(n["remote"].startswith("127.0.0.1:") for n in notes)
            assert control.token not in json.dumps(feed.records)

    run(scenario())


def test_control_is_on_loopback_on_its_own_port_and_published_0600(isolated_state: Path) -> None:
    async def scenario() -> None:
        async with serving() as (server, control, _):
            assert control.url.startswith("ws://127.0.0.1:") and control.port != server.port
            url = f"http://127.0.0.1:{server.port}/control"
            assert await asyncio.to_thread(http_status, url) == 404  # public port: no control
            (path,) = isolated_state.glob("serve-*.json")
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            data = json.loads(path.read_text())
            assert data["control_url"] == control.url and data["token"] == control.token
            assert data["local_url"] == server.local_url
        assert list(isolated_state.glob("serve-*.json")) == []

    run(scenario())


# ---------------------------------------------------------------- ops


def test_stream_resolution_errors_list_the_live_streams() -> None:
    async def scenario() -> None:
        async with serving() as (server, control, feed):
            async with ControlClient(target(control)) as client:
                with pytest.raises(ControlRequestError) as none:
                    await client.request("clear")
                assert none.value.code == "no-stream" and none.value.streams == []
                calls = [caller(server.local_url, stream_id=sid) for sid in ("aa-1", "ab-2")]
                await feed.wait_for(event("start"), count=2)
                for wanted, code, listed in [
                    (None, "ambiguous", ["aa-1", "ab-2"]),
                    ("a", "ambiguous", ["aa-1", "ab-2"]),
                    ("zz", "unknown-stream", ["aa-1", "ab-2"]),
                ]:
                    with pytest.raises(ControlRequestError) as refused:
                        await client.request("checkpoint", stream=wanted, name="x")
                    assert (refused.value.code, refused.value.streams) == (code, listed)
                reply = await client.request("checkpoint", stream="ab", name="mark")
                assert reply["stream"] == "ab-2" and reply["name"] == "mark"
                snapshots = (await client.request("streams"))["streams"]
                assert sorted(s["stream"] for s in snapshots) == ["aa-1", "ab-2"]
                await feed.wait_for(event("playedStream"))
                await hang_up(server)
                reports = await asyncio.gather(*calls)
        assert [r.checkpoints_confirmed for r in reports] == [[], ["mark"]]

    run(scenario())


def test_bad_requests_are_answered_and_the_connection_survives() -> None:
    async def scenario() -> None:
        async with serving() as (server, control, feed):
            call = caller(server.local_url)
            await feed.wait_for(event("start"))
            headers = {"Authorization": f"Bearer {control.token}"}
            async with connect(control.url, additional_headers=headers, proxy=None) as ws:
                requests: list[str] = [
                    "not json",
                    "[1]",
                    json.dumps({"id": 1, "op": "explode"}),
                    json.dumps({"id": 2, "op": "play", "rate": 8000, "pcm": "@@@"}),
                    json.dumps({"id": 3, "op": "play", "rate": 8000, "pcm": "AAAA"}),
                    json.dumps({"id": 4, "op": "play", "rate": True, "pcm": "AAAA"}),
                    json.dumps({"id": 5, "op": "checkpoint"}),
                    json.dumps({"id": 6, "op": "streams"}),
                ]
                replies = []
                for text in requests:
                    await ws.send(text)
                    replies.append(json.loads(await ws.recv()))
            await hang_up(server)
            await call
        assert [r.get("code") for r in replies] == ["bad-request"] * 7 + [None]
        assert "streams, play, clear, checkpoint, monitor" in replies[2]["error"]
        assert [r["id"] for r in replies[2:]] == [1, 2, 3, 4, 5, 6]
        assert replies[-1]["ok"] and len(replies[-1]["streams"]) == 1

    run(scenario())


def test_play_arrives_as_exactly_the_converted_audio_and_its_checkpoint_is_confirmed() -> None:
    pcm = synth.sweep(300, 3000, 0.6, 16000)  # a 16 kHz file on an 8 kHz mu-law stream

    async def scenario() -> tuple[CallReport, dict[str, Any]]:
        async with serving() as (server, control, feed):
            call = caller(server.local_url, speed=4)
            await feed.wait_for(event("start"))
            async with ControlClient(target(control)) as client:
                reply = await client.request("play", checkpoint="sweep", **encode_play(pcm, 16000))
            await feed.wait_for(event("playedStream"))
            await hang_up(server)
            return await call, reply

    report, reply = run(scenario())
    expected = codec.encode(codec.resample(pcm, 16000, 8000), MULAW_8K)
    assert bytes(report.received_audio) == expected
    assert report.checkpoints_confirmed == ["sweep"] and not report.violations
    assert reply["bytes"] == len(expected) and reply["seconds"] == pytest.approx(0.6, abs=0.01)


def test_clear_mid_playback_yields_clear_then_cleared_and_no_more_audio() -> None:
    long_file = synth.tone(440, 30, 8000)

    async def scenario() -> tuple[CallReport, Feed]:
        options = {"play_audio": long_file, "max_buffer": 0.5, "max_b64": 2000}
        async with serving(**options) as (server, control, feed):
            call = caller(server.local_url, seconds=10)
            await feed.wait_for(event("playAudio", "out"), count=4)
            async with ControlClient(target(control)) as client:
                await client.request("clear")
            await feed.wait_for(event("clearedAudio", "in"))
            after = sum(r["event"] == "media" for r in feed.records)
            # 0.5 s more of the caller's audio: the paced player would have sent 2-3 chunks.
            await feed.wait_for(event("media", "in"), count=after + 25)
            await hang_up(server)
            return await call, feed

    report, feed = run(scenario())
    out = feed.events("out")
    assert out.count("clearAudio") == 1 and out[-1] == "clearAudio"
    assert out.index("clearAudio") >= 4 and set(out[:-1]) == {"playAudio"}
    events = feed.events()
    assert events.index("clearAudio") < events.index("clearedAudio")
    (clear_t,) = report.times("clear")
    assert report.times("play") and max(report.times("play")) < clear_t
    assert report.clears == 1 and report.checkpoints_confirmed == []


def test_monitor_pushes_records_and_snapshots_and_ends_cleanly_when_serve_stops() -> None:
    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
        async with StreamServer(ServeConfig(port=0)) as server:
            feed = Feed(server)
            control = ControlServer(server, snapshot_interval=0.05)
            await control.start()
            pushes: list[dict[str, Any]] = []
            media_pushes: list[dict[str, Any]] = []

            async def watch(into: list[dict[str, Any]], media: bool) -> dict[str, Any]:
                async with ControlClient(target(control)) as client:
                    reply = await client.monitor(media=media)
                    async for message in client.pushes():
                        into.append(message)
                return reply

            watchers = [
                asyncio.ensure_future(watch(pushes, False)),
                asyncio.ensure_future(watch(media_pushes, True)),
            ]
            await feed.wait_for(lambda r: r.get("action") == "monitor", count=2)
            call = caller(server.local_url, seconds=0.3, speed=4, dtmf=[("7", 0.0)])
            await feed.wait_for(event("dtmf"))
            while not any(p["type"] == "snapshot" and p["streams"] for p in pushes):
                await asyncio.sleep(0.01)
            await server.close()  # the stream's last records, then the channel
            await control.close()
            await call
            replies = await asyncio.gather(*watchers)
        return pushes, media_pushes, replies[0]

    pushes, media_pushes, reply = run(scenario())
    assert reply["serve"]["local_url"].startswith("ws://127.0.0.1:")
    records = [p["record"] for p in pushes if p["type"] == "record"]
    kinds = [r["event"] for r in records if r["event"] != "control"]  # the other monitor's note
    assert kinds[:2] == ["connected", "start"] and kinds[-1] == "closed"
    assert [r["digit"] for r in records if r["event"] == "dtmf"] == ["7"]
    assert "media" not in kinds
    assert "media" in [p["record"]["event"] for p in media_pushes if p["type"] == "record"]
    snapshots = [p for p in pushes if p["type"] == "snapshot"]
    assert any(s["streams"] and s["streams"][0]["dtmf"] == "7" for s in snapshots)
    assert all("connections" in s["totals"] for s in snapshots)


# ---------------------------------------------------------------- finding a serve


def register(port: int, token: str) -> statefile.ServeEntry:
    return statefile.register_serve(
        control_url=f"ws://127.0.0.1:{port}/control", token=token, local_url="ws://x/stream"
    )


def test_find_serve_with_none_one_and_several_running() -> None:
    with pytest.raises(ConfigError, match="start `pstream serve`"):
        find_serve()
    register(5001, "tok-1")
    assert find_serve() == Target("ws://127.0.0.1:5001/control", "tok-1", find_serve().label)
    register(5002, "tok-2")
    with pytest.raises(UsageError, match="2 pstream serves") as several:
        find_serve()
    assert "5001" in several.value.message and "5002" in several.value.message
    assert "tok-" not in several.value.message
    assert find_serve("ws://127.0.0.1:5002/control").token == "tok-2"
    assert find_serve("ws://127.0.0.1:5002").token == "tok-2"  # the path is implied
    assert find_serve("ws://127.0.0.1:9/control", "given").token == "given"
    with pytest.raises(ConfigError, match="no token"):
        find_serve("ws://127.0.0.1:9/control")
    with pytest.raises(UsageError, match="--token needs --control"):
        find_serve(None, "tok-1")


def test_a_serve_that_is_gone_is_a_network_error() -> None:
    from plivo_stream_cli.errors import NetworkError
    from tests.conftest import free_port

    gone = Target(f"ws://127.0.0.1:{free_port()}/control", "t", "gone")

    async def scenario() -> None:
        with pytest.raises(NetworkError, match="still running"):
            async with ControlClient(gone):
                pass

    run(scenario())


def test_play_request_fields_are_base64_pcm() -> None:
    fields = encode_play(b"\x01\x00\x02\x00", 8000)
    assert fields == {"pcm": base64.b64encode(b"\x01\x00\x02\x00").decode(), "rate": 8000}


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 50_000 + "1" + "}" * 50_000,
        "[" * 200_000,
        '{"id": ' + "[" * 5_000 + "]" * 5_000 + ', "op": "explode"}',
    ],
    ids=["lists", "objects", "unclosed", "deep-id"],
)
def test_deeply_nested_requests_get_their_refusal_not_1011(text: str) -> None:
    async def scenario() -> None:
        async with serving() as (_, control, _feed):
            headers = {"Authorization": f"Bearer {control.token}"}
            async with connect(control.url, additional_headers=headers, proxy=None) as ws:
                await ws.send(text)
                reply = json.loads(await ws.recv())
                await ws.send(json.dumps({"id": 7, "op": "streams"}))  # the session goes on
                after = json.loads(await ws.recv())
        assert reply["ok"] is False and reply["code"] == "bad-request"
        assert after["ok"] is True and after["id"] == 7

    run(scenario())
