"""The load benchmark's smoke run: 20 real-time calls for 8 s against `serve --record --json`.

The benchmark's figures are not pass/fail, but this run is, so `benchmarks/load.py` cannot rot:
every frame sent must be received by the server and every sample recorded.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the benchmark reads /proc")
def test_smoke_run_loses_nothing() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "load.py"), "--smoke", "--json"],
        capture_output=True, text=True, timeout=110, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (trial,) = json.loads(done.stdout.splitlines()[-1])["pstream"]
    assert trial["calls"] == 20
    assert trial["frames_sent"] == 20 * trial["generator"]["frames_per_call"] == 20 * 400
    assert trial["frames_received"] == trial["frames_sent"]
    assert trial["samples_recorded"] == trial["samples_sent"] == trial["frames_sent"] * 160
    assert trial["generator"]["send_failures"] == 0
    assert trial["cpu_s"] > 0 and trial["peak_rss_mb"] > 0
