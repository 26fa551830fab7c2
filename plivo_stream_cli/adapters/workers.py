"""`serve --workers N`: N-1 more serving processes on the same port, joined to the first.

I/O. One Python process keeps up with a few hundred real-time calls per core (see
`benchmarks/README.md`); past that, `pstream serve --workers N` spreads connections over N
processes that listen on the same port with `SO_REUSEPORT` (on Linux the kernel balances new
connections between them). Each worker is a `StreamServer` of the same `ServeConfig`, so every
stream behaves exactly as it does with one process. The first process stays the one the user
sees: its feed (`--json`, the live view, `pstream tail`), control channel, tunnel, Application
rewiring and summary cover the workers' streams too.

A worker is `python -m plivo_stream_cli.adapters.workers`, started by the first process
(`WorkerPool`) and joined to it by its standard streams only:

- first -> worker: one line, the base64 of the pickled `ServeConfig`, worker number, port and
  whether media records are wanted (the pipe is private to the two processes, so the auth
  token never appears in argv or the environment); then control requests, one JSON line each:
  `{"id": N, "request": {...}}` with a `play`, `clear` or `checkpoint` request of the control
  channel for a stream the worker holds; and `{"media": true|false}` whenever the first
  process starts or stops having listeners of per-frame media records (`serve --json --media`,
  `pstream tail --media`): a worker builds and relays them only while they are wanted. End of
  input: close every stream (recordings finalized) and exit.
- worker -> first: `{"w": "ready"}` once listening; every feed record as the JSON line
  `--json` would print (gathered and written every 50 ms, like `--json`); a `{"w":
  "snapshot", "streams": [...], "live": [...], "totals": {...}}` every half second and last
  thing before it exits; `{"w": "reply", "id": N, "reply": {...}}` per request.
- `--reject-replays`: the first process keeps the one memory of used signatures. A worker asks
  `{"w": "nonce", "id": N, "key": ...}` before accepting a signed request and is answered
  `{"nonce": N, "age": seconds since its first use, or null}` (null: first use, now recorded).

A worker ignores SIGINT (Ctrl-C reaches the first process, which stops the workers in order)
and treats SIGTERM like the end of its input.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import pickle
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from plivo_stream_cli.adapters.feedwriter import JsonPrinter
from plivo_stream_cli.adapters.server import ServeConfig, StreamServer
from plivo_stream_cli.errors import UsageError
from plivo_stream_cli.feed import Record, note_record

SNAPSHOT_SECONDS = 0.5
FLUSH_SECONDS = 0.05
READY_TIMEOUT = 20.0  # a worker imports and binds in well under a second; a busy machine is slower
STOP_TIMEOUT = 30.0  # closing streams finalizes their files
MAX_WORKERS = 64
_RECORD_PREFIX = b'{"t":'  # every feed record's first key (feed.event_record, note_record)


def check_workers(count: int, config: ServeConfig) -> None:
    """Refuse a `--workers` value this platform or these options cannot serve."""
    if not 1 <= count <= MAX_WORKERS:
        raise UsageError(f"--workers must be between 1 and {MAX_WORKERS}, got {count}")
    if count == 1:
        return
    if not hasattr(socket, "SO_REUSEPORT"):
        raise UsageError("--workers needs SO_REUSEPORT (Linux, macOS, BSD): drop --workers")


# ---------------------------------------------------------------- the first process


@dataclass
class _Worker:
    index: int
    process: asyncio.subprocess.Process
    ready: asyncio.Future[None]
    streams: list[dict[str, Any]] = field(default_factory=list)
    live: set[str] = field(default_factory=set)
    totals: dict[str, int] = field(default_factory=dict)
    replies: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None


class WorkerPool:
    """The workers of one serve, as its first process sees them (`StreamServer.peers`)."""

    def __init__(self, server: StreamServer, count: int) -> None:
        self.server = server
        self.count = count  # workers beside the first process
        self._workers: list[_Worker] = []
        self._next_request = 0
        self._stopping = False

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers]

    async def start(self) -> None:
        """Start every worker and wait until each listens; `UsageError` if one cannot."""
        config = self.server.config
        media = self.server.hub.media_listeners > 0
        try:
            setup = [
                base64.b64encode(pickle.dumps((config, index, self.server.port, media))) + b"\n"
                for index in range(1, self.count + 1)
            ]
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            raise UsageError(f"--workers cannot pass this serve's settings on: {exc}") from None
        loop = asyncio.get_running_loop()
        for index, line in enumerate(setup, start=1):
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "plivo_stream_cli.adapters.workers",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                start_new_session=True,  # Ctrl-C is the first process's to handle
            )
            worker = _Worker(index, process, loop.create_future())
            self._workers.append(worker)
            assert process.stdin is not None
            process.stdin.write(line)
            worker.reader = loop.create_task(self._read(worker))
        self.server.hub.on_media_change = self._media_wanted
        try:
            await asyncio.wait_for(asyncio.gather(*(w.ready for w in self._workers)), READY_TIMEOUT)
        except (asyncio.TimeoutError, ConnectionError) as exc:
            await self.stop()
            why = str(exc) or f"not listening after {READY_TIMEOUT:g} s"
            raise UsageError(f"a --workers process did not start: {why}") from None

    async def stop(self) -> None:
        """End every worker's input, relay what they still send, and wait for them to exit."""
        self._stopping = True
        for worker in self._workers:
            if worker.process.stdin is not None:
                with contextlib.suppress(Exception):
                    worker.process.stdin.close()
        for worker in self._workers:
            try:
                await asyncio.wait_for(worker.process.wait(), STOP_TIMEOUT)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
                await worker.process.wait()
            if worker.reader is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(worker.reader, 5)

    def _media_wanted(self, wanted: bool) -> None:
        for worker in self._workers:
            self._send(worker, {"media": wanted})

    # ------------------------------------------------------------ what StreamServer asks

    def snapshot(self) -> list[dict[str, Any]]:
        """Every worker's streams, as of its last snapshot (at most half a second old)."""
        return [stream for worker in self._workers for stream in worker.streams]

    def totals(self) -> dict[str, int]:
        summed: dict[str, int] = {}
        for worker in self._workers:
            for key, value in worker.totals.items():
                summed[key] = summed.get(key, 0) + value
        return summed

    def live_ids(self) -> dict[str, object]:
        """Live stream id -> the worker that holds it."""
        return {sid: worker for worker in self._workers for sid in worker.live}

    async def forward(self, holder: object, request: dict[str, Any]) -> dict[str, Any]:
        """Send a control request to the worker holding its stream; its reply."""
        assert isinstance(holder, _Worker)
        stdin = holder.process.stdin
        if stdin is None or stdin.is_closing():
            raise ConnectionError("that stream's worker has stopped")
        self._next_request += 1
        number = self._next_request
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        holder.replies[number] = reply
        try:
            stdin.write(_message({"id": number, "request": request}))
            return await asyncio.wait_for(reply, 30)
        finally:
            holder.replies.pop(number, None)

    # ------------------------------------------------------------ relaying

    async def _read(self, worker: _Worker) -> None:
        assert worker.process.stdout is not None
        stdout = worker.process.stdout
        rest = b""
        try:
            while chunk := await stdout.read(1 << 16):
                *lines, rest = (rest + chunk).split(b"\n")
                for line in lines:
                    self._take(worker, line)
        finally:
            why = ConnectionError(f"worker {worker.index} exited")
            if not self._stopping:  # its streams are gone, and so is a share of capacity
                code = await worker.process.wait()
                self.server.publish(
                    note_record(
                        "error",
                        t=time.time(),
                        error=f"worker {worker.index} (pid {worker.process.pid}) exited "
                        f"with code {code}: its streams ended; new calls go to the others",
                    )
                )
            if not worker.ready.done():
                worker.ready.set_exception(why)
            for reply in worker.replies.values():
                if not reply.done():
                    reply.set_exception(why)
            worker.live.clear()
            worker.streams = []

    def _take(self, worker: _Worker, line: bytes) -> None:
        try:
            message = json.loads(line.decode("utf-8", "surrogatepass"))
        except ValueError:
            return  # not ours (a worker writes nothing else to stdout)
        if not isinstance(message, dict):
            return
        if line.startswith(_RECORD_PREFIX):
            self._relay(worker, message)
        elif message.get("w") == "snapshot":
            worker.streams = list(message.get("streams") or [])
            worker.live = set(message.get("live") or [])
            worker.totals = dict(message.get("totals") or {})
        elif message.get("w") == "reply":
            reply = worker.replies.get(message.get("id", -1))
            if reply is not None and not reply.done():
                reply.set_result(dict(message.get("reply") or {}))
        elif message.get("w") == "nonce":  # one memory of used signatures for every process
            age = self.server.seen_before(str(message.get("key", "")))
            self._send(worker, {"nonce": message.get("id"), "age": age})
        elif message.get("w") == "ready" and not worker.ready.done():
            worker.ready.set_result(None)

    def _send(self, worker: _Worker, message: dict[str, Any]) -> None:
        stdin = worker.process.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.write(_message(message))

    def _relay(self, worker: _Worker, record: Record) -> None:
        event = record.get("event")
        if event == "start" and record.get("dir") == "in":
            worker.live.add(str(record.get("stream", "")))
        elif event in ("closed", "stop"):
            worker.live.discard(str(record.get("stream", "")))
        self.server.publish(record)


