"""The architecture's promise: pure modules import no I/O, UI or network libraries."""

from __future__ import annotations

import subprocess
import sys

import pytest

PURE_MODULES = [
    "errors",
    "formats",
    "events",
    "session",
    "signature",
    "streamxml",
    "codec",
    "feed",
    "metrics",
    "synth",
    "calls",
    "nonces",
    "capturefeed",
    "streams_table",
    "wireframes",
    "scenario",
    "impairment",
    "baseline",
    "junit",
]
FORBIDDEN = [
    "websockets",
    "httpx",
    "typer",
    "rich",
    "asyncio",
    "plivo",
    "pyngrok",
    "socket",
    "lxml",
]


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports_nothing_heavy(module: str) -> None:
    code = (
        "import sys\n"
        f"import plivo_stream_cli.{module}\n"
        f"print(sorted(set({FORBIDDEN!r}) & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", f"{module} imports {result.stdout.strip()}"
