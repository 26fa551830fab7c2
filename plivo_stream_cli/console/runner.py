"""Runs the long-lived `serve` loop: signals, the control channel, the live view, the JSON feed.

I/O glue between `StreamServer` and the terminal. Ctrl-C ends with exit 130, SIGTERM with 0; in
both cases streams are closed and recordings finalized first.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from plivo_stream_cli.adapters.feedwriter import JsonPrinter
from plivo_stream_cli.adapters.server import StreamServer
from plivo_stream_cli.console import output, spool
from plivo_stream_cli.errors import ExitCode, UsageError
from plivo_stream_cli.feed import Record, describe

if TYPE_CHECKING:
    from plivo_stream_cli.adapters.control import ControlServer
    from plivo_stream_cli.adapters.tap import LatencyLedger
    from plivo_stream_cli.adapters.workers import WorkerPool
    from plivo_stream_cli.console.view import StreamView

REFRESH_PER_SECOND = 4


@dataclass
class ServeUi:
    """How `serve` shows what happens."""

    json_feed: bool = False
    media: bool = False  # --json --media: the caller's frames too
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
            # off the main thread asyncio raises RuntimeError, uvloop ValueError
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._stop, code)

    def _stop(self, code: ExitCode) -> None:
        self.code = code
        self.event.set()


json_printer = JsonPrinter()


def public_banner(public: dict[str, str]) -> list[str]:
    """The banner lines that tell the user what to paste into Plivo (see `tunnel.go_public`)."""
    return [
        f"public stream URL  [bold]{public['stream']}[/bold]",
        f"Answer URL         [bold]{public['answer']}[/bold]  (GET or POST)",
        f"status callbacks   {public['status']}",
        "Stream XML to paste:",
        *("  " + line for line in _escape(public["xml"]).splitlines()),
    ]


def plain_printer(record: Record) -> None:
    output.status(_escape(describe(record)))


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


async def bind(server: StreamServer, *, shared: bool = False) -> None:
    """Listen, or fail with one clear line. `shared`: other processes will listen there too."""
    try:
        if shared and server.config.port:
            _check_free(server.config.host, server.config.port)
        await server.start(reuse_port=shared)
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
    workers: int = 1,
    on_stopped: Callable[[], None] | None = None,
) -> ExitCode:
    """Serve until SIGINT/SIGTERM; returns the exit code.

    With `control_port` (0 picks one) the control channel runs too, published in the state
    directory once `on_started` has set the public URL; it closes after the streams, so `tail`
    sees their last records. With `workers` > 1, that many processes in all share the port
    (`workers.WorkerPool`); they stop, and their last records arrive, before this one closes.
    """
    stopper = Stopper()
    stopper.install()
    await bind(server, shared=workers > 1)
    # From here on output never blocks the loop: a reader that stops costs lines, not streams.
    stdio = spool.StdioSpools(on_drop=_dropping)
    control: ControlServer | None = None
    pool: WorkerPool | None = None
    ledger = _latency_ledger(server)
    try:
        if on_started is not None:
            await on_started(server)
        if workers > 1:
            pool = await _start_workers(server, workers - 1, ui)
        if control_port is not None:
            control = await _open_control(server, control_port, ui)
        for line in ui.banner:
            output.status(line)
        view = _subscribe_outputs(server, ui)
        # Start-up's objects (typer, rich, websockets...) live as long as the process: without
        # this, each full collection walks them all and stalls every stream (~45 ms seen at
        # 400 calls); frozen, it walks only what serving created.
        gc.freeze()
        if control is not None and not _publish(control):
            await control.close()
            control = None
        if view is not None:
            await _live_loop(server, stopper, view)
        else:
            await stopper.event.wait()
    finally:
        if on_stopping is not None:
            with contextlib.suppress(Exception):
                await on_stopping()
        try:
            if pool is not None:  # every process closes its streams at once
                await asyncio.gather(pool.stop(), server.close())
            else:
                await server.close()
        finally:
            json_printer.flush()  # the last records (closed streams) before the summary
            try:
                if control is not None:
                    await control.close()
            finally:
                stdio.end_stdout()  # the reader gets a moment; what it did not take is counted
        try:
            _summary(server, stdio)  # still through stderr's spool: a stalled terminal
            if ledger is not None and ledger.streams:
                output.status("latency of the bot, per stream (from the tapped traffic):")
                for line in ledger.lines():
                    output.status(_escape(line))
            if on_stopped is not None:  # last words (e.g. how to see the recordings), same way
                on_stopped()
        finally:  # cannot hold the exit
            stdio.end()
    return stopper.code


def _latency_ledger(server: StreamServer) -> LatencyLedger | None:
    """With --upstream: collects each closed stream's latency for the summary at exit."""
    if not server.config.upstream:
        return None
    from plivo_stream_cli.adapters.tap import LatencyLedger

    ledger = LatencyLedger()
    server.subscribe(ledger, media=False)
    return ledger


