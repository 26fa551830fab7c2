"""`pstream call` through the CLI, against the loopback stand-in of Plivo's Call API."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from plivo_standin import AUTH_ID, AUTH_TOKEN, PlivoStandIn, Reply
from typer.testing import CliRunner, Result

from plivo_stream_cli.adapters import statefile
from plivo_stream_cli.cli import app
from tests.conftest import ROOT

CALLS = f"/v1/Account/{AUTH_ID}/Call/"
TO, FROM = "+14155550100", "+14155550199"
FIRED = {
    "api_id": "97ceeb52-58b6-11e1-86da-77300b68f8bb",
    "message": "call fired",
    "request_uuid": "75cfbb98-58b6-11e1-86da-adf28403fe48",
}
runner = CliRunner()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("PLIVO_AUTH_ID", "PLIVO_AUTH_TOKEN", "PLIVO_API_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PSTREAM_STATE_DIR", str(tmp_path / "state"))


@pytest.fixture
def api() -> Iterator[PlivoStandIn]:
    with PlivoStandIn() as server:
        server.route("POST", CALLS, Reply(201, FIRED))
        yield server


def env_for(api: PlivoStandIn) -> dict[str, str]:
    return {"PLIVO_AUTH_ID": AUTH_ID, "PLIVO_AUTH_TOKEN": AUTH_TOKEN, "PLIVO_API_URL": api.url}


def call(api: PlivoStandIn, *args: str) -> Result:
    return runner.invoke(app, ["call", *args], env=env_for(api))


def a_serve(public_url: str | None) -> statefile.ServeEntry:
    """A running serve as `pstream call` sees it (this test process is alive, like a serve)."""
    return statefile.register_serve(
        control_url="ws://127.0.0.1:1/control",
        token="control-token",
        local_url="ws://127.0.0.1:8080/stream",
        public_url=public_url,
    )


def test_call_sends_from_to_and_the_answer_url(api: PlivoStandIn) -> None:
    result = call(api, TO, "--from", FROM, "--answer-url", "https://bot.example.com/answer", "-y")
    assert result.exit_code == 0, result.output
    assert result.stdout == FIRED["request_uuid"] + "\n"
    (request,) = api.requests
    assert (request.method, request.path) == ("POST", CALLS)
    assert request.json == {
        "from": FROM,
        "to": TO,
        "answer_url": "https://bot.example.com/answer",
        "answer_method": "POST",
    }
    assert f"calling {TO} from {FROM}" in result.stderr
    assert AUTH_TOKEN not in result.output


def test_call_dials_into_the_running_serve(api: PlivoStandIn) -> None:
    a_serve(None)  # a serve with no public URL: Plivo could not reach it
    a_serve("https://abc.ngrok.app")
    result = call(api, "+1 (415) 555-0100", "--from", FROM, "--yes")
    assert result.exit_code == 0, result.output
    assert api.requests[0].json["answer_url"] == "https://abc.ngrok.app/answer"
    assert api.requests[0].json["to"] == TO


def test_call_without_a_serve_or_answer_url_says_what_to_do(api: PlivoStandIn) -> None:
    result = call(api, TO, "--from", FROM, "--yes")
    assert result.exit_code == 2
    assert "pstream serve --ngrok" in result.stderr and "--answer-url" in result.stderr
    assert api.requests == []


def test_call_refuses_without_yes_when_stdin_is_not_a_terminal(api: PlivoStandIn) -> None:
    result = call(api, TO, "--from", FROM, "--answer-url", "https://bot.example.com/answer")
    assert result.exit_code == 2
    assert "costs money" in result.stderr and "--yes" in result.stderr
    assert api.requests == []


@pytest.mark.parametrize(
    ("to", "from_", "complaint"),
    [
        ("14155550100", FROM, "add the + and the country code"),
        ("+04155550100", FROM, "TO must be an E.164"),
        (TO, "+1415555010012345", "--from must be an E.164"),
        (TO, "sip:bob@example.com", "--from must be an E.164"),
        ("+1415555O100", FROM, "TO must be an E.164"),
    ],
)
def test_numbers_are_checked_before_any_request(
    api: PlivoStandIn, to: str, from_: str, complaint: str
) -> None:
    result = call(api, to, "--from", from_, "--answer-url", "https://b.example/a", "--yes")
    assert result.exit_code == 2
    assert complaint in result.stderr
    assert api.requests == []


def test_a_bad_answer_url_is_a_usage_error(api: PlivoStandIn) -> None:
    result = call(api, TO, "--from", FROM, "--answer-url", "ftp://x/answer", "--yes")
    assert result.exit_code == 2
    assert api.requests == []


def test_json_prints_the_api_answer_untouched(api: PlivoStandIn) -> None:
    result = call(api, TO, "--from", FROM, "--answer-url", "https://b.example/a", "--yes", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == FIRED


@pytest.mark.parametrize(
    ("reply", "code", "words"),
    [
        (Reply(400, {"error": "invalid from number"}), 4, "invalid from number"),
        (Reply(401, {"error": "Authentication failed"}), 3, "bad credentials"),
        (Reply(500, {"error": "boom"}), 5, "failed (500)"),
    ],
)
def test_api_errors_map_to_exit_codes_and_a_call_is_never_retried(
    api: PlivoStandIn, reply: Reply, code: int, words: str
) -> None:
    api.route("POST", CALLS, reply)
    result = call(api, TO, "--from", FROM, "--answer-url", "https://b.example/a", "--yes")
    assert result.exit_code == code
    assert words in result.stderr
    assert len(api.requests) == 1
    assert AUTH_TOKEN not in result.output


def test_missing_credentials_exit_3(api: PlivoStandIn) -> None:
    args = ["call", TO, "--from", FROM, "--answer-url", "https://b.example/a", "--yes"]
    result = runner.invoke(app, args, env={"PLIVO_API_URL": api.url})
    assert result.exit_code == 3
    assert api.requests == []


@pytest.mark.parametrize(("answer", "code", "placed"), [(b"y\n", 0, 1), (b"n\n", 130, 0)])
def test_on_a_terminal_it_asks_first(
    api: PlivoStandIn, answer: bytes, code: int, placed: int
) -> None:
    master, slave = pty.openpty()
    try:
        os.write(master, answer)  # typed ahead: the prompt reads it
        done = subprocess.run(
            [sys.executable, "-m", "plivo_stream_cli", "call", TO, "--from", FROM,
             "--answer-url", "https://b.example/a"],
            stdin=slave, capture_output=True, text=True, timeout=60, cwd=ROOT,
            env={**os.environ, "NO_COLOR": "1", **env_for(api)},
        )  # fmt: skip
    finally:
        os.close(slave)
        os.close(master)
    assert done.returncode == code, done.stderr
    assert (
        f"Place a call to {TO} from {FROM}" in done.stderr and f"account {AUTH_ID}" in done.stderr
    )
    assert len(api.requests) == placed
    assert done.stdout == (FIRED["request_uuid"] + "\n" if placed else "")
