"""`serve --loop`: uvloop when installed (auto, the default), or either on request; bad values
are one error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest

from plivo_stream_cli.adapters import eventloop
from plivo_stream_cli.errors import UsageError
from tests.conftest import ROOT, free_port, pstream_process, wait_for_port


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_serve_records_a_call_on_either_loop(loop: str) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    port = free_port()
    serve = pstream_process("serve", "--port", str(port), "--json", "--media", "--loop", loop)
    try:
        wait_for_port(port)
        done = subprocess.run(
            [sys.executable, "-m", "plivo_stream_cli", "simulate",
             f"ws://127.0.0.1:{port}/stream", "--speed", "8", "--linger", "0", "--json"],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        sent = json.loads(done.stdout)["calls"][0]["frames_sent"]
        # webhooks on the same port still answer (uvloop's transports are not asyncio's class)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            assert answer.read().strip() == b"ok"
    finally:
        serve.send_signal(signal.SIGTERM)
        out, err = serve.communicate(timeout=60)
    assert serve.returncode == 0, err
    media = [r for r in map(json.loads, out.splitlines()) if r["event"] == "media"]
    assert len(media) == sent > 0


def test_a_bad_loop_is_one_error_line_and_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "plivo_stream_cli", "serve", "--loop", "trio"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --loop must be one of"), lines


def test_choose_sets_the_loop_for_child_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(eventloop.ENV, raising=False)
    assert eventloop.choose("asyncio") == "asyncio"
    assert os.environ[eventloop.ENV] == "asyncio"
    assert eventloop.choose("uvloop" if eventloop.have_uvloop() else "asyncio")
    expected = "uvloop" if eventloop.have_uvloop() else "asyncio"
    assert eventloop.choose("auto") == expected  # serve's default
    assert os.environ[eventloop.ENV] == expected
    with pytest.raises(UsageError):
        eventloop.choose("nope")
