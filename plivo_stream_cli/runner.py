"""Runs the long-lived `serve` loop: signals, the control channel, the live view, the JSON feed.

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
from typing import TYPE_CHECKING

from plivo_stream_cli import output
from plivo_stream_cli.errors import ExitCode, UsageError
from plivo_stream_cli.feed import Record, describe
from plivo_stream_cli.server import StreamServer

if TYPE_CHECKING:
    from plivo_stream_cli.control import ControlServer

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
    control_port: int | None = None,
) -> ExitCode:
    """Serve until SIGINT/SIGTERM; returns the exit code.

    With `control_port` (0 picks one) the control channel runs too, published in the state
    directory once `on_started` has set the public URL; it closes after the streams, so `tail`
    sees their last records.
    """
    stopper = Stopper()
    stopper.install()
    await bind(server)
    control: ControlServer | None = None
    try:
        if on_started is not None:
            await on_started(server)
        if control_port is not None:
            control = await _start_control(server, control_port, ui)
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
        try:
            await server.close()
        finally:
            if control is not None:
                await control.close()
        _summary(server)
    return stopper.code


async def _start_control(server: StreamServer, port: int, ui: ServeUi) -> ControlServer | None:
    from plivo_stream_cli.control import start_control
    from plivo_stream_cli.errors import ConfigError

    try:
        control = await start_control(server, port=port)
    except ConfigError as exc:  # serving matters more than remote control
        output.warn(f"{exc.message}: control channel off (pstream tail/play/clear won't find it)")
        return None
    ui.banner.append(
        f"control on {control.url}  (pstream tail | play | clear | checkpoint | streams)"
    )
    return control


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
