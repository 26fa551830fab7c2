"""Which event loop runs a serving process: asyncio's own, or uvloop (the `[fast]` extra).

serve's `--loop auto` (the default) takes uvloop when it is installed and asyncio's loop when it
is not; `--loop asyncio` and `--loop uvloop` ask for one. Once serve splits WebSocket frames
itself, the loop's own per-read work is a measurable share of serve's CPU per frame: uvloop
cut it by about a tenth on 200 calls (benchmarks/README.md).

The choice is an environment variable so that `serve --workers N` passes it on to the
processes it starts with everything else in its environment.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

from plivo_stream_cli.errors import UsageError

T = TypeVar("T")
CHOICES = ("auto", "asyncio", "uvloop")
ENV = "PSTREAM_LOOP"


def have_uvloop() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def choose(choice: str) -> str:
    """Check `choice` (auto, asyncio, uvloop), set the loop it names for this process and its
    children, and return that loop's name (auto: uvloop if installed, else asyncio)."""
    if choice not in CHOICES:
        raise UsageError(f"--loop must be one of {', '.join(CHOICES)}, got {choice!r}")
    if choice == "auto":
        choice = "uvloop" if have_uvloop() else "asyncio"
    if choice == "uvloop" and not have_uvloop():
        raise UsageError(
            '--loop uvloop: uvloop is not installed (pip install "plivo-stream-cli[fast]")'
        )
    os.environ[ENV] = choice
    return choice


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the loop `PSTREAM_LOOP` names (asyncio's when unset)."""
    if os.environ.get(ENV) == "uvloop" and have_uvloop():
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
