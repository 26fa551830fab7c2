"""`pstream serve`'s engine: the asyncio WebSocket server that plays the bot's side of a stream.

`StreamServer` puts the pieces together on one port: the signature gate (`gate`: V3 check on
the upgrade, close 1008 when it fails; replay memory), the HTTP routes (`webhooks`: `/healthz`,
`/answer`, `/status`), the registry of live streams (`StreamRegistry`, here), each stream's
lifecycle (`livestream.LiveStream`: session, recorder, playback) and the feed every event is
published to (`feedhub`). Each connection is a `plivolink.PlivoLink` (websockets' sans-I/O
protocol on an asyncio `Protocol` of ours) on a plain asyncio server. `workers` runs more
processes of this server on the same port (`serve --workers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from plivo_stream_cli import codec
from plivo_stream_cli.adapters.feedhub import FeedHub
from plivo_stream_cli.adapters.gate import SignatureGate
from plivo_stream_cli.adapters.livestream import (
    MAX_PENDING_PLAYS,
    POLICY_VIOLATION,
    RECORDING_FLUSH_SECONDS,
    LiveStream,
)
from plivo_stream_cli.adapters.plivolink import PlivoLink
from plivo_stream_cli.adapters.webhooks import Route, Routes
from plivo_stream_cli.adapters.wslink import address_text
from plivo_stream_cli.feed import note_record
from plivo_stream_cli.streamxml import StreamOptions

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

__all__ = [
    "MAX_PENDING_PLAYS",
    "RECORDING_FLUSH_SECONDS",
    "WEBSOCKET_MAX_SIZE",
    "LiveStream",
    "ServeConfig",
    "StreamServer",
    "prepare_record_dir",
    "quiet_logger",
    "remote_of",
]

GOING_AWAY = 1001
WEBSOCKET_MAX_SIZE = 1024 * 1024  # larger than Plivo's 64 KB so oversize messages are logged, kept
# A peer that never answers our close is cut off after this; shutdown as a whole stays under
# SHUTDOWN_SECONDS whatever the peers do (half-open handshakes are abandoned at exit).
CLOSE_TIMEOUT = 0.75
SHUTDOWN_SECONDS = 1.0
# Recordings the clock writes per turn of the loop: a pass over thousands of streams must not
# hold up every stream's next frame until it is done.
FLUSH_SLICE = 64


class Peers(Protocol):
    """Other processes serving the same port, as the first one sees them (`workers.WorkerPool`)."""

    def snapshot(self) -> list[dict[str, Any]]: ...

    def totals(self) -> dict[str, int]: ...

    def live_ids(self) -> dict[str, object]:
        """Each live stream's id -> the peer that holds it (for `forward`)."""
        ...

    async def forward(self, holder: object, request: dict[str, Any]) -> dict[str, Any]:
        """A control request (see `control`) handled by `holder`; its reply."""
        ...


@dataclass
class ServeConfig:
    """What `pstream serve` was asked to do."""

    host: str = "127.0.0.1"
    port: int = 8080
    path: str = "/stream"
    auth_token: str | None = None
    public_url: str | None = None  # what Plivo dials, e.g. https://abc.ngrok.app
    record_dir: Path | None = None
    stereo: bool = False
    play_audio: bytes | None = None  # raw 16-bit PCM; converted per stream
    play_rate: int = 8000
    play_name: str = "play"
    echo: bool = False
    max_buffer: float = 20.0  # seconds of audio allowed in Plivo's queue
    max_b64: int = codec.DEFAULT_MAX_B64
    start_timeout: float = 10.0  # also bounds the WebSocket/HTTP handshake
    reject_replays: bool = False  # refuse a signature already used within replay_window
    replay_window: float = 300.0
    answer: StreamOptions | None = None  # template for /answer (its url is replaced)
    speak: str | None = None  # <Speak> text before the stream in /answer
    extra_routes: dict[str, Route] = field(default_factory=dict)
    upstream: str | None = None  # the bot's ws(s):// URL: serve is a tap (`adapters.tap`)
    upstream_timeout: float = 5.0  # seconds to open the bot's WebSocket


