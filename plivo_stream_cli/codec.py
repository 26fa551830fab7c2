"""Audio codecs and framing: mu-law/L16 <-> 16-bit PCM, resampling, chunking, framing, levels.

Pure: bytes in, bytes out, no files or sockets. This is the per-frame hot path of the stream
server, so each function is a thin wrapper around `audioop` (C code; `audioop-lts` on 3.13+).
`audioop` is imported here only, with its DeprecationWarning silenced; other modules use this one.

"PCM" in this package means signed 16-bit little-endian mono samples, the layout of L16 on the wire
and of WAV data. `audioop` works in the host's byte order, so, like Plivo's own SDK examples, this
module assumes a little-endian host (every platform Python publishes builds for).
"""

from __future__ import annotations

import math
import warnings
from array import array
from typing import Literal

from plivo_stream_cli.formats import MULAW, MediaFormat

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = [
    "DEFAULT_MAX_B64",
    "MAX_B64_LIMIT",
    "SILENCE_DBFS",
    "CodecError",
    "Resampler",
    "alaw_to_pcm",
    "chunk_payloads",
    "decode",
    "encode",
    "frames",
    "interleave",
    "level_dbfs",
    "resample",
    "silence",
    "to_16bit",
    "to_mono",
]

DEFAULT_MAX_B64 = 16 * 1024
"""Plivo's recommended maximum of base64 characters per playAudio payload."""

MAX_B64_LIMIT = 64 * 1024 - 512
"""The largest payload whose playAudio message, envelope included, fits Plivo's 64 KB limit."""

SILENCE_DBFS = -96.0
"""The level of digital silence: below the quietest non-zero 16-bit signal (-90.3 dBFS)."""

_FULL_SCALE = 32768.0
_TYPECODES: dict[int, Literal["b", "h", "i"]] = {1: "b", 2: "h", 4: "i"}
_ulaw2lin = audioop.ulaw2lin
_lin2ulaw = audioop.lin2ulaw
_rms = audioop.rms
_AudioopError = audioop.error


class CodecError(ValueError):
    """Audio bytes that cannot be what they claim to be (e.g. an odd number of L16 bytes)."""


def decode(payload: bytes, fmt: MediaFormat) -> bytes:
    """Wire audio in `fmt` -> 16-bit PCM at `fmt.sample_rate` (L16 is returned as is)."""
    if fmt.encoding == MULAW:
        return _ulaw2lin(payload, 2)
    if len(payload) & 1:
        raise CodecError(f"L16 audio must be whole 16-bit samples, got {len(payload)} bytes")
    return payload


def encode(pcm: bytes, fmt: MediaFormat) -> bytes:
    """16-bit PCM at `fmt.sample_rate` -> wire audio in `fmt` (L16 is returned as is)."""
    if len(pcm) & 1:
        raise CodecError(f"PCM must be whole 16-bit samples, got {len(pcm)} bytes")
    if fmt.encoding == MULAW:
        return _lin2ulaw(pcm, 2)
    return pcm


def alaw_to_pcm(alaw: bytes) -> bytes:
    """G.711 A-law (found in some telephony WAV files) -> 16-bit PCM."""
    return audioop.alaw2lin(alaw, 2)


class Resampler:
    """Converts a 16-bit mono PCM stream between sample rates, one chunk at a time.

    `audioop.ratecv` (linear interpolation) keeps its position between calls, so a stream cut
    into chunks resamples to exactly the same samples as the whole (no clicks at chunk borders).
    A stray odd byte is held until the next chunk completes the sample. There is no anti-alias
    filter: downsampling music aliases what lies above the new Nyquist frequency, which is fine
    for speech prompts; convert music with sox or ffmpeg first.
    """

    __slots__ = ("_partial", "_state", "dst_rate", "src_rate")

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        if src_rate <= 0 or dst_rate <= 0:
            raise CodecError(f"sample rates must be positive, got {src_rate} -> {dst_rate}")
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        self._state: tuple[int, tuple[tuple[int, int], ...]] | None = None
        self._partial = b""

    @property
    def identity(self) -> bool:
        """True when no resampling is needed (chunks pass through untouched)."""
        return self.src_rate == self.dst_rate

    def process(self, pcm: bytes) -> bytes:
        """Resample the next chunk; returns the output samples it completes."""
        if self._partial:
            pcm = self._partial + pcm
            self._partial = b""
        if len(pcm) & 1:
            self._partial = pcm[-1:]
            pcm = pcm[:-1]
        if self.src_rate == self.dst_rate or not pcm:
            return pcm
        out, self._state = audioop.ratecv(pcm, 2, 1, self.src_rate, self.dst_rate, self._state)
        return out

    def flush(self) -> bytes:
        """End the stream and reset for a new one; returns what is left, always empty.

        ratecv emits as it goes; what it never emits is the interpolation tail after the last
        input sample (under one input sample of time). A stray odd byte is dropped.
        """
        self._state = None
        self._partial = b""
        return b""


