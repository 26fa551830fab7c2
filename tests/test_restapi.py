"""The REST client: pure helpers, and PlivoClient against the loopback stand-in of Plivo's API."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from plivo_standin import AUTH_ID, AUTH_TOKEN, PlivoStandIn, Reply

from plivo_stream_cli import __version__
from plivo_stream_cli.adapters.restapi import (
    ApiResponse,
    Credentials,
    PlivoClient,
    RetryPolicy,
    account_path,
    api_error,
    error_text,
    get_streams,
    parse_retry_after,
    start_stream,
    stop_streams,
    validate_api_url,
)
from plivo_stream_cli.errors import (
    ApiFailedError,
    ApiRefusedError,
    ConfigError,
    ExitCode,
    NetworkError,
    UsageError,
)

FAST = RetryPolicy(attempts=3, backoff=0.01, max_wait=0.05)


@pytest.fixture
def api() -> Iterator[PlivoStandIn]:
    with PlivoStandIn() as server:
        yield server


def client_for(api: PlivoStandIn, **kwargs: object) -> PlivoClient:
    options: dict[str, object] = {"api_url": api.url, "timeout": 5.0, "retry": FAST, **kwargs}
    return PlivoClient(Credentials(api.auth_id, api.auth_token), **options)  # type: ignore[arg-type]


# --- pure helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("3", 3.0), (" 0 ", 0.0), ("1.5", 1.5), ("-1", None), ("soon", None), ("nan", None)],
)
def test_parse_retry_after_seconds(value: str, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


def test_parse_retry_after_http_date() -> None:
    now = datetime(2024, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    later = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert parse_retry_after(later, now=now) == 7.0
    earlier = format_datetime(now - timedelta(seconds=7), usegmt=True)
    assert parse_retry_after(earlier, now=now) == 0.0


def test_retry_delay_doubles_and_is_capped() -> None:
    policy = RetryPolicy(attempts=5, backoff=0.5, max_wait=1.5)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 1.5, 1.5]


def test_retry_after_replaces_backoff_but_not_the_cap() -> None:
    policy = RetryPolicy(backoff=0.5, max_wait=30.0)
    assert policy.delay(1, "4") == 4.0
    assert policy.delay(1, "86400") == 30.0
    assert policy.delay(2, "garbage") == 1.0


def test_account_path_quotes_parts_and_keeps_the_trailing_slash() -> None:
    assert account_path("MA1", "Call", "c-1", "Stream") == "/v1/Account/MA1/Call/c-1/Stream/"
    assert account_path("MA1", "Call", "a/b?c") == "/v1/Account/MA1/Call/a%2Fb%3Fc/"


@pytest.mark.parametrize("bad", ["", "..", "."])
def test_account_path_refuses_parts_that_change_the_path(bad: str) -> None:
    with pytest.raises(UsageError):
        account_path("MA1", "Call", bad, "Stream")


def test_validate_api_url() -> None:
    assert validate_api_url("https://api.plivo.com/") == "https://api.plivo.com"
    for bad in ("api.plivo.com", "ftp://x", "http://"):
        with pytest.raises(UsageError):
            validate_api_url(bad)


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ('{"api_id": "x", "error": "No active stream found"}', "No active stream found"),
        ('{"error": {"service_url": ["required"]}}', '{"service_url":["required"]}'),
        ('{"message": "slow down"}', "slow down"),
        ("<html>\n  Bad   Gateway </html>", "<html> Bad Gateway </html>"),
        ("", ""),
    ],
)
def test_error_text_uses_the_apis_own_words(body: str, text: str) -> None:
    assert error_text(body) == text


def test_error_text_truncates_long_pages() -> None:
    assert len(error_text("x" * 5000)) == 203


@pytest.mark.parametrize(
    ("status", "kind", "code", "words"),
    [
        (401, ConfigError, ExitCode.CONFIG, "bad credentials"),
        (404, ApiRefusedError, ExitCode.API_REFUSED, "no such thing"),
        (400, ApiRefusedError, ExitCode.API_REFUSED, "No active stream found"),
        (429, ApiRefusedError, ExitCode.API_REFUSED, "rate limited"),
        (500, ApiFailedError, ExitCode.API_FAILED, "failed (500)"),
        (503, ApiFailedError, ExitCode.API_FAILED, "failed (503)"),
    ],
)
def test_api_error_maps_status_to_exit_code(
    status: int, kind: type[Exception], code: ExitCode, words: str
) -> None:
    error = api_error(status, '{"error": "No active stream found"}', not_found="no such thing")
    assert isinstance(error, kind)
    assert error.exit_code == code
    assert words in error.message


def test_credentials_from_flags_then_environment() -> None:
    env = {"PLIVO_AUTH_ID": "MAENV", "PLIVO_AUTH_TOKEN": "envtoken"}
    assert Credentials.resolve(None, None, env) == Credentials("MAENV", "envtoken")
    assert Credentials.resolve("MAFLAG", "flagtoken", env) == Credentials("MAFLAG", "flagtoken")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN"),
        ({"PLIVO_AUTH_ID": "MA1"}, "set PLIVO_AUTH_TOKEN "),
        ({"PLIVO_AUTH_TOKEN": "t", "PLIVO_AUTH_ID": ""}, "set PLIVO_AUTH_ID "),
    ],
)
def test_missing_credentials_say_how_to_set_them(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Credentials.resolve(None, None, env)
    assert named in caught.value.message
    assert "\n" not in caught.value.message


def test_credentials_repr_hides_the_token() -> None:
    assert "sekrit" not in repr(Credentials("MA1", "sekrit"))


def test_api_response_json() -> None:
    assert ApiResponse(204, "").json() is None
    assert ApiResponse(200, '{"a": 1}').json() == {"a": 1}
    with pytest.raises(ApiFailedError):
        ApiResponse(200, "<html>").json()


# --- the client against the stand-in ---------------------------------------------------------


def test_get_sends_basic_auth_user_agent_and_the_trailing_slash(api: PlivoStandIn) -> None:
    path = f"/v1/Account/{AUTH_ID}/Call/c-1/Stream/"
    api.route("GET", path, Reply(200, {"api_id": "a", "meta": {}, "objects": []}))
    with client_for(api) as client:
        response = get_streams(client, "c-1")
    assert response.json() == {"api_id": "a", "meta": {}, "objects": []}
    (request,) = api.requests
    assert (request.method, request.path) == ("GET", path)
    expected = base64.b64encode(f"{AUTH_ID}:{AUTH_TOKEN}".encode()).decode()
    assert request.header("Authorization") == f"Basic {expected}"
    assert request.header("User-Agent") == f"pstream/{__version__}"


def test_one_stream_path_ends_with_a_slash(api: PlivoStandIn) -> None:
    path = f"/v1/Account/{AUTH_ID}/Call/c-1/Stream/s-1/"
    api.route("DELETE", path, Reply(204))
    with client_for(api) as client:
        assert stop_streams(client, "c-1", "s-1").status_code == 204
    assert [r.path for r in api.requests] == [path]


def test_a_trailing_slash_on_the_api_url_is_not_doubled(api: PlivoStandIn) -> None:
    with client_for(api, api_url=api.url + "/") as client, pytest.raises(ApiRefusedError):
        get_streams(client, "c-1")
    assert api.requests[0].path == f"/v1/Account/{AUTH_ID}/Call/c-1/Stream/"


def test_get_retries_5xx_then_succeeds(api: PlivoStandIn) -> None:
    path = api.account_path("Call", "c-1", "Stream")
    api.route("GET", path, Reply(502), Reply(503), Reply(200, {"objects": []}))
    with client_for(api) as client:
        assert get_streams(client, "c-1").json() == {"objects": []}
    assert len(api.requests) == 3


def test_get_gives_up_after_the_attempts(api: PlivoStandIn) -> None:
    path = api.account_path("Call", "c-1", "Stream")
    api.route("GET", path, Reply(500, {"error": "boom"}))
    with client_for(api) as client, pytest.raises(ApiFailedError) as caught:
        get_streams(client, "c-1")
    assert len(api.requests) == FAST.attempts
    assert "after 3 attempts: boom" in caught.value.message


def test_retry_after_is_capped(api: PlivoStandIn) -> None:
    path = api.account_path("Call", "c-1", "Stream")
    api.route("GET", path, Reply(429, headers={"Retry-After": "3600"}), Reply(200, {}))
    with client_for(api) as client:
        get_streams(client, "c-1")
    first, second = api.requests
    assert second.at - first.at < 2.0


def test_post_is_not_retried(api: PlivoStandIn) -> None:
    path = api.account_path("Call", "c-1", "Stream")
    api.route("POST", path, Reply(500), Reply(200, {"stream_id": "s"}))
    with client_for(api) as client, pytest.raises(ApiFailedError):
        start_stream(client, "c-1", {"service_url": "wss://x"})
    assert len(api.requests) == 1


def test_post_retry_can_be_asked_for(api: PlivoStandIn) -> None:
    path = api.account_path("Application", "app-1")
    api.route("POST", path, Reply(503), Reply(202, {"message": "changed"}))
    with client_for(api) as client:
        response = client.request("POST", "Application", "app-1", json={"a": 1}, retry=True)
    assert response.status_code == 202
    assert [r.json for r in api.requests] == [{"a": 1}, {"a": 1}]


def test_bad_credentials_are_a_config_error(api: PlivoStandIn) -> None:
    api.route("GET", api.account_path("Call", "c-1", "Stream"), Reply(200, {}))
    client = PlivoClient(Credentials(AUTH_ID, "wrong-token"), api_url=api.url, retry=FAST)
    with client, pytest.raises(ConfigError) as caught:
        get_streams(client, "c-1")
    assert "bad credentials" in caught.value.message
    assert len(api.requests) == 1


def test_the_token_is_scrubbed_from_errors(api: PlivoStandIn) -> None:
    path = api.account_path("Call", "c-1", "Stream")
    api.route("GET", path, Reply(400, {"error": f"token {AUTH_TOKEN} is odd"}))
    with client_for(api) as client, pytest.raises(ApiRefusedError) as caught:
        get_streams(client, "c-1")
    assert AUTH_TOKEN not in caught.value.message
    assert "token *** is odd" in caught.value.message


def test_a_hanging_server_times_out_and_get_is_retried(api: PlivoStandIn) -> None:
    api.route("GET", api.account_path("Call", "c-1", "Stream"), Reply(hang=True))
    retry = RetryPolicy(attempts=2, backoff=0.01)
    client = client_for(api, timeout=0.2, retry=retry)
    with client, pytest.raises(NetworkError) as caught:
        get_streams(client, "c-1")
    assert "timed out after 0.2s" in caught.value.message
    assert len(api.requests) == 2


def test_a_refused_connection_is_a_network_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = PlivoClient(
        Credentials(AUTH_ID, AUTH_TOKEN), api_url=f"http://127.0.0.1:{port}", retry=FAST
    )
    with client, pytest.raises(NetworkError) as caught:
        get_streams(client, "c-1")
    assert f"127.0.0.1:{port} (3 attempts)" in caught.value.message
    assert caught.value.exit_code == ExitCode.NETWORK
