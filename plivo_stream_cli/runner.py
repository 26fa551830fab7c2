"""Runs the long-lived `serve` loop: signals, the live view's refresh, the JSON feed, the summary.

I/O glue between `StreamServer` and the terminal. Ctrl-C ends with exit 130, SIGTERM with 0; in
both cases streams are closed and recordings finalized first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from plivo_stream_cli import output
from plivo_stream_cli.errors import ExitCode, UsageError
from plivo_stream_cli.feed import Record, describe
from plivo_stream_cli.server import StreamServer

REFRESH_PER_SECOND = 4


@dataclass
class ServeUi:
    """How `serve` shows what happens."""

    json_feed: bool = False
    live: bool = False
    banner: list[str] = field(default_factory=list)


class Stopper:
    """Turns SIGINT/SIGTERM into an event and remembers which arrived."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.code = ExitCode.OK

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig, code in ((signal.SIGINT, ExitCode.INTERRUPTED), (signal.SIGTERM, ExitCode.OK)):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop, code)

    def _stop(self, code: ExitCode) -> None:
        self.code = code
        self.event.set()


def json_printer(record: Record) -> None:
    sys.stdout.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n")
    sys.stdout.flush()


def plain_printer(record: Record) -> None:
    output.status(_escape(describe(record)))


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


async def bind(server: StreamServer) -> None:
    try:
        await server.start()
    except OSError as exc:
        where = f"{server.config.host}:{server.config.port}"
        raise UsageError(
            f"cannot listen on {where}: {exc.strerror or exc}; pick another --port"
        ) from None


async def run_serve(
    server: StreamServer,
    ui: ServeUi,
    *,
    on_started: Callable[[StreamServer], Awaitable[None]] | None = None,
    on_stopping: Callable[[], Awaitable[None]] | None = None,
) -> ExitCode:
    """Serve until SIGINT/SIGTERM; returns the exit code."""
    stopper = Stopper()
    stopper.install()
    await bind(server)
    try:
        if on_started is not None:
            await on_started(server)
        for line in ui.banner:
            output.status(line)
        if ui.json_feed:
            server.subscribe(json_printer, media=True)
        if ui.live:
            await _live_loop(server, stopper)
        else:
            if not ui.json_feed:
                server.subscribe(plain_printer, media=False)
            await stopper.event.wait()
    finally:
        if on_stopping is not None:
            with contextlib.suppress(Exception):
                await on_stopping()
        await server.close()
        _summary(server)
    return stopper.code


async def _live_loop(server: StreamServer, stopper: Stopper) -> None:
    from rich.live import Live

    from plivo_stream_cli.view import StreamView

    view = StreamView(f"pstream serve  {server.local_url}")
    server.subscribe(view.add, media=False)
    with Live(
        view.render(server.snapshot()),
        console=output.console(),
        refresh_per_second=REFRESH_PER_SECOND,
        transient=False,
    ) as live:
        while not stopper.event.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopper.event.wait(), 1 / REFRESH_PER_SECOND)
            live.update(view.render(server.snapshot()))


def _summary(server: StreamServer) -> None:
    t = server.totals
    output.status(
        f"pstream serve stopped: {t['streams']} streams, {t['connections']} connections, "
        f"{t['rejected']} rejected, {t['errors']} bad messages"
    )
