"""The floor for `benchmarks/load.py`: a bare `websockets` server that parses and decodes only.

Not part of the package. Every text frame is parsed as JSON and a media payload is
base64-decoded, nothing more: the least any Plivo stream server must do per frame. Same
`websockets` settings as `pstream serve`. Every 16th media frame's lag (now minus its
`media.timestamp`) is kept, so the floor's own limit shows too, at a negligible cost. On
SIGTERM it prints its counters and lag percentiles as JSON and exits.

    python benchmarks/floor_server.py --port 8090
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
import time

from websockets.asyncio.server import ServerConnection, serve

counts = {"messages": 0, "media": 0, "bytes": 0}
lags: list[float] = []


async def handle(ws: ServerConnection) -> None:
    async for message in ws:
        msg = json.loads(message)
        media = msg.get("media")
        if media is not None:
            counts["media"] += 1
            counts["bytes"] += len(base64.b64decode(media["payload"]))
            if not counts["media"] & 15:
                lags.append(time.time() * 1000 - int(media["timestamp"]))
        counts["messages"] += 1


async def main(port: int) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with serve(handle, "127.0.0.1", port, max_size=2**20, ping_interval=None):
        await stop.wait()
    lags.sort()
    pct = {f"lag_p{q}_ms": lags[min(len(lags) - 1, len(lags) * q // 100)] for q in (50, 99)}
    print(json.dumps({**counts, **(pct if lags else {})}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
