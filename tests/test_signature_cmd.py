"""`pstream signature sign|check` through the CLI: output, exit codes, and the token kept secret."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner, Result

from plivo_stream_cli.cli import app
from plivo_stream_cli.signature import compute_v3, validate_v3

TOKEN = "my_auth_token"
NONCE = "12345678901234567890"
STREAM_SIG = "iWDL9EIFrrFD0sSY8YSqsLndLMLsbzXyLyWrhxHNlJ8="
POST_SIG = "qj9kJL8p4OZ/fBEtyOvMISQl6QNLxSlQ+Fqn8f7SdlM="
POST_PARAMS = [
    "--param",
    "CallUUID=abc",
    "--param",
    "From=+15551234567",
    "--param",
    "To=+15557654321",
]


@pytest.fixture(autouse=True)
def token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLIVO_AUTH_TOKEN", TOKEN)


def run(*args: str) -> Result:
    result = CliRunner().invoke(app, ["signature", *args])
    assert TOKEN not in result.stdout + result.stderr
    return result


def test_sign_prints_curl_ready_headers() -> None:
    result = run("sign", "https://example.com/stream", "--nonce", NONCE)
    assert result.exit_code == 0
    assert result.stdout == (
        f"X-Plivo-Signature-V3: {STREAM_SIG}\nX-Plivo-Signature-V3-Nonce: {NONCE}\n"
    )
    assert result.stderr == ""


def test_sign_websocket_url_uses_the_https_form_and_says_so() -> None:
    result = run("sign", "wss://example.com/stream", "--nonce", NONCE)
    assert result.exit_code == 0
    assert f"X-Plivo-Signature-V3: {STREAM_SIG}\n" in result.stdout
    assert "signed https://example.com/stream" in result.stderr


def test_sign_post_json() -> None:
    result = run(
        "sign", "https://example.com/answer", "--method", "post", *POST_PARAMS,
        "--nonce", NONCE, "--json",
    )  # fmt: skip
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "X-Plivo-Signature-V3": POST_SIG,
        "X-Plivo-Signature-V3-Nonce": NONCE,
    }


def test_sign_repeated_param_keeps_every_value() -> None:
    result = run(
        "sign", "https://e.com/cb", "--method", "POST", "--param", "k=2", "--param", "k=1",
        "--nonce", NONCE, "--json",
    )  # fmt: skip
    expected = compute_v3("https://e.com/cb", NONCE, TOKEN, method="POST", params={"k": ["1", "2"]})
    assert json.loads(result.stdout)["X-Plivo-Signature-V3"] == expected


def test_sign_fresh_nonce_validates() -> None:
    result = run("sign", "wss://example.com/stream", "--json")
    headers = json.loads(result.stdout)
    nonce = headers["X-Plivo-Signature-V3-Nonce"]
    assert len(nonce) == 20 and nonce.isdigit()
    assert validate_v3("https://example.com/stream", nonce, headers["X-Plivo-Signature-V3"], TOKEN)


def test_auth_token_flag_warns_and_is_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLIVO_AUTH_TOKEN")
    result = run("sign", "https://example.com/stream", "--nonce", NONCE, "--auth-token", TOKEN)
    assert result.exit_code == 0
    assert STREAM_SIG in result.stdout
    assert "prefer setting PLIVO_AUTH_TOKEN" in result.stderr


@pytest.mark.parametrize("command", ["sign", "check"])
def test_missing_token_exits_3(monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    monkeypatch.delenv("PLIVO_AUTH_TOKEN")
    extra = ["--signature", STREAM_SIG, "--nonce", NONCE] if command == "check" else []
    result = run(command, "https://example.com/stream", *extra)
    assert result.exit_code == 3
    assert result.stderr == "error: no auth token: set PLIVO_AUTH_TOKEN or pass --auth-token\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--param", "a=1"], "--param is for POST form fields"),
        (["--method", "POST", "--param", "novalue"], "must look like KEY=VALUE"),
        (["--nonce", ""], "--nonce must be non-empty"),
        (["--nonce", "1,2"], "without commas"),
    ],
)
def test_sign_usage_errors(args: list[str], message: str) -> None:
    result = run("sign", "https://example.com/stream", *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert message in result.stderr


@pytest.mark.parametrize("url", ["ftp://example.com/x", "example.com/stream"])
def test_url_that_cannot_be_signed(url: str) -> None:
    result = run("sign", url)
    assert result.exit_code == 2
    assert "give a full URL starting with https://" in result.stderr


def test_method_choice_enforced() -> None:
    assert run("sign", "https://example.com/stream", "--method", "PUT").exit_code == 2


def test_check_valid() -> None:
    result = run("check", "wss://example.com/stream", "--signature", STREAM_SIG, "--nonce", NONCE)
    assert result.exit_code == 0
    assert result.stdout == "valid\n"


def test_check_valid_post_json() -> None:
    result = run(
        "check", "https://example.com/answer", "--method", "POST", *POST_PARAMS,
        "--signature", f"other=,{POST_SIG}", "--nonce", NONCE, "--json",
    )  # fmt: skip
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "valid": True,
        "url": "https://example.com/answer",
        "matches": None,
    }


def test_check_invalid_names_the_variant_that_matches() -> None:
    result = run("check", "http://example.com/stream/", "--signature", STREAM_SIG, "--nonce", NONCE)
    assert result.exit_code == 8
    assert result.stdout == "invalid\n"
    assert result.stderr == (
        "error: signature does not match GET http://example.com/stream/ but matches "
        "https://example.com/stream: validate against that URL (behind a proxy or tunnel, "
        "use its public URL)\n"
    )


def test_check_alt_host_finds_the_tunnel_url() -> None:
    signed = compute_v3("https://abc.ngrok.app/stream", NONCE, TOKEN)
    result = run(
        "check", "ws://localhost:8080/stream", "--signature", signed, "--nonce", NONCE,
        "--alt-host", "abc.ngrok.app", "--json",
    )  # fmt: skip
    assert result.exit_code == 8
    assert json.loads(result.stdout) == {
        "valid": False,
        "url": "http://localhost:8080/stream",
        "matches": "https://abc.ngrok.app/stream",
    }
    assert "but matches https://abc.ngrok.app/stream" in result.stderr


def test_check_invalid_with_no_near_match() -> None:
    result = run("check", "https://example.com/stream", "--signature", "bogus=", "--nonce", NONCE)
    assert result.exit_code == 8
    assert result.stdout == "invalid\n"
    assert "nor any nearby URL" in result.stderr
    assert "check the auth token, nonce and params" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["https://example.com/stream", "--nonce", NONCE],
        ["https://example.com/stream", "--signature", STREAM_SIG],
        ["--signature", STREAM_SIG, "--nonce", NONCE],
    ],
)
def test_check_missing_arguments(args: list[str]) -> None:
    result = run("check", *args)
    assert result.exit_code == 2
    assert result.stdout == ""


def test_check_bad_nonce_is_usage_error() -> None:
    result = run("check", "https://e.com/", "--signature", STREAM_SIG, "--nonce", "a\nb")
    assert result.exit_code == 2
    assert "--nonce must be" in result.stderr


@pytest.mark.parametrize("command", ["sign", "check"])
def test_help_has_an_example(command: str) -> None:
    result = run(command, "--help")
    assert result.exit_code == 0
    assert f"Example: pstream signature {command}" in result.stdout


def test_group_help_lists_both_commands() -> None:
    result = run("--help")
    assert result.exit_code == 0
    assert "sign" in result.stdout and "check" in result.stdout