class StreamRegistry:
    """The live streams of one server by name, and its counters.

    A stream is known by its connection's name (`conn-1`) until its start event gives it its
    `streamId`; a second live stream with the same id gets a name of its own.
    """

    def __init__(self, conn_prefix: str) -> None:
        self.conn_prefix = conn_prefix
        self.streams: dict[str, LiveStream] = {}
        self.totals = {"connections": 0, "rejected": 0, "streams": 0, "errors": 0}
        self._next_id = 0

    def next_name(self) -> str:
        self.totals["connections"] += 1
        self._next_id += 1
        return f"{self.conn_prefix}{self._next_id}"

    def add(self, live: LiveStream) -> None:
        self.streams[live.conn_id] = live

    def rename(self, live: LiveStream) -> None:
        """File a stream that just started under its stream id."""
        self.streams.pop(live.conn_id, None)
        key = live.stream_id  # the connection's id if the peer sent an empty streamId
        if key in self.streams:  # never clobber a live stream with the same id
            live.note_error(f"streamId {key!r} is already live on another connection")
            key = f"{key}#{live.conn_id}"
        self.streams[key] = live
        self.totals["streams"] += 1

    def remove(self, live: LiveStream) -> bool:
        """Forget `live`; False when it was not (or no longer) registered."""
        key = next((key for key, other in self.streams.items() if other is live), None)
        if key is None:
            return False
        del self.streams[key]
        return True


