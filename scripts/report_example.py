"""Record a real example call and draw it with `pstream report` (how docs/report.png is made).

    python scripts/report_example.py DIR              # capture + page in DIR
    python scripts/report_example.py DIR --png FILE   # and a headless-Chromium screenshot

A small bot on 127.0.0.1 records its side of the stream as `serve --record` does (CallRecorder):
it greets (with a checkpoint), answers the caller's speech after a pause in 20 ms chunks (with
a stall mid-reply, which shows as a reply gap), clears when the caller talks over it, answers
the barge-in. The caller, `simulate`'s engine in real time, also presses 5 during the greeting.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from plivo_stream_cli import codec, synth
from plivo_stream_cli.adapters.recorder import CallRecorder
from plivo_stream_cli.adapters.simulator import SimulateConfig, run_call
from plivo_stream_cli.commands.report_cmd import write_call_report
from plivo_stream_cli.events import Checkpoint, ClearAudio, PlayAudio
from plivo_stream_cli.formats import MULAW_8K

RATE = 8000
FRAME = MULAW_8K.frame_bytes()
THINK = 0.45  # the bot's pause before answering
STALL_AT, STALL = 0.8, 0.15  # seconds into the answer, and how long the bot stalls
CLEAR_DELAY = 0.12


def wire(pcm: bytes) -> bytes:
    return codec.encode(pcm, MULAW_8K)


GREETING = wire(synth.greeting(RATE))
ANSWER = wire(b"".join(synth.tone(f, 0.3, RATE) for f in (440, 494, 523, 587, 659, 587, 523)))
SHORT = wire(synth.tone(880, 0.25, RATE) + synth.tone(660, 0.25, RATE))


class Bot:
    """One call's bot; its capture goes to `directory`."""

    def __init__(self, ws: ServerConnection, directory: Path) -> None:
        self.ws, self.directory = ws, directory
        self.recorder: CallRecorder | None = None
        self.stream = ""
        self.loud = self.quiet = 0
        self.turns = 0
        self.player: asyncio.Task[None] | None = None

    async def send(self, text: str) -> None:
        if self.recorder is not None:
            self.recorder.capture("out", text, is_json=True)
        await self.ws.send(text)

    async def speak(self, audio: bytes, name: str, delay: float = 0.0) -> None:
        await asyncio.sleep(delay)
        loop = asyncio.get_running_loop()
        began = loop.time()
        for index, offset in enumerate(range(0, len(audio), FRAME)):
            stall = STALL if audio is ANSWER and index * 0.02 >= STALL_AT else 0.0
            await asyncio.sleep(max(0.0, began + stall + (index - 1) * 0.02 - loop.time()))
            await self.send(PlayAudio(MULAW_8K, audio[offset : offset + FRAME]).to_json())
        await self.send(Checkpoint(self.stream, name).to_json())

    def playing(self) -> bool:
        return self.player is not None and not self.player.done()

    async def run(self) -> None:
        try:
            async for message in self.ws:
                assert isinstance(message, str)
                await self.on(message, json.loads(message))
        finally:
            if self.player is not None:
                self.player.cancel()
            if self.recorder is not None:
                self.recorder.close()

    async def on(self, text: str, event: dict[str, Any]) -> None:
        if event["event"] == "start":
            start = event["start"]
            self.stream = start["streamId"]
            self.recorder = CallRecorder(self.directory, start["callId"], self.stream, MULAW_8K)
        if self.recorder is not None:
            self.recorder.capture("in", text, is_json=True)
        kind = event["event"]
        if kind == "start":
            self.player = asyncio.ensure_future(self.speak(GREETING, "greeting"))
        elif kind == "media":
            await self.on_media(event)

    async def on_media(self, event: dict[str, Any]) -> None:
        payload = base64.b64decode(event["media"]["payload"])
        if codec.level_dbfs(codec.decode(payload, MULAW_8K)) > -50:
            self.loud, self.quiet = self.loud + 1, 0
            if self.loud == 5 and self.playing() and self.turns:
                await asyncio.sleep(CLEAR_DELAY)
                assert self.player is not None
                self.player.cancel()
                await self.send(ClearAudio(self.stream).to_json())
            return
        self.quiet += 1
        if self.quiet == 10 and self.loud >= 5:
            self.turns += 1
            audio, name = (ANSWER, "answer") if self.turns == 1 else (SHORT, "ok")
            self.player = asyncio.ensure_future(self.speak(audio, name, THINK))
        if self.quiet >= 10:
            self.loud = 0


async def record(directory: Path) -> Path:
    async def handler(ws: ServerConnection) -> None:
        await Bot(ws, directory).run()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        caller = synth.silence(1.6, RATE) + synth.caller_clip(RATE)
        config = SimulateConfig(
            url=f"ws://127.0.0.1:{port}/stream",
            audio=wire(caller),
            barge_in_at=1.2,
            dtmf=[("5", 0.9)],
            linger=1.5,
        )
        await run_call(config)
    (capture,) = directory.glob("*.jsonl")
    return capture


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--png", type=Path, help="also write a screenshot (needs chromium)")
    args = parser.parse_args()
    args.directory.mkdir(parents=True, exist_ok=True)
    capture = asyncio.run(record(args.directory))
    page = write_call_report(capture, capture.with_suffix(".html"))
    print(page)
    if args.png:
        chromium = shutil.which("chromium")
        if chromium is None:
            print("chromium not found: no screenshot", file=sys.stderr)
            return 1
        profile = args.directory / "chromium-profile"
        subprocess.run(
            [
                chromium, "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--no-first-run", f"--user-data-dir={profile}", "--hide-scrollbars",
                "--window-size=1320,860", f"--screenshot={args.png.resolve()}",
                page.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )  # fmt: skip
        shutil.rmtree(profile, ignore_errors=True)
        print(args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
