"""`pstream xml` through the CLI: XML on stdout or in a file, warnings and errors on stderr."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from plivo_stream_cli.cli import app

WSS = "wss://example.com/stream"


def run(*args: str) -> Result:
    return CliRunner().invoke(app, ["xml", *args])


def stream_attrs(stdout: str) -> dict[str, str]:
    root = ET.fromstring(stdout.split("\n", 1)[1])
    stream = root.find("Stream")
    assert stream is not None and stream.text == WSS
    return dict(stream.attrib)


def test_quickstart_command() -> None:
    result = run("--bidirectional", WSS)
    assert result.exit_code == 0
    assert result.stderr == ""
    assert result.stdout.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<Response>\n')
    assert stream_attrs(result.stdout) == {
        "bidirectional": "true",
        "audioTrack": "inbound",
        "contentType": "audio/x-mulaw;rate=8000",
        "keepCallAlive": "false",
    }


def test_every_option() -> None:
    result = run(
        "--no-bidirectional",
        "--keep-call-alive",
        "--content-type",
        "audio/x-l16;rate=8000",
        "--audio-track",
        "BOTH",
        "--stream-timeout",
        "120",
        "--status-callback-url",
        "https://example.com/status",
        "--status-callback-method",
        "get",
        "--extra-header",
        "userId=12345",
        "--extra-header",
        "tier=gold plus",
        "--speak",
        "Connecting you now",
        WSS,
    )
    assert result.exit_code == 0, result.stderr
    assert "<Speak>Connecting you now</Speak>" in result.stdout
    assert stream_attrs(result.stdout) == {
        "bidirectional": "false",
        "audioTrack": "both",
        "streamTimeout": "120",
        "statusCallbackUrl": "https://example.com/status",
        "statusCallbackMethod": "GET",
        "contentType": "audio/x-l16;rate=8000",
        "extraHeaders": "userId=12345;tier=gold%20plus",
        "keepCallAlive": "true",
    }


def test_ws_url_warns_on_stderr_and_still_prints() -> None:
    result = run("ws://localhost:8080/stream")
    assert result.exit_code == 0
    assert "ws://localhost:8080/stream</Stream>" in result.stdout
    assert result.stderr.startswith("warning: ws:// is unencrypted")
    assert "wss:// in production" in result.stderr


def test_output_file(tmp_path: Path) -> None:
    target = tmp_path / "answer.xml"
    result = run("-o", str(target), WSS)
    assert result.exit_code == 0
    assert result.stdout == ""
    assert f"wrote {target}" in result.stderr
    text = target.read_text("utf-8")
    assert text.startswith("<?xml") and text.endswith("</Response>\n")
    assert stream_attrs(text)["bidirectional"] == "false"


def test_output_file_that_cannot_be_written(tmp_path: Path) -> None:
    result = run("--output", str(tmp_path / "missing" / "answer.xml"), WSS)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: cannot write ")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["https://example.com/stream"], "is not a WebSocket URL: give your server's wss://"),
        (["wss://example.com/" + "a" * 2048], "Plivo accepts at most 2048"),
        (["--bidirectional", "--audio-track", "outbound", WSS], "use --audio-track inbound"),
        (["--bidirectional", "--audio-track", "both", WSS], "or --no-bidirectional"),
        (
            ["--stream-timeout", "0", WSS],
            "--stream-timeout: accepts a whole number of seconds from 1",
        ),
        (["--stream-timeout", "-3", WSS], "(got -3)"),
        (["--status-callback-url", "ftp://x/y", WSS], "is not an http(s) URL"),
        (["--extra-header", "userId", WSS], "must look like KEY=VALUE"),
        (["--extra-header", "=1", WSS], "must look like KEY=VALUE"),
        (["--extra-header", "a=1", "--extra-header", "a=2", WSS], "given twice"),
        (["--extra-header", "user.id=1", WSS], "use only letters, digits"),
        (["--extra-header", "userId=", WSS], "needs a value"),
        (["--extra-header", "k=" + "v" * 600, WSS], "Plivo allows at most 512"),
        (["--speak", "", WSS], "--speak needs some text"),
    ],
)
def test_violations_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "args",
    [
        ["--content-type", "audio/wav", WSS],
        ["--audio-track", "sideways", WSS],
        ["--status-callback-method", "PUT", WSS],
        ["--stream-timeout", "soon", WSS],
        [],
    ],
)
def test_bad_flag_values_are_usage_errors(args: list[str]) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert result.stdout == ""


def test_help_teaches_with_an_example() -> None:
    result = run("--help")
    assert result.exit_code == 0
    assert "Example: pstream xml --bidirectional" in result.stdout
    for flag in ("--keep-call-alive", "--content-type", "--extra-header", "--speak", "--output"):
        assert flag in result.stdout
