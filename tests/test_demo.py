"""`pstream demo`: a whole local call that leaves playable recordings, through the CLI."""

from __future__ import annotations

import json
import time
import wave
from pathlib import Path

from typer.testing import CliRunner

from plivo_stream_cli import synth
from plivo_stream_cli.cli import app
from plivo_stream_cli.commands.demo_cmd import DIGIT, caller_pcm, reply_pcm

RATE = 8000


def seconds(pcm: bytes) -> float:
    return len(pcm) / 2 / RATE


def wav_info(path: Path) -> tuple[int, float]:
    with wave.open(str(path)) as wav:
        return wav.getnchannels(), wav.getnframes() / wav.getframerate()


def only(directory: Path, pattern: str) -> Path:
    (path,) = directory.glob(pattern)
    return path


def test_demo_runs_in_real_time_and_leaves_playable_wavs(tmp_path: Path) -> None:
    began = time.monotonic()
    result = CliRunner().invoke(app, ["demo", "--dir", str(tmp_path)])
    elapsed = time.monotonic() - began
    assert result.exit_code == 0, result.output
    assert elapsed < 15
    caller = seconds(caller_pcm(RATE))
    played = seconds(synth.greeting(RATE) + reply_pcm(DIGIT, RATE))
    assert wav_info(only(tmp_path, "*.inbound.wav")) == (1, caller)
    assert wav_info(only(tmp_path, "*.outbound.wav")) == (1, played)
    assert wav_info(only(tmp_path, "*.call.wav")) == (2, caller)
    listed = result.stdout.splitlines()
    assert len(listed) == 4 and f"{caller:.2f} s" in listed[0]
    assert "signature valid" in result.stderr  # the demo signs and checks like Plivo
    assert "greeting, key-5" in result.stderr
    assert "listen" in result.stderr and "pstream replay" in result.stderr


def test_demo_json_describes_the_call_and_its_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--dir", str(tmp_path), "--speed", "4", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["schema_version"] == 2 and doc["directory"] == str(tmp_path.resolve())
    kinds = {r["kind"]: r for r in doc["recordings"]}
    assert set(kinds) == {"inbound", "outbound", "call", "capture"}
    assert all(Path(r["path"]).is_file() for r in doc["recordings"])
    assert kinds["inbound"]["seconds"] == round(seconds(caller_pcm(RATE)), 3)
    call = doc["call"]
    assert call["dtmf_sent"] == DIGIT and call["checkpoints_confirmed"] == ["greeting", "key-5"]
    assert call["metrics"]["first_audio_ms"] is not None and call["violations"] == []


def test_demo_into_an_unwritable_place_exits_2(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = CliRunner().invoke(app, ["demo", "--dir", str(blocker / "sub")])
    assert result.exit_code == 2 and "cannot record into" in result.stderr


def test_demo_help_has_an_example() -> None:
    result = CliRunner().invoke(app, ["demo", "--help"])
    assert result.exit_code == 0 and "Example: pstream demo" in result.stdout
