"""Locust users that place simulated Plivo calls: pstream's load test beyond one machine.

    pip install "plivo-stream-cli[locust]"
    locust -f "$(python -m plivo_stream_cli.adapters.locustfile)" --headless \\
        --host ws://127.0.0.1:9000/stream -u 100 -r 10 -t 2m --csv run

Each Locust user places calls back to back against `--host`. The calls do not run in Locust's
gevent loop: each Locust process (a worker, or a standalone run) starts one
`plivo_stream_cli.adapters.callpool` subprocess that runs them on asyncio with `simulate`'s
pacing (20 ms frames against absolute deadlines), and reports each call when it ends. Every
figure becomes a Locust request event (type `pstream`), so master/worker mode, the web UI,
`--csv` and `--html` work unchanged:

- `connect`: the WebSocket's opening handshake; fails when it could not connect;
- `first_audio`: end of the caller's speech to the bot's first reply; fails when it never came;
- `checkpoint`: a checkpoint's round trip to `playedStream` (one event per checkpoint);
- `clear`: barge-in to `clearAudio` (with `--pstream-barge-in-at`); fails when it never came;
- `reply_gap`: a silence inside a reply (one event per gap);
- `call`: the whole call; fails when refused, closed with an error or the protocol was broken;
- `pacing_late_p99`: the generator's own p99 lateness in that call; fails over
  `--pstream-max-late-ms` (default 10, half a frame): that call's figures are not trustworthy.

Options (also in the web UI): `--pstream-audio WAV`, `--pstream-content-type`,
`--pstream-linger SECONDS`, `--pstream-barge-in-at SECONDS`, `--pstream-extra-headers`,
`--pstream-max-late-ms MS`; the auth
token comes from `PLIVO_AUTH_TOKEN` in each worker's environment (never a command line).

`python -m plivo_stream_cli.adapters.locustfile` prints this file's path, for `locust -f`.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from typing import Any

import gevent
from gevent import subprocess
from gevent.event import AsyncResult
from gevent.lock import Semaphore
from locust import User, constant, events, task
from locust.env import Environment

REQUEST_TYPE = "pstream"
PACING_LIMIT_MS = 10.0  # half a frame: later than that and the latencies carry the error


def _options(parser: Any) -> None:
    group = parser.add_argument_group("pstream")
    group.add_argument("--pstream-audio", default="", help="The caller's audio (a WAV).")
    group.add_argument(
        "--pstream-content-type", default="audio/x-mulaw;rate=8000", help="The stream's format."
    )
    group.add_argument("--pstream-linger", type=float, default=1.0, help="Seconds after speech.")
    group.add_argument(
        "--pstream-barge-in-at", default="", help="Talk over the reply SECONDS after it begins."
    )
    group.add_argument("--pstream-extra-headers", default="", help="extra_headers, e.g. 'a=1'.")
    group.add_argument(
        "--pstream-max-late-ms",
        type=float,
        default=PACING_LIMIT_MS,
        help="A call whose generator ran later than this (p99) fails `pacing_late_p99`.",
    )


events.init_command_line_parser.add_listener(_options)  # type: ignore[no-untyped-call]


class CallPool:
    """The calls of this Locust process, in one pstream subprocess (see the module docstring)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.waiting: dict[str, AsyncResult] = {}
        self.ready = AsyncResult()
        self.lock = Semaphore()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "plivo_stream_cli.adapters.callpool", json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.reader = gevent.spawn(self._read)
        if not self.ready.get(timeout=30):
            raise RuntimeError("the pstream call pool did not start (see its stderr)")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            doc = json.loads(line)
            if doc.get("ready"):
                self.ready.set(True)
            elif (result := self.waiting.pop(str(doc.get("id")), None)) is not None:
                result.set(doc)
        self.ready.set(False)
        for result in self.waiting.values():
            result.set({"ok": False, "error": "the pstream call pool exited"})
        self.waiting.clear()

    def call(self) -> dict[str, Any]:
        """Place one call and wait (cooperatively) for its report."""
        request_id = uuid.uuid4().hex
        result = AsyncResult()
        self.waiting[request_id] = result
        with self.lock:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"id": request_id}) + "\n")
            self.proc.stdin.flush()
        doc: dict[str, Any] = result.get()
        return doc

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(timeout=5)