def _message(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


# ---------------------------------------------------------------- a worker process


def _pipe_writer(transport: asyncio.WriteTransport) -> Callable[[str], None]:
    """Batches of lines to the first process (stdout, a pipe), as long as it is open."""

    def write(text: str) -> None:
        if text and not transport.is_closing():
            transport.write(text.encode("utf-8", "surrogatepass"))

    return write


def _line(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def _snapshot(server: StreamServer, live_ids: Callable[[], list[str]]) -> dict[str, Any]:
    return {
        "w": "snapshot",
        "streams": server.snapshot(),
        "live": live_ids(),
        "totals": dict(server.totals),
    }


async def _work() -> None:
    from plivo_stream_cli.adapters.control import MAX_MESSAGE_BYTES, ControlServer

    loop = asyncio.get_running_loop()
    # A forwarded request is a control message (<= 64 MB: a play carries its audio) wrapped.
    reader = asyncio.StreamReader(limit=2 * MAX_MESSAGE_BYTES, loop=loop)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, sys.stdout)
    setup = await reader.readline()
    config, index, port, media = pickle.loads(base64.b64decode(setup))
    config.port = port
    server = StreamServer(config, conn_prefix=f"conn-w{index}-")
    await server.start(reuse_port=True)
    outbox = JsonPrinter(FLUSH_SECONDS, write=_pipe_writer(transport))
    relaying = [server.subscribe(outbox, media=media)]

    def want_media(wanted: bool) -> None:
        relaying.pop()()
        relaying.append(server.subscribe(outbox, media=wanted))

    control = ControlServer(server)  # its request handling, without its WebSocket server
    outbox.line(_line({"w": "ready", "pid": os.getpid()}))
    outbox.flush()
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    tasks: set[asyncio.Task[None]] = set()

    nonces: dict[int, asyncio.Future[float | None]] = {}  # asked of the first process
    asked = itertools.count(1)

    async def ask_first_process(key: str) -> float | None:
        number = next(asked)
        answer: asyncio.Future[float | None] = loop.create_future()
        nonces[number] = answer
        outbox.line(_line({"w": "nonce", "id": number, "key": key}))
        outbox.flush()  # a handshake waits on it
        try:
            return await answer
        finally:
            nonces.pop(number, None)

    if config.reject_replays:
        server.replay_authority = ask_first_process

    async def answer(message: dict[str, Any]) -> None:
        reply, _ = await control.dispatch(json.dumps(message["request"]), "serve")
        outbox.line(_line({"w": "reply", "id": message["id"], "reply": reply}))

    async def requests() -> None:
        while line := await reader.readline():
            message = json.loads(line)
            if "media" in message:
                want_media(bool(message["media"]))
                continue
            if "nonce" in message:
                waiting = nonces.get(message["nonce"])
                if waiting is not None and not waiting.done():
                    waiting.set_result(message["age"])
                continue
            task = loop.create_task(answer(message))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        for waiting in nonces.values():  # no first process to ask: refuse, never wave through
            if not waiting.done():
                waiting.set_exception(ConnectionError("serve is stopping"))
        stopping.set()

    async def snapshots() -> None:
        while True:
            await asyncio.sleep(SNAPSHOT_SECONDS)
            outbox.line(_line(_snapshot(server, control.live_ids)))

    jobs = [loop.create_task(requests()), loop.create_task(snapshots())]
    try:
        await stopping.wait()
    finally:
        for job in jobs:
            job.cancel()
        await server.close()
        outbox.line(_line(_snapshot(server, control.live_ids)))
        outbox.flush()
        deadline = time.monotonic() + 10
        while transport.get_write_buffer_size() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        transport.close()


def main() -> None:
    """`python -m plivo_stream_cli.adapters.workers`: run as a worker of a serve (see above)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        from plivo_stream_cli.adapters.eventloop import run

        run(_work())
    except (BrokenPipeError, ConnectionResetError):  # the first process went away
        pass
    except OSError as exc:  # cannot listen: the first process reports that this worker exited
        print(f"pstream worker: {exc.strerror or exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
