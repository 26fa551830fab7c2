"""The pytest plugin, as a bot project uses it: pytest run in a subprocess on a sample test file,
against a real bot on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from plivo_stream_cli.adapters.audiofile import write_wav
from tests.test_scenario_runner import CALLER, TurnBot, bot_in_thread

SAMPLE = """
import pytest


def test_the_bot_answers_in_time(pstream_call):
    run = pstream_call(steps=[{"say": "hello.wav"}, {"wait_for": {"checkpoint": "reply-1"}}],
                       expect=[{"replies_within_ms": 800}, {"confirms_checkpoint": True}])
    run.assert_passed()
    assert 250 < run.first_audio_ms < 800
    assert run.metrics["first_audio_ms"]["count"] == 1


@pytest.mark.anyio
async def test_async_with_a_scenario_file_and_repeats(pstream_acall):
    run = await pstream_acall(scenario="call.yaml", repeat=2, concurrency=2)
    assert run.passed, run.failures
    assert len(run.calls) == 2 and run.metrics["first_audio_ms"]["count"] == 2


def test_a_failing_assertion_is_reported(pstream_call):
    run = pstream_call(steps=[{"say": "hello.wav"}, {"silence": 0.8}],
                       expect=[{"not": {"replies_within_ms": 5000}}])
    assert not run.passed
    run.assert_passed()


def test_a_missing_measurement_fails(pstream_call):
    run = pstream_call(steps=[{"silence": 0.2}], expect=[{"clears_within_ms": 500}])
    assert run.failures == ["call 1: clears_within_ms: 500: no barge-in to measure from "
                            "(missing measurement)"]
"""

SCENARIO = """\
linger: 0.1
steps:
  - say: hello.wav
  - wait_for: {checkpoint: reply-1, timeout: 5}
expect:
  - replies_within_ms: 800
"""


def test_a_bot_project_runs_simulated_calls_from_pytest(tmp_path: Path) -> None:
    (tmp_path / "test_bot.py").write_text(textwrap.dedent(SAMPLE))
    (tmp_path / "call.yaml").write_text(SCENARIO)
    write_wav(tmp_path / "hello.wav", CALLER, 8000)
    with bot_in_thread(TurnBot()) as url:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--pstream-url", url],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "1 failed, 3 passed" in out, out
    assert "FAILED test_bot.py::test_a_failing_assertion_is_reported" in out
    assert "not replies_within_ms: 5000: reply" in out  # the failure names the assertion


def test_without_a_url_the_fixture_says_how_to_give_one(tmp_path: Path) -> None:
    (tmp_path / "test_x.py").write_text("def test_x(pstream_url):\n    pass\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert "no bot URL: pass --pstream-url" in result.stdout


def test_the_plugin_imports_nothing_heavy_at_pytest_start_up() -> None:
    code = (
        "import sys\n"
        "import plivo_stream_cli.pytest_plugin\n"
        "heavy = {'websockets', 'yaml', 'plivo_stream_cli.adapters.simulator',"
        " 'plivo_stream_cli.testing',"
        " 'typer', 'rich', 'httpx', 'plivo', 'asyncio'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
