"""Built-in audio: tones, DTMF and sweeps generated in code; the caller's spoken clips.

Pure. Produces 16-bit little-endian mono PCM at any rate; `codec.encode` turns it into wire audio.
The caller and barge-in clips are real (synthesized) speech shipped as package data
(`data/*.ulaw`, 8 kHz mu-law; see `data/README.md` for where they come from): voice-activity
detectors ignore tones, so a bot would never hear a tone "caller" stop talking.
"""

from __future__ import annotations

import functools
import math
from array import array
from importlib import resources

from plivo_stream_cli import codec
from plivo_stream_cli.formats import MULAW_8K, MediaFormat

DTMF_FREQUENCIES = {
    "1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "A": (697, 1633),
    "4": (770, 1209), "5": (770, 1336), "6": (770, 1477), "B": (770, 1633),
    "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "C": (852, 1633),
    "*": (941, 1209), "0": (941, 1336), "#": (941, 1477), "D": (941, 1633),
}  # fmt: skip


def _pcm(samples: array[int]) -> bytes:
    return samples.tobytes()


def tones(freqs: tuple[float, ...], seconds: float, rate: int, amplitude: float = 0.3) -> bytes:
    """A sum of sines, with 10 ms fades so the edges do not click."""
    count = int(seconds * rate)
    fade = max(1, int(0.01 * rate))
    peak = 32767 * amplitude / max(1, len(freqs))
    out = array("h", bytes(2 * count))
    steps = [2 * math.pi * f / rate for f in freqs]
    for i in range(count):
        gain = min(1.0, i / fade, (count - 1 - i) / fade)
        out[i] = int(peak * gain * sum(math.sin(step * i) for step in steps))
    return _pcm(out)


def tone(freq: float, seconds: float, rate: int, amplitude: float = 0.3) -> bytes:
    return tones((freq,), seconds, rate, amplitude)


def silence(seconds: float, rate: int) -> bytes:
    return bytes(2 * int(seconds * rate))


def dtmf(digit: str, seconds: float, rate: int) -> bytes:
    """The two-tone signal of a keypad digit."""
    return tones(DTMF_FREQUENCIES[digit.upper()], seconds, rate)


def sweep(start: float, end: float, seconds: float, rate: int, amplitude: float = 0.3) -> bytes:
    """A linear chirp from `start` to `end` Hz."""
    count = int(seconds * rate)
    out = array("h", bytes(2 * count))
    fade = max(1, int(0.01 * rate))
    k = (end - start) / max(seconds, 1e-9)
    for i in range(count):
        t = i / rate
        gain = min(1.0, i / fade, (count - 1 - i) / fade)
        out[i] = int(32767 * amplitude * gain * math.sin(2 * math.pi * (start * t + k * t * t / 2)))
    return _pcm(out)


@functools.cache
def _spoken(name: str) -> bytes:
    """A shipped 8 kHz mu-law clip as 16-bit PCM at 8 kHz."""
    data = resources.files("plivo_stream_cli").joinpath("data").joinpath(name).read_bytes()
    return codec.decode(data, MULAW_8K)


def _at_rate(pcm_8k: bytes, rate: int) -> bytes:
    return pcm_8k if rate == 8000 else codec.resample(pcm_8k, 8000, rate)


def caller_clip(rate: int) -> bytes:
    """The built-in caller: "Hello, can you help me with my order?" (2.2 s of speech)."""
    return _at_rate(_spoken("caller.ulaw"), rate)


def barge_in_clip(rate: int) -> bytes:
    """What the built-in caller says over the bot: "Wait, sorry." (0.9 s of speech)."""
    return _at_rate(_spoken("bargein.ulaw"), rate)


def greeting(rate: int) -> bytes:
    """The built-in bot greeting: a rising sweep and a two-note chime."""
    return (
        sweep(300, 1200, 0.6, rate)
        + silence(0.1, rate)
        + tone(660, 0.25, rate)
        + tone(880, 0.35, rate)
    )


def default_caller_audio(fmt: MediaFormat) -> bytes:
    """The caller clip as wire audio in `fmt` (simulate's default `--audio`)."""
    return codec.encode(caller_clip(fmt.sample_rate), fmt)


def default_barge_in_audio(fmt: MediaFormat) -> bytes:
    """The barge-in clip as wire audio in `fmt` (simulate's default `--barge-in-audio`)."""
    return codec.encode(barge_in_clip(fmt.sample_rate), fmt)
