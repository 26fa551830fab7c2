"""`pstream serve` and `pstream simulate` as a user runs them: two processes, real sockets."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import wave
from pathlib import Path

import pytest
from typer.testing import CliRunner

from plivo_stream_cli import synth
from plivo_stream_cli.adapters.audiofile import write_wav
from plivo_stream_cli.cli import app
from tests.conftest import ROOT, free_port, pstream_process, wait_for_port

TOKEN = "cli-e2e-token"


def simulate(*args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    env = {"NO_COLOR": "1", "PATH": "/usr/bin:/bin"}
    if token:
        env["PLIVO_AUTH_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "plivo_stream_cli", "simulate", *args],
        capture_output=True, text=True, timeout=120, env=env, cwd=ROOT,
    )  # fmt: skip


@pytest.fixture
def caller_wav(tmp_path: Path) -> Path:
    path = tmp_path / "caller.wav"
    write_wav(path, synth.caller_clip(16000), 16000)
    return path


def test_serve_json_shows_dtmf_records_and_stops_cleanly_on_sigterm(
    tmp_path: Path, caller_wav: Path
) -> None:
    port = free_port()
    record = tmp_path / "rec"
    serve = pstream_process(
        "serve", "--port", str(port), "--json", "--media", "--record", str(record),
        env={"PLIVO_AUTH_TOKEN": TOKEN},
    )  # fmt: skip
    try:
        wait_for_port(port)
        url = f"ws://127.0.0.1:{port}/stream"
        done = simulate(url, "--audio", str(caller_wav), "--dtmf", "5@0.1,#@0.3", "--speed", "4")
        assert done.returncode == 0, done.stderr
        refused = simulate(url, "--speed", "4", token="wrong-token")
        assert refused.returncode == 3
        assert "1008" in refused.stderr and "Traceback" not in refused.stderr
    finally:
        serve.send_signal(signal.SIGTERM)
        out, err = serve.communicate(timeout=60)
    assert serve.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["digit"] for r in records if r["event"] == "dtmf"] == ["5", "#"]
    assert any(r["event"] == "rejected" for r in records)
    media = [r for r in records if r["event"] == "media"]
    assert media and all("payload" not in r and r["bytes"] == 160 for r in media)
    (closed,) = [r for r in records if r["event"] == "closed"]
    inbound = next(Path(f["path"]) for f in closed["files"] if f["path"].endswith("inbound.wav"))
    with wave.open(str(inbound)) as wav:
        assert wav.getnframes() == len(media) * 160
    assert "stopped: 1 streams" in err
    assert TOKEN not in out + err


def test_serve_json_leaves_media_frames_to_the_closing_line_unless_asked(tmp_path: Path) -> None:
    port = free_port()
    serve = pstream_process("serve", "--port", str(port), "--json")
    try:
        wait_for_port(port)
        done = simulate(f"ws://127.0.0.1:{port}/stream", "--speed", "8", "--json", token=None)
        assert done.returncode == 0, done.stderr
        sent = json.loads(done.stdout)["calls"][0]["frames_sent"]
    finally:
        serve.send_signal(signal.SIGTERM)
        out, err = serve.communicate(timeout=60)
    assert serve.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert not [r for r in records if r["event"] == "media"]
    assert [r["event"] for r in records if r.get("dir") == "in"][:1] == ["start"]
    (closed,) = [r for r in records if r["event"] == "closed"]
    assert closed["media"] == sent > 0


def test_serve_media_without_json_is_one_line_and_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "plivo_stream_cli", "serve", "--media"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == "error: --media adds per-frame lines to the --json feed: add --json\n"


def test_serve_ctrl_c_exits_130_and_finalizes_recordings(tmp_path: Path) -> None:
    port = free_port()
    serve = pstream_process("serve", "--port", str(port), "--record", str(tmp_path))
    try:
        wait_for_port(port)
        done = simulate(f"ws://127.0.0.1:{port}/stream", "--speed", "4", token=None)
        assert done.returncode == 0, done.stderr
    finally:
        serve.send_signal(signal.SIGINT)
        _, err = serve.communicate(timeout=60)
    assert serve.returncode == 130
    assert "signature validation is OFF" in err
    assert "recorded" in err and "inbound.wav" in err
    (capture,) = tmp_path.glob("*.jsonl")
    assert f"see the call: pstream report {capture}" in err
    (wav_path,) = tmp_path.glob("*.inbound.wav")
    with wave.open(str(wav_path)) as wav:
        assert wav.getnframes() > 0


def test_serve_refuses_an_unwritable_record_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = CliRunner().invoke(app, ["serve", "--record", str(blocker / "sub")])
    assert result.exit_code == 2
    assert "cannot record into" in result.output


def test_serve_port_in_use_is_a_clear_error() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "--port", str(port)])
    assert result.exit_code == 2
    assert "cannot listen on" in result.output


def test_simulate_to_nothing_is_a_network_error() -> None:
    result = simulate(f"ws://127.0.0.1:{free_port()}/stream")
    assert result.returncode == 6
    assert result.stderr.startswith("error: cannot connect")


# ---------------------------------------------------------------- issue 22: exposure, ngrok


@pytest.mark.parametrize("host", ["", "0.0.0.0", "::", "192.168.1.5", "example.com"])
def test_serve_beyond_loopback_without_a_token_is_refused(host: str) -> None:
    result = CliRunner().invoke(app, ["serve", "--host", host, "-p", "0"], env={})
    assert result.exit_code == 3, result.output
    assert result.stderr.startswith("error: --host ") and result.stderr.count("\n") == 1
    assert "signature checks off" in result.stderr


def test_loopback_hosts_and_the_warning_beyond_them() -> None:
    from plivo_stream_cli.commands.values import exposure, is_loopback

    for host in ("127.0.0.1", "127.5.0.1", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback(host) and exposure(host, None) is None, host
    for host in ("", "0.0.0.0", "::", "10.0.0.1", "bot.example.com"):
        assert not is_loopback(host), host
        warning = exposure(host, "token")
        assert warning is not None and "reachable from other machines" in warning
    assert "every interface" in (exposure("", "t") or "")


def test_serve_ngrok_without_a_token_says_how_to_set_one(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "NGROK_AUTHTOKEN": ""}
    result = CliRunner().invoke(app, ["serve", "--ngrok", "-p", "0"], env=env)
    assert result.exit_code == 3, result.output
    assert result.stderr.count("\n") == 1 and "NGROK_AUTHTOKEN" in result.stderr
    assert "downloading" not in result.output.lower()


def test_a_token_in_the_ngrok_config_counts(tmp_path: Path) -> None:
    from plivo_stream_cli.adapters.tunnel import configured_authtoken, ngrok_config_files

    paths = ngrok_config_files(home=str(tmp_path), xdg="")
    assert not configured_authtoken(paths)
    config = tmp_path / ".config" / "ngrok" / "ngrok.yml"
    config.parent.mkdir(parents=True)
    config.write_text('version: "2"\nauthtoken: \n')
    assert not configured_authtoken(paths)  # an empty token is no token
    config.write_text('version: "2"\nauthtoken: 2abcDEF_secret\n')
    assert configured_authtoken(paths)
