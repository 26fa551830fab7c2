"""`pstream stop`, `pstream get`, `pstream start` through the CLI, against the loopback stand-in."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from plivo_standin import AUTH_ID, AUTH_TOKEN, PlivoStandIn, Reply
from typer.testing import CliRunner, Result

from plivo_stream_cli import __version__
from plivo_stream_cli.cli import app

CALL = "4f045f7a-b04a-4364-8523-74e6072f4f72"
STREAM = "c436abf8-e8a1-4d96-9aa8-b9143f7f3517"
STREAMS = f"/v1/Account/{AUTH_ID}/Call/{CALL}/Stream/"
ONE_STREAM = f"/v1/Account/{AUTH_ID}/Call/{CALL}/Stream/{STREAM}/"
FAST = ("--retry-wait", "0.01")
STREAM_OBJECT = {
    "stream_id": STREAM,
    "call_uuid": CALL,
    "service_url": "wss://bot.example.com/stream",
    "audio_track": "inbound",
    "bidirectional": True,
    "start_time": "2024-01-15 10:30:00+05:30",
    "end_time": None,
    "bill_duration": 42,
    "billed_amount": "0.00300",
}

runner = CliRunner()


@pytest.fixture(autouse=True)
def no_real_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PLIVO_AUTH_ID", "PLIVO_AUTH_TOKEN", "PLIVO_API_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def api() -> Iterator[PlivoStandIn]:
    with PlivoStandIn() as server:
        yield server


def run(api: PlivoStandIn, *args: str, token: str = AUTH_TOKEN) -> Result:
    env = {"PLIVO_AUTH_ID": AUTH_ID, "PLIVO_AUTH_TOKEN": token, "PLIVO_API_URL": api.url}
    return runner.invoke(app, list(args), env=env)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- credentials -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [["stop", CALL], ["get", CALL], ["start", CALL, "wss://x.io/s"]]
)
def test_missing_credentials_exit_3_with_one_line(command: list[str]) -> None:
    result = runner.invoke(app, command)
    assert result.exit_code == 3
    assert result.stderr.strip().count("\n") == 0
    assert "set PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN" in result.stderr
    assert result.stdout == ""


def test_credentials_from_flags(api: PlivoStandIn) -> None:
    api.route("DELETE", STREAMS, Reply(204))
    args = ["stop", CALL, "--auth-id", AUTH_ID, "--auth-token", AUTH_TOKEN, "--api-url", api.url]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert "prefer setting PLIVO_AUTH_TOKEN" in result.stderr
    assert AUTH_TOKEN not in result.stdout + result.stderr


def test_bad_credentials_exit_3(api: PlivoStandIn) -> None:
    api.route("GET", STREAMS, Reply(200, {"objects": []}))
    result = run(api, "get", CALL, token="not-the-token")
    assert result.exit_code == 3
    assert "bad credentials" in result.stderr
    assert "not-the-token" not in result.stdout + result.stderr


def test_a_bad_api_url_is_a_usage_error() -> None:
    env = {"PLIVO_AUTH_ID": AUTH_ID, "PLIVO_AUTH_TOKEN": AUTH_TOKEN}
    result = runner.invoke(app, ["get", CALL, "--api-url", "api.plivo.com"], env=env)
    assert result.exit_code == 2
    assert "--api-url must be an http(s):// URL" in result.stderr


def test_a_zero_timeout_is_a_usage_error(api: PlivoStandIn) -> None:
    assert run(api, "get", CALL, "--timeout", "0").exit_code == 2


# --- stop ------------------------------------------------------------------------------------


def test_stop_all_streams(api: PlivoStandIn) -> None:
    api.route("DELETE", STREAMS, Reply(204))
    result = run(api, "stop", CALL)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert f"stopped all streams of call {CALL}" in result.stderr
    (request,) = api.requests
    assert (request.method, request.path, request.body) == ("DELETE", STREAMS, b"")
    assert request.header("User-Agent") == f"pstream/{__version__}"


def test_stop_one_stream(api: PlivoStandIn) -> None:
    api.route("DELETE", ONE_STREAM, Reply(204))
    result = run(api, "stop", CALL, STREAM)
    assert result.exit_code == 0, result.stderr
    assert f"stopped stream {STREAM}" in result.stderr
    assert [r.path for r in api.requests] == [ONE_STREAM]


@pytest.mark.parametrize(("reply", "printed"), [(Reply(204), "{}"), (Reply(200, "{ }"), "{ }")])
def test_stop_json(api: PlivoStandIn, reply: Reply, printed: str) -> None:
    api.route("DELETE", STREAMS, reply)
    result = run(api, "stop", CALL, "--json")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == printed + "\n"


def test_stop_with_no_active_stream_exits_4_with_the_apis_message(api: PlivoStandIn) -> None:
    api.route("DELETE", ONE_STREAM, Reply(400, {"api_id": "a", "error": "No active stream found"}))
    result = run(api, "stop", CALL, STREAM)
    assert result.exit_code == 4
    assert "No active stream found" in result.stderr
    assert len(api.requests) == 1


def test_stop_unknown_call_exits_4(api: PlivoStandIn) -> None:
    api.route("DELETE", STREAMS, Reply(404, {"error": "call not found"}))
    result = run(api, "stop", CALL)
    assert result.exit_code == 4
    assert "no such call or stream (404): call not found" in result.stderr


# --- get -------------------------------------------------------------------------------------


def test_get_list_prints_a_table(api: PlivoStandIn) -> None:
    second = {**STREAM_OBJECT, "stream_id": "s-2", "bidirectional": False, "audio_track": "both"}
    body = {"api_id": "a", "meta": {"total_count": 2}, "objects": [STREAM_OBJECT, second]}
    api.route("GET", STREAMS, Reply(200, body))
    result = run(api, "get", CALL)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if "stream id" in line)
    for column in ("service URL", "audio track", "bidirectional", "start", "duration", "billed"):
        assert column in header
    assert "status" not in header
    first_row = next(line for line in lines if STREAM in line)
    for cell in ("wss://bot.example.com/stream", "yes", "2024-01-15 10:30:00+05:30", "42s"):
        assert cell in first_row
    assert "0.00300" in first_row
    assert any("s-2" in line and "both" in line and "no" in line for line in lines)
    assert "2 streams on call" in result.stderr
    assert [(r.method, r.path) for r in api.requests] == [("GET", STREAMS)]


def test_get_accepts_the_meta_count_and_status_variant(api: PlivoStandIn) -> None:
    sdk_object = {"stream_id": STREAM, "status": "initiated", "service_url": "ws://x.ngrok.io"}
    body = {"api_id": "a", "meta": {"count": 1, "limit": 20}, "objects": [sdk_object]}
    api.route("GET", STREAMS, Reply(200, body))
    result = run(api, "get", CALL)
    assert result.exit_code == 0, result.stderr
    assert "status" in result.stdout
    assert "initiated" in result.stdout
    assert "1 stream on call" in result.stderr


def test_get_one_stream(api: PlivoStandIn) -> None:
    api.route("GET", ONE_STREAM, Reply(200, {"api_id": "a", **STREAM_OBJECT}))
    result = run(api, "get", CALL, STREAM)
    assert result.exit_code == 0, result.stderr
    assert STREAM in result.stdout
    assert [r.path for r in api.requests] == [ONE_STREAM]


def test_get_no_streams_prints_no_table(api: PlivoStandIn) -> None:
    api.route("GET", STREAMS, Reply(200, {"api_id": "a", "meta": {"count": 0}, "objects": []}))
    result = run(api, "get", CALL)
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "0 streams on call" in result.stderr


def test_get_json_prints_the_body_untouched(api: PlivoStandIn) -> None:
    raw = '{"api_id":"a",  "meta": {"count": 1},\n "objects": [{"stream_id": "s", "x": 1.50}]}'
    api.route("GET", STREAMS, Reply(200, raw))
    result = run(api, "get", CALL, "--json")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == raw + "\n"


def test_get_unknown_call_exits_4(api: PlivoStandIn) -> None:
    result = run(api, "get", "no-such-call", *FAST)
    assert result.exit_code == 4
    assert "no such call or stream" in result.stderr
    assert len(api.requests) == 1


def test_a_path_without_the_trailing_slash_would_not_match(api: PlivoStandIn) -> None:
    api.route("GET", STREAMS.rstrip("/"), Reply(200, {"objects": []}))
    assert run(api, "get", CALL).exit_code == 4


# --- retries, failures, network -------------------------------------------------------------


def test_429_with_retry_after_is_honoured_then_succeeds(api: PlivoStandIn) -> None:
    limited = Reply(429, {"error": "too many requests"}, headers={"Retry-After": "1"})
    api.route("GET", STREAMS, limited, Reply(200, {"objects": [STREAM_OBJECT]}))
    result = run(api, "get", CALL, *FAST)
    assert result.exit_code == 0, result.stderr
    assert STREAM in result.stdout
    first, second = api.requests
    assert second.at - first.at >= 0.9  # the Retry-After, not the 0.01 s backoff


def test_500_every_time_exits_5_after_the_retries(api: PlivoStandIn) -> None:
    api.route("DELETE", STREAMS, Reply(500, {"error": "internal"}))
    result = run(api, "stop", CALL, "--retries", "2", *FAST)
    assert result.exit_code == 5
    assert "failed (500) after 3 attempts: internal" in result.stderr
    assert len(api.requests) == 3


def test_503_then_success_on_delete(api: PlivoStandIn) -> None:
    api.route("DELETE", STREAMS, Reply(503), Reply(204))
    assert run(api, "stop", CALL, *FAST).exit_code == 0
    assert len(api.requests) == 2


def test_a_hanging_api_times_out_with_exit_6(api: PlivoStandIn) -> None:
    api.route("GET", STREAMS, Reply(hang=True))
    result = run(api, "get", CALL, "--timeout", "0.2", "--retries", "0")
    assert result.exit_code == 6
    assert "timed out after 0.2s" in result.stderr
    assert len(api.requests) == 1


def test_a_refused_port_exits_6() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    env = {"PLIVO_AUTH_ID": AUTH_ID, "PLIVO_AUTH_TOKEN": AUTH_TOKEN, "PLIVO_API_URL": url}
    result = runner.invoke(app, ["stop", CALL, *FAST], env=env)
    assert result.exit_code == 6
    assert "cannot reach the Plivo API" in result.stderr


def test_an_unknown_host_exits_6() -> None:
    env = {"PLIVO_AUTH_ID": AUTH_ID, "PLIVO_AUTH_TOKEN": AUTH_TOKEN}
    url = "http://pstream-no-such-host.invalid"
    result = runner.invoke(
        app, ["get", CALL, "--api-url", url, "--retries", "0", "--timeout", "2"], env=env
    )
    assert result.exit_code == 6


# --- start -----------------------------------------------------------------------------------

STARTED = {"api_id": "a", "message": "audio streaming started", "stream_id": "s-new"}


def test_start_posts_the_stream_options_and_prints_the_id(api: PlivoStandIn) -> None:
    api.route("POST", STREAMS, Reply(200, STARTED))
    result = run(
        api,
        "start",
        CALL,
        "wss://bot.example.com/stream?x=1",
        "--bidirectional",
        "--content-type",
        "audio/x-l16;rate=16000",
        "--stream-timeout",
        "600",
        "--status-callback-url",
        "https://bot.example.com/status",
        "--status-callback-method",
        "GET",
        "--extra-header",
        "userId=42",
        "--extra-header",
        "tier=gold",
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "s-new\n"
    assert f"started stream s-new on call {CALL}" in result.stderr
    (request,) = api.requests
    assert (request.method, request.path) == ("POST", STREAMS)
    assert request.header("Content-Type") == "application/json"
    assert request.json == {
        "service_url": "wss://bot.example.com/stream?x=1",
        "bidirectional": True,
        "audio_track": "inbound",
        "content_type": "audio/x-l16;rate=16000",
        "stream_timeout": 600,
        "status_callback_url": "https://bot.example.com/status",
        "status_callback_method": "GET",
        "extra_headers": "userId=42;tier=gold",
    }


def test_start_defaults(api: PlivoStandIn) -> None:
    api.route("POST", STREAMS, Reply(201, STARTED))
    result = run(api, "start", CALL, "wss://bot.example.com/stream")
    assert result.exit_code == 0, result.stderr
    assert api.requests[0].json == {
        "service_url": "wss://bot.example.com/stream",
        "bidirectional": False,
        "audio_track": "inbound",
        "content_type": "audio/x-mulaw;rate=8000",
    }


def test_start_json_prints_the_body_untouched(api: PlivoStandIn) -> None:
    raw = json.dumps(STARTED, indent=4)
    api.route("POST", STREAMS, Reply(200, raw))
    result = run(api, "start", CALL, "wss://bot.example.com/stream", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == raw + "\n"


def test_start_validates_before_any_request(api: PlivoStandIn) -> None:
    result = run(
        api, "start", CALL, "wss://bot.example.com/s", "--bidirectional", "--audio-track", "both"
    )
    assert result.exit_code == 2
    assert "bidirectional" in result.stderr
    assert run(api, "start", CALL, "https://not-a-websocket.example.com").exit_code == 2
    assert api.requests == []


def test_start_is_never_retried(api: PlivoStandIn) -> None:
    api.route("POST", STREAMS, Reply(503), Reply(200, STARTED))
    result = run(api, "start", CALL, "wss://bot.example.com/stream")
    assert result.exit_code == 5
    assert len(api.requests) == 1


def test_start_on_a_call_that_is_gone(api: PlivoStandIn) -> None:
    api.route("POST", STREAMS, Reply(404, {"error": "call not found"}))
    result = run(api, "start", CALL, "wss://bot.example.com/stream")
    assert result.exit_code == 4
    assert "no such call (404)" in result.stderr


# --- the token never shows --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "reply"),
    [
        (["get", CALL], Reply(200, {"objects": [STREAM_OBJECT]})),
        (["get", CALL, "--json"], Reply(200, {"objects": []})),
        (["stop", CALL], Reply(204)),
        (["stop", CALL], Reply(400, {"error": f"bad token {AUTH_TOKEN}"})),
        (["stop", CALL, "--retries", "1"], Reply(500, {"error": "internal"})),
        (["stop", CALL, "--timeout", "0.2", "--retries", "0"], Reply(hang=True)),
        (["start", CALL, "wss://x.example.com/s"], Reply(200, STARTED)),
    ],
)
def test_the_token_is_never_printed(api: PlivoStandIn, args: list[str], reply: Reply) -> None:
    method = {"get": "GET", "stop": "DELETE", "start": "POST"}[args[0]]
    api.route(method, STREAMS, reply)
    for token_args in ([], ["--auth-token", AUTH_TOKEN]):
        retry_wait = FAST if args[0] != "start" else ()
        result = run(api, "-vv", *args, *token_args, *retry_wait)
        assert result.exit_code in (0, 4, 5, 6), result.stderr
        assert AUTH_TOKEN not in result.stdout + result.stderr
    assert api.requests


def test_help_shows_no_token_and_the_shared_stream_flags() -> None:
    result = runner.invoke(app, ["start", "--help"], env={"PLIVO_AUTH_TOKEN": AUTH_TOKEN})
    assert result.exit_code == 0
    assert AUTH_TOKEN not in result.stdout
    for flag in ("--bidirectional", "--content-type", "--extra-header", "--auth-id", "--api-url"):
        assert flag in result.stdout


# --- on a real terminal -----------------------------------------------------------------------


def run_on_a_terminal(api: PlivoStandIn, columns: int, *args: str) -> str:
    """Run pstream with a pseudo-terminal as stdout; return what it showed, styles removed."""
    pty = pytest.importorskip("pty")
    main, child = pty.openpty()
    env = {
        **os.environ,
        "PLIVO_AUTH_ID": AUTH_ID,
        "PLIVO_AUTH_TOKEN": AUTH_TOKEN,
        "PLIVO_API_URL": api.url,
        "COLUMNS": str(columns),
        "NO_COLOR": "1",
    }
    command = [sys.executable, "-m", "plivo_stream_cli", *args]
    with subprocess.Popen(command, stdout=child, stderr=subprocess.DEVNULL, env=env) as proc:
        os.close(child)
        shown = b""
        while chunk := _read(main):
            shown += chunk
        assert proc.wait(timeout=30) == 0
    os.close(main)
    return re.sub(r"\x1b\[[0-9;]*m", "", shown.decode())  # bold survives NO_COLOR


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the child closed the terminal
        return b""


@pytest.mark.parametrize(("columns", "one_row_per_stream"), [(200, True), (60, False)])
def test_the_table_on_a_terminal_keeps_ids_whole(
    api: PlivoStandIn, columns: int, one_row_per_stream: bool
) -> None:
    api.route("GET", STREAMS, Reply(200, {"meta": {"count": 1}, "objects": [STREAM_OBJECT]}))
    shown = run_on_a_terminal(api, columns, "get", CALL)
    id_line = next(line for line in shown.splitlines() if STREAM in line)
    assert ("wss://bot.example.com/stream" in id_line) is one_row_per_stream
    assert max(len(line) for line in shown.splitlines()) <= columns


# --- issue 22: piped output, API text, non-JSON answers ------------------------------------


def test_piped_get_prints_tsv_with_whole_ids(api: PlivoStandIn) -> None:
    second = {**STREAM_OBJECT, "stream_id": "s-2", "service_url": "wss://x/\u202eevil\ttab"}
    body = {"api_id": "a", "meta": {"total_count": 2}, "objects": [STREAM_OBJECT, second]}
    api.route("GET", STREAMS, Reply(200, body))
    result = run(api, "get", CALL)
    assert result.exit_code == 0, result.stderr
    header, *rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert header[0] == "stream id" and "service URL" in header
    assert [len(row) for row in rows] == [len(header), len(header)]
    assert rows[0][0] == STREAM and rows[1][0] == "s-2"
    url = rows[1][header.index("service URL")]
    assert url == "wss://x/\\u202eevil\\x09tab", url  # bidi override and tab escaped
    assert "\u202e" not in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) < 174


@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["table", "json"])
def test_a_non_json_answer_is_an_api_error_in_every_mode(
    api: PlivoStandIn, json_flag: list[str]
) -> None:
    api.route("GET", STREAMS, Reply(200, "<html><body>Bad gateway</body></html>"))
    result = run(api, "get", CALL, *json_flag)
    assert result.exit_code == 5, result.output
    assert result.stdout == "" and result.stderr.startswith("error: ")
