"""A small voice bot on Plivo's stream protocol, to try pstream's tap and scenarios against.

It greets each call (2 s of tone, then a checkpoint), stops talking the moment the caller talks
over it (clearAudio), and answers each thing the caller says half a second after they stop
(1 s of tone and a checkpoint). Only the `websockets` package, which pstream installs.

    python examples/bot.py --port 8765                            # terminal 1: the bot
    pstream serve --upstream ws://127.0.0.1:8765/ws               # terminal 2: pstream in front
    pstream simulate ws://127.0.0.1:8080/stream --scenario examples/barge-in.yaml   # terminal 3
"""

from __future__ import annotations

import argparse
import asyncio
import audioop
import base64
import json
import math
import struct

from websockets.asyncio.server import ServerConnection, serve

RATE = 8000
FRAME = 160  # 20 ms of mu-law
SPEECH_RMS = 100  # 16-bit RMS above which a caller frame is speech (about -50 dBFS)
QUIET_AFTER = 0.5  # seconds of quiet that end the caller's turn


def tone(seconds: float, hz: float) -> bytes:
    """`seconds` of a sine at `hz`, as 8 kHz mu-law."""
    count = int(seconds * RATE)
    pcm = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * hz * i / RATE))) for i in range(count)
    )
    return audioop.lin2ulaw(pcm, 2)


GREETING, REPLY = tone(2.0, 440), tone(1.0, 660)


class Call:
    """One stream: what the bot is playing, and whether the caller is talking."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.stream_id = ""
        self.speaking = False
        self.last_speech = 0.0
        self.player: asyncio.Task[None] | None = None

    async def send(self, event: dict[str, object]) -> None:
        await self.ws.send(json.dumps(event))

    def play(self, audio: bytes, name: str) -> None:
        self.player = asyncio.ensure_future(self._play(audio, name))

    async def _play(self, audio: bytes, name: str) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        for index, offset in enumerate(range(0, len(audio), FRAME * 10)):  # 200 ms chunks
            await asyncio.sleep(max(0.0, began + index * 0.2 - 0.1 - loop.time()))
            chunk = base64.b64encode(audio[offset : offset + FRAME * 10]).decode()
            media = {"contentType": "audio/x-mulaw", "sampleRate": RATE, "payload": chunk}
            await self.send({"event": "playAudio", "media": media})
        await self.send({"event": "checkpoint", "streamId": self.stream_id, "name": name})

    async def on_media(self, payload: bytes, now: float) -> None:
        loud = audioop.rms(audioop.ulaw2lin(payload, 2), 2) > SPEECH_RMS
        if loud:
            self.last_speech = now
            if not self.speaking and self.player is not None and not self.player.done():
                self.player.cancel()  # barge-in: stop talking at once
                await self.send({"event": "clearAudio", "streamId": self.stream_id})
            self.speaking = True
        elif self.speaking and now - self.last_speech >= QUIET_AFTER:
            self.speaking = False
            self.play(REPLY, "reply")


async def handle(ws: ServerConnection) -> None:
    call = Call(ws)
    loop = asyncio.get_running_loop()
    try:
        async for message in ws:
            event = json.loads(message)
            if event.get("event") == "start":
                call.stream_id = event["start"]["streamId"]
                call.play(GREETING, "greeting")
            elif event.get("event") == "media":
                await call.on_media(base64.b64decode(event["media"]["payload"]), loop.time())
    finally:
        if call.player is not None:
            call.player.cancel()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    async with serve(handle, args.host, args.port) as server:
        print(f"bot listening on ws://{args.host}:{args.port}/ws", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
