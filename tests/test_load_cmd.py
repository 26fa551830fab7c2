"""`pstream load` against real bots on loopback: one that slows down with load, one that never
answers; the steps, the table, the JSON, the exit codes and the bad flags."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result
from websockets.asyncio.server import ServerConnection, serve

from plivo_stream_cli import metrics, ramp, synth
from plivo_stream_cli.adapters.audiofile import write_wav
from plivo_stream_cli.cli import app
from plivo_stream_cli.errors import UsageError
from tests.conftest import free_port, serving_in_thread

SPEECH_S = 0.2
PER_CALL_S = 0.08  # the slowing bot's delay per stream open at once


def slowing_bot(delay_per_stream: float | None) -> object:
    """Answers each call once, (delay_per_stream x streams open now) after the speech ends;
    None never answers."""
    open_now = [0]

    async def handler(ws: ServerConnection) -> None:
        open_now[0] += 1
        try:
            async for message in ws:
                if json.loads(message)["event"] == "start" and delay_per_stream is not None:
                    await asyncio.sleep(SPEECH_S + delay_per_stream * open_now[0])
                    payload = base64.b64encode(b"\xff" * 1600).decode()
                    media = {"contentType": "audio/x-mulaw", "sampleRate": 8000, "payload": payload}
                    await ws.send(json.dumps({"event": "playAudio", "media": media}))
        except Exception:
            pass
        finally:
            open_now[0] -= 1

    return handler


@contextlib.contextmanager
def bot(delay_per_stream: float | None) -> Iterator[str]:
    @contextlib.asynccontextmanager
    async def open_server() -> AsyncIterator[str]:
        async with serve(slowing_bot(delay_per_stream), "127.0.0.1", 0) as server:  # type: ignore[arg-type]
            yield f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}/stream"

    with serving_in_thread(open_server) as url:
        yield url


@pytest.fixture
def speech(tmp_path: Path) -> Path:
    path = tmp_path / "speech.wav"
    write_wav(path, synth.tones((440.0,), SPEECH_S, 8000), 8000)
    return path


def load(url: str, speech: Path, *args: str) -> Result:
    base = ["load", url, "--audio", str(speech), "--linger", "0.5", "--step-seconds", "2.5",
            "--warm-up", "0.6", "--max-late-ms", "1000"]  # fmt: skip
    return CliRunner().invoke(app, [*base, *args])


def test_the_largest_step_that_meets_the_threshold(speech: Path) -> None:
    # 1 open: ~80 ms; 2: <= 160 ms; 4: >= 240 ms (3 or 4 open): the limit of 200 sits between
    with bot(PER_CALL_S) as url:
        result = load(url, speech, "--steps", "1,2,4,8", "--max-first-audio-ms", "200")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == ramp.HEADER
    rows = [line.split() for line in lines[1:4]]
    assert [r[0] for r in rows] == ["1", "2", "4"]  # the ramp stops at the first failure
    assert rows[0][-1] == "pass" and rows[1][-1] == "pass"
    assert "FAIL:" in lines[3] and "first_audio_ms: worst" in lines[3]
    assert lines[4] == "largest step meeting the thresholds: 2 calls at once"
    assert "4 calls at once failed" in result.stderr


def test_json_describes_every_step(speech: Path) -> None:
    with bot(PER_CALL_S) as url:
        result = load(url, speech, "--steps", "1,4", "--max-first-audio-ms", "200", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["schema_version"] == metrics.SCHEMA_VERSION
    assert doc["passed"] is True and doc["largest_passing"] == 1
    assert doc["planned_steps"] == [1, 4]
    first, second = doc["steps"]
    assert first["passed"] is True and first["calls"] >= 1 and first["failed_calls"] == 0
    assert first["metrics"]["first_audio_ms"]["count"] == first["calls"]
    assert first["checks"][0]["metric"] == "first_audio_ms" and first["checks"][0]["passed"]
    assert first["pacing"]["count"] > 0 and first["pacing"]["unreliable"] is False
    assert second["passed"] is False and second["checks"][0]["worst"] > 200
    assert first["warm_up_calls"] >= 1  # the calls placed during the warm-up were not counted


def test_a_bot_that_never_answers_fails_the_first_step_with_exit_8(speech: Path) -> None:
    with bot(None) as url:
        result = load(url, speech, "--steps", "1,2", "--max-first-audio-ms", "800")
    assert result.exit_code == 8, result.output
    assert len(result.stdout.splitlines()) == 2  # the header and the first step only
    assert "error: the first step (1 calls at once) already fails" in result.stderr
    assert "no reply after the caller's speech" in result.stderr


def test_nothing_listening_is_a_network_error(speech: Path) -> None:
    url = f"ws://127.0.0.1:{free_port()}/stream"
    result = load(url, speech, "--steps", "1", "--step-seconds", "1", "--warm-up", "0")
    assert result.exit_code == 6, result.output
    assert "cannot connect" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "10,5"], "steps must grow"),
        (["--steps", "a,b"], "expected a list like 10,20,40"),
        (["--steps", "0"], "each step must be between 1"),
        (["--steps", "10:5:1"], "LAST >= FIRST"),
        (
            ["--steps", "2", "--step-seconds", "0"],
            "--step-seconds: accepts a number of seconds above 0",
        ),
        (["--steps", "2", "--warm-up", "40"], "--warm-up must be at least 0"),
        (["--steps", "2", "--max-gap-ms", "-1"], "--max-gap-ms: accepts a number of milliseconds"),
        (["--steps", "2", "--max-late-ms", "0"], "--max-late-ms: accepts"),
        (["--steps", "2", "--max-clear-ms", "100"], "--max-clear-ms needs --barge-in-at"),
    ],
)
def test_bad_flags_are_one_error_line_and_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["load", "ws://127.0.0.1:9/stream", *args])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line


def test_steps_parse_lists_and_ranges() -> None:
    assert ramp.parse_steps("10,20, 40") == [10, 20, 40]
    assert ramp.parse_steps("10:40:10") == [10, 20, 30, 40]
    with pytest.raises(UsageError):
        ramp.parse_steps("1:2")


def test_a_late_generator_fails_a_step_whatever_the_bot_did() -> None:
    per_call = [{"first_audio_ms": 100.0, "reply_gaps_ms": []}]
    late = ramp.judge(
        ramp.Step(1, 1, 0, [], per_call, metrics.pacing([1.0] * 50 + [30.0] * 50)),
        {"first_audio_ms": 800.0},
    )
    assert all(c.passed for c in late.checks) and not late.passed
    assert "generator ran late" in late.reason()
    on_time = ramp.judge(
        ramp.Step(1, 1, 0, [], per_call, metrics.pacing([1.0] * 100)), {"first_audio_ms": 800.0}
    )
    assert on_time.passed and on_time.reason() == ""
    assert ramp.largest_passing([on_time, late, on_time]) == 1


def test_gaps_are_held_to_the_limit_one_by_one() -> None:
    per_call = [{"reply_gaps_ms": [20.0, 150.0]}, {"reply_gaps_ms": []}]
    step = ramp.judge(
        ramp.Step(2, 2, 0, [], per_call, metrics.pacing([1.0])), {"reply_gaps_ms": 100.0}
    )
    (gap,) = step.checks
    assert gap.worst == 150.0 and not gap.passed