class StreamServer:
    """The WebSocket + webhook server behind `pstream serve`."""

    def __init__(self, config: ServeConfig, *, conn_prefix: str = "conn-") -> None:
        self.config = config
        self.peers: Peers | None = None  # other processes on the same port (`serve --workers`)
        self.registry = StreamRegistry(conn_prefix)
        self.streams = self.registry.streams
        self.totals = self.registry.totals
        self.hub = FeedHub()
        self.subscribe = self.hub.subscribe
        self.publish = self.hub.publish
        self.gate = SignatureGate(
            config.auth_token,
            lambda: self.config.public_url,
            reject_replays=config.reject_replays,
            replay_window=config.replay_window,
        )
        self.routes = Routes(config, self.gate, self.publish, self._count_refusal, self._bound)
        self._server: asyncio.Server | None = None
        self._links: set[PlivoLink] = set()  # every connection not yet lost
        self._sessions: set[asyncio.Task[None]] = set()  # each open WebSocket's gate + stream
        self._ws_logger = quiet_logger("pstream.websockets")
        self._flush_timer: asyncio.TimerHandle | None = None  # the recording clock
        self.port = config.port
        self.stream_class: type[LiveStream] = LiveStream
        if config.upstream:
            from plivo_stream_cli.adapters.tap import TapStream

            self.stream_class = TapStream

    def _count_refusal(self) -> None:
        self.totals["rejected"] += 1

    def _bound(self) -> str:
        return f"{self.config.host}:{self.port}"

    # ------------------------------------------------------------ lifecycle

    async def start(self, *, reuse_port: bool = False) -> None:
        """Bind and start accepting connections (`port` 0 picks a free one).

        `reuse_port` lets other processes listen on the same port (`serve --workers`).
        """
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._new_link,
            self.config.host,
            self.config.port,
            reuse_port=reuse_port or None,
        )
        sockets = list(self._server.sockets)
        if sockets:
            self.port = sockets[0].getsockname()[1]
        if self.config.record_dir is not None:
            # loaded now, not on the loop when the first call starts (it waits for the import)
            from plivo_stream_cli.adapters import recorder  # noqa: F401

            self._flush_timer = loop.call_later(RECORDING_FLUSH_SECONDS, self._flush_recordings)

    def _flush_recordings(self) -> None:
        """The recording clock: every stream's recording written, `FLUSH_SLICE` at a time."""
        loop = asyncio.get_running_loop()
        self._flush_timer = loop.call_later(RECORDING_FLUSH_SECONDS, self._flush_recordings)
        self._flush_slice([live for live in self.streams.values() if live.recorder], 0)

    def _flush_slice(self, lives: list[LiveStream], first: int) -> None:
        end = first + FLUSH_SLICE
        for live in lives[first:end]:
            live.flush_recording()
        if end < len(lives):
            asyncio.get_running_loop().call_soon(self._flush_slice, lives, end)

    def _new_link(self) -> PlivoLink:
        # No pings (Plivo does not answer them reliably; TCP tells us of drops), no
        # permessage-deflate (an inflate per 20 ms frame and a zlib context per stream to save a
        # quarter of base64's bytes), and open_timeout bounds a peer that never finishes its
        # request.
        link = PlivoLink(
            path=self.config.path,
            route=self.routes.route,
            on_open=self._opened,
            open_timeout=self.config.start_timeout,
            max_size=WEBSOCKET_MAX_SIZE,
            close_timeout=CLOSE_TIMEOUT,
            logger=self._ws_logger,
        )
        self._links.add(link)
        link.closed.add_done_callback(lambda _: self._links.discard(link))
        return link

    async def close(self) -> None:
        """Close every stream (files finalized) and stop listening.

        Streams close together: a peer that never answers the closing handshake costs its
        close timeout once, not once per stream after it.
        """
        deadline = time.monotonic() + SHUTDOWN_SECONDS
        if self._server is not None:
            self._server.close()  # no new connections
        lives = list(self.streams.values())
        mine = {live.ws for live in lives}
        for link in list(self._links):
            if link.opening:  # a request not yet answered: dropped (it was not a stream yet)
                link.abort()
        others = [link for link in self._links if link not in mine and link.is_open]
        await asyncio.gather(
            *(self._close_one(live) for live in lives),
            *(self._close_link(link) for link in others),
        )
        if self._sessions:
            remaining = max(0.0, deadline - time.monotonic())
            await asyncio.wait(list(self._sessions), timeout=remaining)
        for link in list(self._links):  # whatever is left at the deadline
            link.abort()
        for live in list(self.streams.values()):
            live.finish()
        if self._flush_timer is not None:  # every recording is closed: nothing left to write
            self._flush_timer.cancel()
            self._flush_timer = None

    async def _close_link(self, link: PlivoLink) -> None:
        with contextlib.suppress(Exception):
            await link.close(GOING_AWAY, "server shutting down")

    async def _close_one(self, live: LiveStream) -> None:
        await live.stop_players()
        with contextlib.suppress(Exception):
            await live.ws.close(GOING_AWAY, "server shutting down")

    def snapshot(self) -> list[dict[str, Any]]:
        """Every stream's counters, the peers' too (theirs up to half a second old)."""
        mine = [live.snapshot() for live in list(self.streams.values())]
        return mine + self.peers.snapshot() if self.peers is not None else mine

    def all_totals(self) -> dict[str, int]:
        """`totals` summed with the peers'."""
        totals = dict(self.totals)
        if self.peers is not None:
            for key, value in self.peers.totals().items():
                totals[key] = totals.get(key, 0) + value
        return totals

    async def __aenter__(self) -> StreamServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def local_url(self) -> str:
        return f"ws://{self.config.host}:{self.port}{self.config.path}"

    # ------------------------------------------------------------ what others ask of it

    @property
    def media_listeners(self) -> int:
        return self.hub.media_listeners

    @property
    def replay_authority(self) -> Any:
        return self.gate.replay_authority

    @replay_authority.setter
    def replay_authority(self, authority: Any) -> None:
        self.gate.replay_authority = authority

    def seen_before(self, key: str) -> float | None:
        return self.gate.seen_before(key)

    async def check_signature(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        params: dict[str, list[str]] | None = None,
    ) -> tuple[bool, str]:
        return await self.gate.check(method, target, headers, params)

    def answer_xml(self, host: str = "") -> str:
        return self.routes.answer_xml(host)

    # ------------------------------------------------------------ connections

    def _opened(self, link: PlivoLink) -> None:
        task = asyncio.get_running_loop().create_task(self._session(link))
        self._sessions.add(task)
        task.add_done_callback(self._sessions.discard)

    async def _session(self, ws: PlivoLink) -> None:
        """An open WebSocket: the signature gate, then the stream until it closes."""
        conn_id = self.registry.next_name()
        remote = ws.remote
        request = ws.request
        headers = {k.lower(): v for k, v in request.headers.raw_items()} if request else {}
        target = request.path if request else self.config.path
        ok, why = await self.gate.check("GET", target, headers)
        if not ok:
            self._count_refusal()
            self.publish(
                note_record(
                    "rejected", t=time.time(), remote=remote, reason=why, action="closed 1008"
                )
            )
            await ws.close(POLICY_VIOLATION, "invalid signature")
            return
        live = self.stream_class(self, ws, conn_id)
        self.registry.add(live)
        self.publish(
            note_record("connected", t=time.time(), stream=conn_id, remote=remote, auth=why)
        )
        try:
            await live.serve()
        finally:
            if ws.is_open:  # the stream ended with the connection open (as a handler returns)
                await ws.close(1000, "")


def remote_of(connection: PlivoLink | ServerConnection) -> str:
    """`host:port` of a connection's peer (for logs and feed records; control's too)."""
    return address_text(connection.remote_address)


def quiet_logger(name: str) -> logging.Logger:
    """A logger that keeps websockets' own messages off the terminal (pstream reports itself)."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.CRITICAL)
    logger.propagate = False
    return logger


def prepare_record_dir(path: Path) -> Path:
    """Create the recording directory and prove it is writable, or fail before serving.

    A directory created here is private (0700): recordings hold callers' voices.
    """
    import tempfile

    from plivo_stream_cli.errors import UsageError

    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise UsageError(
            f"cannot record into {path}: {exc.strerror or exc}; choose a writable --record DIR"
        ) from None
    return path.resolve()