_pools: dict[str, CallPool] = {}
_pools_lock = Semaphore()


def pool_for(environment: Environment, host: str) -> CallPool:
    """This process's pool for `host`, started on first use."""
    options = environment.parsed_options
    config: dict[str, Any] = {
        "url": host,
        "content_type": getattr(options, "pstream_content_type", "audio/x-mulaw;rate=8000"),
        "linger": getattr(options, "pstream_linger", 1.0),
        "extra_headers": getattr(options, "pstream_extra_headers", ""),
        "auth_token_env": "PLIVO_AUTH_TOKEN",
    }
    if audio := getattr(options, "pstream_audio", ""):
        config["audio_path"] = os.path.abspath(audio)
    if barge := getattr(options, "pstream_barge_in_at", ""):
        config["barge_in_at"] = float(barge)
    key = json.dumps(config, sort_keys=True)
    with _pools_lock:
        if key not in _pools:
            _pools[key] = CallPool(config)
        return _pools[key]


def _close_pools(environment: Environment, **_: Any) -> None:
    with _pools_lock:
        for pool in _pools.values():
            pool.close()
        _pools.clear()


events.test_stop.add_listener(_close_pools)  # type: ignore[no-untyped-call]


def report(environment: Environment, doc: dict[str, Any], barge_in: bool) -> None:
    """Turn one call's report into Locust request events (see the module docstring)."""

    def fire(name: str, ms: float | None, error: str | None = None) -> None:
        environment.events.request.fire(  # type: ignore[no-untyped-call]
            request_type=REQUEST_TYPE,
            name=name,
            response_time=ms if ms is not None else 0,
            response_length=0,
            exception=None if error is None else CallFailure(error),
            context={"call_id": doc.get("call_id")},
        )

    options = environment.parsed_options
    connected = doc.get("connect_ms") is not None
    fire("connect", doc.get("connect_ms"), None if connected else doc.get("error") or "failed")
    if connected:
        values: dict[str, Any] = doc.get("metrics") or {}
        first = values.get("first_audio_ms")
        fire("first_audio", first, None if first is not None else "no reply after the speech")
        for trip in values.get("checkpoint_ms") or []:
            fire("checkpoint", trip)
        if barge_in:
            clear = values.get("clear_ms")
            fire("clear", clear, None if clear is not None else "no clearAudio after barge-in")
        for gap in values.get("reply_gaps_ms") or []:
            fire("reply_gap", gap)
        pacing = doc.get("pacing") or {}
        if pacing.get("p99") is not None:
            late, limit = pacing["p99"], getattr(options, "pstream_max_late_ms", PACING_LIMIT_MS)
            verdict = None if late <= limit else f"generator late: p99 {late} ms > {limit:g} ms"
            fire("pacing_late_p99", late, verdict)
    fire("call", doc.get("call_ms"), None if doc.get("ok") else doc.get("error") or "failed")


class CallFailure(Exception):
    """A call, or one of its figures, failed (the message says why)."""


class PlivoCaller(User):
    """Places simulated Plivo calls against `--host` (a ws:// or wss:// URL), back to back."""

    wait_time = constant(0)

    @task
    def place_call(self) -> None:
        if not self.host or not self.host.startswith(("ws://", "wss://")):
            raise CallFailure(f"--host must be a ws:// or wss:// URL, got {self.host!r}")
        pool = pool_for(self.environment, self.host)
        doc = pool.call()
        barge = bool(getattr(self.environment.parsed_options, "pstream_barge_in_at", ""))
        report(self.environment, doc, barge)


if __name__ == "__main__":
    print(os.path.abspath(__file__))
