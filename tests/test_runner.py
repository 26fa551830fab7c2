"""Tests for console.runner's `--json` printer: batched, yet prompt and in order."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from plivo_stream_cli.adapters.feedwriter import JsonPrinter
from tests.conftest import run


def _records(n: int) -> list[dict[str, object]]:
    return [{"t": 1.5 + i, "stream": "s", "dir": "in", "event": "dtmf", "digit": str(i)}
            for i in range(n)]  # fmt: skip


def test_outside_an_event_loop_each_line_is_written_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    printer = JsonPrinter()
    printer(_records(1)[0])
    assert out.getvalue() == '{"t":1.5,"stream":"s","dir":"in","event":"dtmf","digit":"0"}\n'


def test_lines_are_batched_then_written_promptly_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    printer = JsonPrinter(delay=0.05, max_lines=1000)

    async def scenario() -> None:
        for record in _records(3):
            printer(record)
        assert out.getvalue() == ""  # gathered, not one write per line
        while not out.getvalue():  # the timer writes them without any further record
            await asyncio.sleep(0.01)

    run(scenario(), timeout=10)
    assert [json.loads(line) for line in out.getvalue().splitlines()] == _records(3)


def test_a_full_batch_and_an_explicit_flush_write_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    printer = JsonPrinter(delay=3600, max_lines=4)

    async def scenario() -> None:
        for record in _records(5):
            printer(record)
        assert len(out.getvalue().splitlines()) == 4
        printer(_records(6)[5])
        printer.flush()
        assert len(out.getvalue().splitlines()) == 6

    run(scenario(), timeout=10)
    assert [json.loads(line) for line in out.getvalue().splitlines()] == _records(6)
