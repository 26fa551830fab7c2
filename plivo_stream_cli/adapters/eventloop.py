"""Which event loop runs a serving process: asyncio's own, or uvloop (the `[fast]` extra) with
serve's `--loop uvloop`. Not the default: it measured no gain on serve's workload (see
benchmarks/README.md), and an in-process serve whose start-up fails (`--app` refused) did not
stop under it in one test.

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
CHOICES = ("asyncio", "uvloop")
ENV = "PSTREAM_LOOP"


def have_uvloop() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def choose(choice: str) -> str:
    """Check `choice` (asyncio, uvloop) and set it for this process and its children."""
    if choice not in CHOICES:
        raise UsageError(f"--loop must be one of {', '.join(CHOICES)}, got {choice!r}")
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
