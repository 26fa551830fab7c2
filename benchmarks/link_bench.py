"""serve's work per received frame above the socket, in process: the link splitting frames
itself against websockets reading every byte.

Not a test. No sockets: S streams of a real `StreamServer` (each a `PlivoLink` on a stand-in
transport, upgraded by a real handshake and started by a start event) are given F masked 20 ms
media frames each, one frame per `data_received` as a loaded server reads them, interleaved
across streams. Two cases take turns in one run: `split` (the link reads plain frames itself,
serve's default) and `websockets` (`WebSocketLink.splits_frames = False`: websockets' parser
reads every byte, as before the link split frames). With `--record` (the default) each stream
records, as `serve --record` does. CPU time (`time.process_time`) per frame; each case keeps
its fastest and median run, and the ratio of the medians is printed.

    python benchmarks/link_bench.py                  # --streams 200 --frames 150 --repeat 5
    taskset -c 1 python benchmarks/link_bench.py     # on one CPU, less noise
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from websockets.client import ClientProtocol
from websockets.protocol import State
from websockets.uri import parse_uri

from plivo_stream_cli.adapters.server import ServeConfig, StreamServer
from plivo_stream_cli.adapters.wslink import WebSocketLink
from plivo_stream_cli.events import Media, Start
from plivo_stream_cli.formats import MULAW_8K


class Transport:
    """The part of an asyncio transport a link uses; what it writes is kept."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


async def one_run(streams: int, frames: int, record: bool, split: bool) -> float:
    """Microseconds of CPU per frame for one run of `streams` x `frames`."""
    WebSocketLink.splits_frames = split
    with tempfile.TemporaryDirectory() as directory:
        config = ServeConfig(record_dir=Path(directory) if record else None, port=0)
        server = StreamServer(config)
        links, clients = [], []
        for i in range(streams):
            link = server._new_link()  # what the listening socket would create per connection
            transport = Transport()
            link.connection_made(transport)  # type: ignore[arg-type]
            client = ClientProtocol(parse_uri("ws://127.0.0.1/stream"))
            client.send_request(client.connect())
            link.data_received(b"".join(client.data_to_send()))
            client.receive_data(b"".join(transport.written))
            client.events_received()
            assert client.state is State.OPEN and link.framing is split
            start = Start(f"call-{i}", f"s-{i}", "MA", ("inbound",), MULAW_8K, sequence_number=1)
            client.send_text(start.to_json().encode())
            link.data_received(b"".join(client.data_to_send()))
            links.append(link)
            clients.append(client)
        for _ in range(1000):  # until every stream has its recorder (opened in a thread)
            await asyncio.sleep(0.01)
            lives = list(server.streams.values())
            ready = [live for live in lives if live.recorder is not None or not record]
            if len(ready) == streams:
                break
        payload = os.urandom(160)
        wire = []
        for i, client in enumerate(clients):
            row = []
            for k in range(frames):
                stamp = str(1_700_000_000_000 + 20 * k)
                text = Media(f"s-{i}", "inbound", stamp, payload, k + 1, k + 2, "").to_json()
                client.send_text(text.encode())
                row.append(b"".join(client.data_to_send()))
            wire.append(row)
        began = time.process_time()
        for k in range(frames):
            for i in range(streams):
                links[i].data_received(wire[i][k])
        elapsed = time.process_time() - began
        received = sum(live.session.stats.media_packets for live in server.streams.values())
        assert received == streams * frames, (received, streams * frames)
        for link in links:
            link.connection_lost(None)
        for _ in range(100):
            if not server.streams:
                break
            await asyncio.sleep(0.01)
    WebSocketLink.splits_frames = True
    return elapsed / (streams * frames) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-record", dest="record", action="store_false")
    args = parser.parse_args()
    results: dict[str, list[float]] = {"websockets": [], "split": []}
    for _ in range(args.repeat):
        for name in results:
            run = one_run(args.streams, args.frames, args.record, name == "split")
            results[name].append(asyncio.run(run))
    print(f"{'case':10} {'fastest':>9} {'median':>9}   us of CPU per frame")
    for name, values in results.items():
        print(f"{name:10} {min(values):9.2f} {statistics.median(values):9.2f}")
    ratio = statistics.median(results["split"]) / statistics.median(results["websockets"])
    print(f"split / websockets (medians): {ratio:.2f}")


if __name__ == "__main__":
    main()
