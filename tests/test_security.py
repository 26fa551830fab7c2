"""Security: replayed signatures, the control token's comparison, names from the peer that must
never become paths, secrets that never reach output, logs or recordings, and the warning for a
token given as a flag (visible in `ps`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import re
import secrets
import signal
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main
from plivo_standin import AUTH_ID, AUTH_TOKEN, PlivoStandIn, Reply
from typer.testing import CliRunner
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from plivo_stream_cli import synth
from plivo_stream_cli.adapters.audiofile import write_wav
from plivo_stream_cli.adapters.control import ControlServer
from plivo_stream_cli.adapters.server import ServeConfig, StreamServer, prepare_record_dir
from plivo_stream_cli.cli import app
from plivo_stream_cli.events import Media, Start
from plivo_stream_cli.formats import MULAW_8K
from plivo_stream_cli.nonces import NonceCache
from plivo_stream_cli.signature import NONCE_HEADER, SIGNATURE_HEADER, sign_headers
from tests.conftest import free_port, pstream_process, run, wait_for_port

TOKEN = "security-test-token"
FLAG_WARNING = "visible to other users in `ps`"


def _start(call: str = "call-1", stream: str = "stream-1") -> str:
    return Start(call, stream, "MA1", ("inbound",), MULAW_8K).to_json()


def _media(stream: str = "stream-1") -> str:
    return Media(stream, "inbound", "20", b"\xff" * 160, 1, 2).to_json()


# ---------------------------------------------------------------- replayed signatures


def test_nonce_cache_remembers_for_the_window_only() -> None:
    cache = NonceCache(window=10)
    assert cache.first_seen("a", now=100.0) is None
    assert cache.first_seen("a", now=105.0) == 100.0  # a replay, 5 s later
    assert cache.first_seen("b", now=106.0) is None
    assert cache.first_seen("a", now=111.0) is None  # forgotten after the window: re-armed
    assert len(cache) == 2  # "b" (106) and "a" (111)


def test_nonce_cache_memory_is_bounded() -> None:
    cache = NonceCache(window=3600, max_entries=1000)
    for i in range(50_000):
        cache.first_seen(f"nonce-{i}", now=float(i) / 1000)
    assert len(cache) == 1000 and cache.evicted == 49_000
    assert cache.first_seen("nonce-49999", now=60.0) is not None  # the newest are kept


@pytest.mark.parametrize(("window", "entries"), [(0, 10), (-1, 10), (10, 0)])
def test_nonce_cache_refuses_nonsense_limits(window: float, entries: int) -> None:
    with pytest.raises(ValueError):
        NonceCache(window=window, max_entries=entries)


def test_replayed_upgrade_is_refused_with_reject_replays() -> None:
    async def scenario() -> None:
        records: list[dict[str, Any]] = []
        config = ServeConfig(port=0, auth_token=TOKEN, reject_replays=True, echo=True)
        async with StreamServer(config) as server:
            server.subscribe(records.append, media=False)
            signed = sign_headers(server.local_url, TOKEN)
            assert await _upgrade(server.local_url, signed) is None  # first use: served
            padded = {**signed, SIGNATURE_HEADER: signed[SIGNATURE_HEADER] + ",AAAA"}
            for replay in (signed, padded):
                assert await _upgrade(server.local_url, replay) == 1008
            assert await _upgrade(server.local_url, sign_headers(server.local_url, TOKEN)) is None
            assert server.totals["rejected"] == 2
        reasons = [str(r["reason"]) for r in records if r["event"] == "rejected"]
        assert len(reasons) == 2 and all(r.startswith("replayed signature") for r in reasons)

    run(scenario())


def test_without_reject_replays_a_replay_is_accepted() -> None:
    async def scenario() -> None:
        async with StreamServer(ServeConfig(port=0, auth_token=TOKEN, echo=True)) as server:
            signed = sign_headers(server.local_url, TOKEN)
            assert await _upgrade(server.local_url, signed) is None
            assert await _upgrade(server.local_url, signed) is None

    run(scenario())


async def _upgrade(url: str, headers: dict[str, str]) -> int | None:
    """Open a stream with these headers: None if it was served (serve echoes our audio back),
    else the code it was closed with."""
    async with connect(url, additional_headers=headers) as ws:
        try:
            await ws.send(_start())
            await ws.send(_media())
            reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        except ConnectionClosed:
            return ws.close_code
    assert reply["event"] == "playAudio"
    return None


def test_replayed_webhook_is_refused_with_403() -> None:
    async def scenario() -> None:
        config = ServeConfig(port=0, auth_token=TOKEN, reject_replays=True)
        async with StreamServer(config) as server:
            url = f"http://127.0.0.1:{server.port}/status"
            form = {"StreamID": "s-1", "Event": "StartStream"}
            signed = sign_headers(url, TOKEN, method="POST", params=form)
            first = await asyncio.to_thread(_post, url, form, signed)
            again = await asyncio.to_thread(_post, url, form, signed)
            assert (first, again) == (200, 403)

    run(scenario())


def _post(url: str, form: dict[str, str], headers: dict[str, str]) -> int:
    body = urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(url, body, headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_reject_replays_needs_a_token_and_a_positive_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PLIVO_AUTH_TOKEN", raising=False)
    no_token = CliRunner().invoke(app, ["serve", "--port", "0", "--reject-replays"])
    assert no_token.exit_code == 3 and "PLIVO_AUTH_TOKEN" in no_token.output
    monkeypatch.setenv("PLIVO_AUTH_TOKEN", TOKEN)
    bad_window = CliRunner().invoke(app, ["serve", "--port", "0", "--replay-window", "0"])
    assert bad_window.exit_code == 2 and "--replay-window" in bad_window.output


# ---------------------------------------------------------------- the control channel's token


def test_control_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)

    async def scenario() -> None:
        async with StreamServer(ServeConfig(port=0)) as server:
            async with ControlServer(server, token="the-right-token") as control:
                for presented in ("the-wrong-token", "the-right-toke", "the-right-token!"):
                    with pytest.raises(InvalidStatus) as refused:
                        await connect(control.url, additional_headers=_bearer(presented))
                    assert refused.value.response.status_code == 401
                async with connect(control.url, additional_headers=_bearer("the-right-token")):
                    pass

    run(scenario())
    assert len(compared) == 4
    assert all(expected == b"the-right-token" for _, expected in compared)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---------------------------------------------------------------- names from the peer

HOSTILE_IDS = [
    "../../../../tmp/pstream-escape",
    "/etc/passwd",
    "..",
    ".",
    "a/b\\c",
    "..\\..\\windows\\system32",
    "CON",
    "nul",
    "~root",
    "$(touch pwned)",
    "name;rm -rf ~",
    "\x00hidden",
    "\u202eevil.wav",
    "x" * 5000,
    "x" * 4999 + "y",
    "",
]
SAFE_FILE = re.compile(r"^[A-Za-z0-9_-]+\.(inbound\.wav|outbound\.wav|jsonl)$")


def test_hostile_call_and_stream_ids_never_become_paths(tmp_path: Path) -> None:
    record = tmp_path / "rec"
    record.mkdir()

    async def scenario() -> None:
        closed = asyncio.Event()
        count = 0

        def on_record(r: dict[str, Any]) -> None:
            nonlocal count
            if r["event"] == "closed":
                count += 1
                if count == len(HOSTILE_IDS):
                    closed.set()

        async with StreamServer(ServeConfig(port=0, record_dir=record)) as server:
            server.subscribe(on_record, media=False)
            for hostile in HOSTILE_IDS:
                async with connect(server.local_url) as ws:
                    await ws.send(_start(call=hostile, stream=hostile))
                    await ws.send(_media(stream=hostile))
            await asyncio.wait_for(closed.wait(), 20)

    run(scenario())
    everything = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert everything[0] == "rec" and all(p.startswith("rec/") for p in everything[1:])
    names = [p.name for p in record.iterdir()]
    assert all(SAFE_FILE.match(name) for name in names), names
    assert len(names) == 3 * len(HOSTILE_IDS)  # nothing overwritten, nothing merged
    assert not Path("/tmp/pstream-escape").exists()


def test_two_live_connections_claiming_one_stream_id_are_both_kept(tmp_path: Path) -> None:
    async def scenario() -> None:
        closed: list[dict[str, Any]] = []
        both_closed = asyncio.Event()

        def on_record(record: dict[str, Any]) -> None:
            if record["event"] == "closed":
                closed.append(record)
                if len(closed) == 2:
                    both_closed.set()

        async with StreamServer(ServeConfig(port=0, record_dir=tmp_path, echo=True)) as server:
            server.subscribe(on_record, media=False)
            async with connect(server.local_url) as first, connect(server.local_url) as second:
                for ws in (first, second):
                    await ws.send(_start())
                    await ws.send(_media())
                    assert json.loads(await ws.recv())["event"] == "playAudio"
                assert len(server.streams) == 2
            await asyncio.wait_for(both_closed.wait(), 10)
        assert all(r["media"] == 1 and len(r["files"]) == 3 for r in closed)

    run(scenario())
    assert len(list(tmp_path.glob("*.inbound.wav"))) == 2


def test_a_new_recording_directory_is_private(tmp_path: Path) -> None:
    created = prepare_record_dir(tmp_path / "new" / "calls")
    assert created.stat().st_mode & 0o777 == 0o700


# ---------------------------------------------------------------- secrets never printed


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    env = {
        "PLIVO_AUTH_TOKEN": "plivo-" + secrets.token_hex(12),
        "NGROK_AUTHTOKEN": "ngrok-" + secrets.token_hex(12),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield env


def test_tokens_never_reach_output_logs_errors_or_recordings(
    tmp_path: Path, secret_env: dict[str, str]
) -> None:
    record = tmp_path / "rec"
    port = free_port()
    url = f"ws://127.0.0.1:{port}/stream"
    seen: list[str] = []
    serve = pstream_process(
        "-v", "serve", "--port", str(port), "--json", "--record", str(record),
        "--echo", "--reject-replays",
    )  # fmt: skip
    try:
        wait_for_port(port)
        # --linger 0: serve's --json feed goes to a pipe nobody reads until the end (64 KB)
        seen += _cli(["-v", "simulate", url, "--speed", "8", "--linger", "0"], expect=0)
        seen += _cli(["-v", "simulate", url, "--auth-token", "not-the-token"], expect=3)
        run(_replay(port, secret_env["PLIVO_AUTH_TOKEN"]))
        control_token = _control_token()
        seen += _webhooks(port, secret_env["PLIVO_AUTH_TOKEN"])
    finally:
        serve.send_signal(signal.SIGTERM)
        out, err = serve.communicate(timeout=60)
    assert serve.returncode == 0, err
    seen += [out, err]
    feed = [json.loads(line) for line in out.splitlines()]
    assert any(str(r.get("reason", "")).startswith("replayed") for r in feed)
    assert list(record.glob("*.jsonl"))
    seen += [p.read_bytes().decode("utf-8", "replace") for p in record.iterdir()]
    seen += _cli(["signature", "sign", url], expect=0)
    seen += _cli(["signature", "sign", url, "--json"], expect=0)
    seen += _cli(["signature", "check", url, "--signature", "AAAA", "--nonce", "1"], expect=8)
    seen += _cli(["signature", "check", url, "--signature", "AAAA", "--nonce", "1", "--json"], 8)
    seen += _cli(["xml", "--bidirectional", url], expect=0)
    for secret in (*secret_env.values(), control_token):
        leaks = [text for text in seen if secret in text]
        assert not leaks, f"token found in: {leaks[0][:300]!r}"


async def _replay(port: int, token: str) -> None:
    url = f"ws://127.0.0.1:{port}/stream"
    signed = sign_headers(url, token)
    assert await _upgrade(url, signed) is None
    assert await _upgrade(url, signed) == 1008


def _webhooks(port: int, token: str) -> list[str]:
    """The Answer URL signed well, then badly: what serve answers."""
    answer = f"http://127.0.0.1:{port}/answer"
    bodies: list[str] = []
    for headers in (sign_headers(answer, token), {SIGNATURE_HEADER: "AAAA", NONCE_HEADER: "1"}):
        request = urllib.request.Request(answer, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                bodies.append(response.read().decode())
        except urllib.error.HTTPError as exc:
            bodies.append(exc.read().decode())
    assert "<Stream" in bodies[0] and "invalid signature" in bodies[1]
    return bodies


def _control_token() -> str:
    """The token serve published for its control channel (in its 0600 state file)."""
    state = Path(os.environ["PSTREAM_STATE_DIR"])
    (entry,) = [json.loads(p.read_text()) for p in state.glob("*.json") if "token" in p.read_text()]
    return str(entry["token"])


def _cli(args: list[str], expect: int) -> list[str]:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == expect, result.output
    assert "Traceback" not in result.output
    return [result.output]


def test_rest_errors_and_verbose_requests_never_show_the_token() -> None:
    with PlivoStandIn() as api:
        path = f"/v1/Account/{AUTH_ID}/Call/CA1/Stream/"
        api.route("GET", path, Reply(200, {"objects": []}))
        seen = []
        for token, code in ((AUTH_TOKEN, 0), ("wrong-" + AUTH_TOKEN[::-1], 3)):
            result = CliRunner().invoke(
                app,
                ["-v", "get", "CA1", "--api-url", api.url, "--auth-id", AUTH_ID, "--json"],
                env={"PLIVO_AUTH_TOKEN": token},
            )
            assert result.exit_code == code, result.output
            seen.append((token, result.output))
    for token, output in seen:
        assert token not in output and AUTH_TOKEN not in output


# ---------------------------------------------------------------- tokens given as flags


def _token_options() -> dict[str, list[str]]:
    """Every command's options that take a token, found by walking the CLI itself."""
    found: dict[str, list[str]] = {}

    def walk(command: Any, path: list[str]) -> None:
        if hasattr(command, "list_commands"):
            for name in command.list_commands(None):
                walk(command.get_command(None, name), [*path, name])
            return
        options = [o for p in command.params for o in getattr(p, "opts", []) if "token" in o]
        if options:
            found[" ".join(path)] = options

    walk(typer.main.get_command(app), [])
    return found


