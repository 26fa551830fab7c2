"""pytest plugin (entry point `pstream` in the `pytest11` group): simulated Plivo calls as fixtures.

A bot project that installs pstream gets, in every test:

- `pstream_url` — the bot's WebSocket URL: `--pstream-url`, the `pstream_url` ini key, or the
  PSTREAM_URL environment variable (the test fails, naming all three, when none is set);
- `pstream_call(url=None, scenario=None, **options)` — run a simulated call (synchronously) and
  return a `testing.SimulatedRun`: `.passed`, `.assert_passed()`, `.first_audio_ms`,
  `.metrics`, `.summary` (the `pstream simulate --json` document);
- `pstream_acall(...)` — the same as a coroutine, for async tests (anyio, pytest-asyncio).

Importing this module at pytest start-up imports nothing of pstream's: the fixtures load the
simulator when a test first uses them.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from plivo_stream_cli.testing import SimulatedRun

ENV = "PSTREAM_URL"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pstream", "simulated Plivo calls (pstream)")
    group.addoption("--pstream-url", default=None, help="WebSocket URL of the bot under test.")
    parser.addini("pstream_url", "WebSocket URL of the bot under test.", default="")


@pytest.fixture
def pstream_url(request: pytest.FixtureRequest) -> str:
    """The bot's URL from --pstream-url, the pstream_url ini key or PSTREAM_URL."""
    url = request.config.getoption("pstream_url") or request.config.getini("pstream_url")
    url = url or os.environ.get(ENV, "")
    if not url:
        pytest.fail(f"no bot URL: pass --pstream-url, set pstream_url in the ini file or {ENV}")
    return str(url)


def _url(request: pytest.FixtureRequest, url: str | None) -> str:
    return url if url else str(request.getfixturevalue("pstream_url"))


@pytest.fixture
def pstream_call(request: pytest.FixtureRequest) -> Callable[..., SimulatedRun]:
    """Run a simulated call against the bot and return its `SimulatedRun`."""

    def call(url: str | None = None, scenario: Any = None, **options: Any) -> SimulatedRun:
        from plivo_stream_cli.testing import simulate_call_sync

        options.setdefault("base_dir", request.path.parent)
        return simulate_call_sync(_url(request, url), scenario, **options)

    return call


@pytest.fixture
def pstream_acall(request: pytest.FixtureRequest) -> Callable[..., Awaitable[SimulatedRun]]:
    """`pstream_call` as a coroutine, for async tests."""

    async def call(url: str | None = None, scenario: Any = None, **options: Any) -> SimulatedRun:
        from plivo_stream_cli.testing import simulate_call

        options.setdefault("base_dir", request.path.parent)
        return await simulate_call(_url(request, url), scenario, **options)

    return call
