"""Which event loop runs a serving process: uvloop when it is installed (the `[fast]` extra),
else asyncio's own; `PSTREAM_LOOP=asyncio` (serve's `--loop asyncio`) keeps asyncio's.

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
    """The loop `choice` (auto, asyncio, uvloop) means here; sets it for child processes."""
    if choice not in CHOICES:
        raise UsageError(f"--loop must be one of {', '.join(CHOICES)}, got {choice!r}")
    if choice == "uvloop" and not have_uvloop():
        raise UsageError(
            '--loop uvloop: uvloop is not installed (pip install "plivo-stream-cli[fast]")'
        )
    chosen = "uvloop" if choice == "uvloop" or (choice == "auto" and have_uvloop()) else "asyncio"
    os.environ[ENV] = chosen
    return chosen


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the loop `PSTREAM_LOOP` names (auto when unset)."""
    wanted = os.environ.get(ENV, "auto")
    if wanted != "asyncio" and have_uvloop():
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