@pytest.fixture(scope="module")
def unreachable() -> Iterator[tuple[int, str]]:
    """A port that refuses connections and one that is taken (so serve fails to bind)."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield busy.getsockname()[1], f"127.0.0.1:{free_port()}"


def _fast_failing_args(tmp: Path, busy: int, closed: str) -> dict[str, list[str]]:
    """For each command: arguments with which it resolves its token, then stops quickly."""
    wav = tmp / "a.wav"
    write_wav(wav, synth.tone(440, 0.1, 8000), 8000)
    api = ["--auth-id", "MA1", "--api-url", f"http://{closed}", "--retries", "0"]
    control = ["--control", f"ws://{closed}/control"]
    return {
        "stop": ["CA1", *api],
        "get": ["CA1", *api],
        "start": ["CA1", "wss://bot.example.com/stream", *api[:4]],
        "serve": ["--port", str(busy), "--ngrok"],
        "simulate": [f"ws://{closed}/stream"],
        "load": [f"ws://{closed}/stream", "--steps", "1", "--step-seconds", "1", "--warm-up", "0"],
        "replay": [str(tmp / "missing.jsonl"), f"ws://{closed}/stream"],
        "call": ["+14155550100", "--from", "+14155550101", "--yes",
                 "--answer-url", "https://bot.example.com/answer", *api[:4]],
        "tail": control,
        "play": [str(wav), *control],
        "clear": control,
        "checkpoint": ["cp", *control],
        "streams": control,
        "signature sign": ["https://bot.example.com/answer"],
        "signature check": ["https://bot.example.com/answer", "--signature", "A", "--nonce", "1"],
    }  # fmt: skip


def test_every_token_flag_warns_and_is_never_echoed(
    tmp_path: Path, unreachable: tuple[int, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for env in ("PLIVO_AUTH_TOKEN", "NGROK_AUTHTOKEN", "PSTREAM_CONTROL_TOKEN"):
        monkeypatch.delenv(env, raising=False)
    busy, closed = unreachable
    fast = _fast_failing_args(tmp_path, busy, closed)
    options = _token_options()
    assert not set(options) - set(fast), "add fast-failing arguments for these commands"
    for command, flags in options.items():
        for flag in flags:
            secret = f"flag-{secrets.token_hex(8)}"
            args = [*command.split(), *fast[command], flag, secret]
            result = CliRunner().invoke(app, args)
            assert FLAG_WARNING in result.output, (args, result.output)
            assert secret not in result.output, args
            assert "Traceback" not in result.output, result.output


def test_a_token_from_the_environment_gives_no_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLIVO_AUTH_TOKEN", TOKEN)
    result = CliRunner().invoke(app, ["signature", "sign", "https://bot.example.com/answer"])
    assert result.exit_code == 0 and FLAG_WARNING not in result.output
    assert os.environ["PLIVO_AUTH_TOKEN"] not in result.output