def resample(pcm: bytes, src_rate: int, dst_rate: int) -> bytes:
    """Resample a whole 16-bit mono buffer (see `Resampler` for streams)."""
    _check_aligned(pcm, 2, "PCM")
    return Resampler(src_rate, dst_rate).process(pcm)


def to_mono(pcm: bytes, channels: int, sample_width: int = 2) -> bytes:
    """Interleaved `channels`-channel PCM -> mono, averaging the channels."""
    if channels < 1:
        raise CodecError(f"channel count must be at least 1, got {channels}")
    _check_aligned(pcm, channels * sample_width, f"{channels}-channel audio")
    if channels == 1:
        return pcm
    if channels == 2:
        return audioop.tomono(pcm, sample_width, 0.5, 0.5)
    typecode = _TYPECODES.get(sample_width)
    if typecode is None:
        raise CodecError(f"convert {sample_width * 8}-bit audio to 16-bit before mixing channels")
    samples = memoryview(pcm).cast(typecode)
    mixed = b""
    for ch in range(channels):
        # A strided view picks one channel; each adds its share so the sum cannot clip.
        share = audioop.mul(samples[ch::channels].tobytes(), sample_width, 1.0 / channels)
        mixed = audioop.add(mixed, share, sample_width) if mixed else share
    return mixed


def to_16bit(pcm: bytes, sample_width: int) -> bytes:
    """8/16/24/32-bit integer PCM (WAV layout: 8-bit unsigned, wider signed) -> 16-bit signed."""
    if sample_width not in (1, 2, 3, 4):
        raise CodecError(f"unsupported sample width: {sample_width * 8} bits")
    _check_aligned(pcm, sample_width, f"{sample_width * 8}-bit audio")
    if sample_width == 2:
        return pcm
    if sample_width == 1:
        # WAV stores 8-bit samples unsigned (128 is silence); audioop expects signed.
        pcm = audioop.bias(pcm, 1, -128)
    return audioop.lin2lin(pcm, sample_width, 2)


def interleave(left: bytes, right: bytes) -> bytes:
    """Two 16-bit mono buffers of the same length -> one interleaved stereo buffer."""
    if len(left) != len(right):
        raise CodecError(f"channels differ in length: {len(left)} and {len(right)} bytes")
    # Strided array assignment is about twice as fast as audioop.tostereo + audioop.add.
    out = array("h", bytes(2 * len(left)))
    out[0::2] = array("h", left)
    out[1::2] = array("h", right)
    return out.tobytes()


def silence(fmt: MediaFormat, nbytes: int) -> bytes:
    """`nbytes` of silence in `fmt`: 0xFF for mu-law (its positive zero), 0x00 for L16."""
    return (b"\xff" if fmt.encoding == MULAW else b"\x00") * nbytes


def chunk_payloads(wire: bytes, fmt: MediaFormat, max_b64: int = DEFAULT_MAX_B64) -> list[bytes]:
    """Split wire audio into raw payloads whose base64 is at most `max_b64` characters.

    Chunks hold whole samples; every chunk but the last has the same size.
    """
    width = fmt.sample_width
    if not 4 <= max_b64 <= MAX_B64_LIMIT:
        raise CodecError(f"max base64 payload size must be 4 to {MAX_B64_LIMIT}, got {max_b64}")
    _check_aligned(wire, width, "L16 audio")
    size = max_b64 // 4 * 3  # base64 turns every 3 bytes into 4 characters
    size -= size % width
    return [wire[i : i + size] for i in range(0, len(wire), size)]


def frames(wire: bytes, fmt: MediaFormat, ms: int = 20) -> list[bytes]:
    """Cut wire audio into `ms`-millisecond frames, padding the last one with silence."""
    size = fmt.frame_bytes(ms)
    if size <= 0 or size % fmt.sample_width:
        raise CodecError(f"{ms} ms is not a whole number of samples in {fmt.content_type}")
    _check_aligned(wire, fmt.sample_width, "L16 audio")
    out = [wire[i : i + size] for i in range(0, len(wire), size)]
    if out and len(out[-1]) < size:
        out[-1] += silence(fmt, size - len(out[-1]))
    return out


def level_dbfs(pcm: bytes) -> float:
    """RMS level of 16-bit PCM in dBFS (0 for a full-scale square wave, -3 for a full-scale sine).

    Digital silence (and an empty frame) reports `SILENCE_DBFS` (-96.0) rather than -inf, so the
    value is always a finite float that JSON and meters can handle.
    """
    try:
        rms = _rms(pcm, 2)
    except _AudioopError:
        raise CodecError(f"PCM must be whole 16-bit samples, got {len(pcm)} bytes") from None
    if rms == 0:
        return SILENCE_DBFS
    return 20.0 * math.log10(rms / _FULL_SCALE)


def _check_aligned(data: bytes, unit: int, what: str) -> None:
    if len(data) % unit:
        raise CodecError(
            f"{what} must be a whole number of {unit}-byte samples, got {len(data)} bytes"
        )