async def _start_workers(server: StreamServer, count: int, ui: ServeUi) -> WorkerPool:
    from plivo_stream_cli.adapters.workers import WorkerPool

    pool = WorkerPool(server, count)
    await pool.start()
    server.peers = pool
    pids = ", ".join(str(pid) for pid in [os.getpid(), *pool.pids])
    ui.banner.append(f"{count + 1} processes share the port (pids {pids})")
    return pool


async def _open_control(server: StreamServer, port: int, ui: ServeUi) -> ControlServer:
    from plivo_stream_cli.adapters.control import ControlServer

    control = ControlServer(server, port=port)
    await control.start()
    ui.banner.append(
        f"control on {control.url}  (pstream tail | play | clear | checkpoint | streams)"
    )
    return control


def _publish(control: ControlServer) -> bool:
    """Write the state file, once every printer listens (so no control note is lost)."""
    from plivo_stream_cli.errors import ConfigError

    try:
        control.register()
    except ConfigError as exc:  # serving matters more than remote control
        output.warn(f"{exc.message}: control channel off (pstream tail/play/clear won't find it)")
        return False
    return True


def _subscribe_outputs(server: StreamServer, ui: ServeUi) -> StreamView | None:
    """Attach the JSON feed, the live view or plain lines; returns the view when live."""
    if ui.json_feed:
        server.subscribe(json_printer, media=ui.media)
    if ui.live:
        from plivo_stream_cli.console.view import StreamView

        view = StreamView(f"pstream serve  {server.local_url}")
        server.subscribe(view.add, media=False)
        return view
    if not ui.json_feed:
        server.subscribe(plain_printer, media=False)
    return None


async def _live_loop(server: StreamServer, stopper: Stopper, view: StreamView) -> None:
    from rich.live import Live

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


def _check_free(host: str, port: int) -> None:
    """Raise `OSError` if something already listens on host:port.

    `SO_REUSEPORT` would let us share a port another process of this user opened with it:
    binding once without it first keeps "address in use" an error, as without --workers.
    """
    import socket

    for family, kind, proto, _, address in socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    ):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)


def _dropping(name: str) -> None:
    if name == "stdout":  # said on stderr (if that is stalled too, this is dropped as well)
        output.warn("stdout is not read fast enough: dropping output lines (serving goes on)")


def _summary(server: StreamServer, stdio: spool.StdioSpools) -> None:
    t = server.all_totals()
    lost = ""
    if stdio.dropped:
        lost = f", {stdio.dropped} output lines dropped"
        output.warn(
            f"{stdio.out.dropped_lines} lines of stdout and {stdio.err.dropped_lines} of "
            "stderr were dropped: their reader did not keep up"
        )
    output.status(
        f"pstream serve stopped: {t['streams']} streams, {t['connections']} connections, "
        f"{t['rejected']} rejected, {t['errors']} bad messages{lost}"
    )
