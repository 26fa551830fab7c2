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
        "serve", "--port", str(port), "--json", "--record", str(record),
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
