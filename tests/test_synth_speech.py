"""The built-in caller clips are speech to real voice-activity detectors, and a VAD bot answers.

Bots find the caller's turn with a VAD (pipecat: Silero VAD; many others: WebRTC VAD), and those
ignore tones: the old tone "caller" got no reply from a pipecat bot. Both detectors here are the
real ones (`webrtcvad-wheels`; `silero-vad` with the ONNX model its package ships, run by
onnxruntime), from the `test` extra.
"""

from __future__ import annotations

import base64
import contextlib
import json
from array import array
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import webrtcvad
from silero_vad import get_speech_timestamps, load_silero_vad
from typer.testing import CliRunner
from websockets.asyncio.server import ServerConnection, serve

from plivo_stream_cli import codec, synth
from plivo_stream_cli.cli import app
from plivo_stream_cli.events import Checkpoint, PlayAudio
from plivo_stream_cli.formats import MULAW_8K
from tests.conftest import serving_in_thread

RATE = 8000
CLIPS = {"caller": synth.caller_clip, "barge-in": synth.barge_in_clip}


def old_tone_clip(rate: int) -> bytes:
    """What the built-in caller used to be: four tones (kept here to show why it went)."""
    parts = [synth.tone(f, 0.18, rate) + synth.silence(0.04, rate) for f in (330, 392, 440, 392)]
    return b"".join(parts) + synth.silence(0.3, rate)


def as_float(pcm: bytes) -> Any:
    import torch

    return torch.from_numpy(np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768)


@pytest.fixture(scope="module")
def silero() -> Any:
    return load_silero_vad(onnx=True)  # the model file inside the package: no download


@pytest.mark.parametrize("name", CLIPS)
@pytest.mark.parametrize("rate", [8000, 16000])
def test_webrtc_vad_takes_the_clips_for_speech(name: str, rate: int) -> None:
    vad = webrtcvad.Vad(3)  # the most aggressive mode: the least eager to call a frame speech
    frame = rate // 50 * 2  # 20 ms of 16-bit samples
    pcm = CLIPS[name](rate)
    frames = [pcm[i : i + frame] for i in range(0, len(pcm) - frame + 1, frame)]
    speech = sum(vad.is_speech(f, rate) for f in frames)
    assert speech >= 0.8 * len(frames), (speech, len(frames))
    fresh = webrtcvad.Vad(3)  # (a used one keeps calling speech for a few frames after it)
    silent = synth.silence(1.0, rate)
    assert not any(
        fresh.is_speech(silent[i : i + frame], rate) for i in range(0, len(silent), frame)
    )


@pytest.mark.parametrize("name", CLIPS)
def test_silero_vad_takes_the_clips_for_speech(name: str, silero: Any) -> None:
    pcm = CLIPS[name](RATE)
    found = get_speech_timestamps(as_float(pcm), silero, sampling_rate=RATE, return_seconds=True)
    spoken = sum(s["end"] - s["start"] for s in found)
    assert spoken >= 0.7 * len(pcm) / 2 / RATE, found
    tones = get_speech_timestamps(as_float(old_tone_clip(RATE)), silero, sampling_rate=RATE)
    assert tones == []  # why the clips are speech now


class SileroBot:
    """A pipecat-style voice bot: Silero VAD on the caller's audio finds the end of the turn
    (speech for START_S, then STOP_S of non-speech, as pipecat's VADParams), then it replies."""

    WINDOW = 256  # samples per Silero window at 8 kHz
    START_S, STOP_S = 0.2, 0.5
    ON, OFF = 0.5, 0.35

    def __init__(self) -> None:
        self.model = load_silero_vad(onnx=True)
        self.replies = 0

    async def __call__(self, ws: ServerConnection) -> None:
        import torch

        pending = array("h")
        voiced = unvoiced = 0.0
        speaking = False
        stream = ""
        step = self.WINDOW / RATE
        async for text in ws:
            msg = json.loads(text)
            if msg["event"] == "start":
                stream = msg["start"]["streamId"]
            if msg["event"] != "media":
                continue
            pending.frombytes(codec.decode(_payload(msg), MULAW_8K))
            while len(pending) >= self.WINDOW:
                window = torch.tensor(pending[: self.WINDOW].tolist(), dtype=torch.float32) / 32768
                del pending[: self.WINDOW]
                prob = float(self.model(window.unsqueeze(0), RATE))
                if prob >= self.ON:
                    voiced, unvoiced = voiced + step, 0.0
                elif prob < self.OFF:
                    unvoiced += step
                    if not speaking:
                        voiced = 0.0
                speaking = speaking or voiced >= self.START_S
                if speaking and unvoiced >= self.STOP_S:  # the caller's turn is over: answer
                    speaking, voiced, unvoiced = False, 0.0, 0.0
                    self.replies += 1
                    reply = codec.encode(synth.tone(440, 0.4, RATE), MULAW_8K)
                    await ws.send(PlayAudio(MULAW_8K, reply).to_json())
                    await ws.send(Checkpoint(stream, f"reply-{self.replies}").to_json())


def _payload(msg: dict[str, Any]) -> bytes:
    return base64.b64decode(msg["media"]["payload"])


def test_a_silero_vad_bot_answers_the_built_in_caller() -> None:
    bot = SileroBot()

    @contextlib.asynccontextmanager
    async def open_server() -> AsyncIterator[str]:
        async with serve(bot, "127.0.0.1", 0) as server:
            yield f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}/stream"

    with serving_in_thread(open_server) as url:
        args = ["simulate", url, "--require-reply", "--linger", "1.5", "--json"]
        result = CliRunner().invoke(app, args)  # no --audio: the built-in clip
    assert result.exit_code == 0, result.output
    (call,) = json.loads(result.stdout)["calls"]
    assert call["replied"] is True and bot.replies == 1
    first = call["metrics"]["first_audio_ms"]
    # the bot answers once it has heard STOP_S of the line's silence after the clip
    assert first is not None and 450 <= first <= 900, first
    assert call["checkpoints_confirmed"] == ["reply-1"]
