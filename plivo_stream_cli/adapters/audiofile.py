"""Audio files: loading WAV and raw files for playback in a stream's format, and writing WAV.

Thin I/O over `codec`. WAV headers are read here rather than with the stdlib `wave` module because
`wave` before Python 3.12 refuses WAVE_FORMAT_EXTENSIBLE (how most tools write 24/32-bit files)
and cannot say why a file is unsupported; this reader names the problem (compressed, truncated,
empty, not a WAV at all) in one line. Writing uses `wave`.
"""

from __future__ import annotations

import struct
import wave
from dataclasses import dataclass
from pathlib import Path

from plivo_stream_cli import codec
from plivo_stream_cli.errors import UsageError
from plivo_stream_cli.formats import MULAW, MULAW_8K, MediaFormat

__all__ = ["AudioFileError", "WavInfo", "load_audio", "load_pcm", "read_wav", "write_wav"]

RAW_MULAW_SUFFIXES = frozenset({".ulaw", ".mulaw", ".ul", ".mu"})
RAW_SUFFIXES = frozenset({".raw", ".pcm", ".l16"})

_PCM, _MULAW_TAG, _ALAW_TAG, _EXTENSIBLE = 0x0001, 0x0007, 0x0006, 0xFFFE
_FORMAT_NAMES = {
    0x0002: "Microsoft ADPCM",
    0x0003: "32-bit float",
    0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10",
    0x0050: "MPEG",
    0x0055: "MP3",
    0x0161: "WMA",
    0x00FF: "AAC",
}
_STREAMING_SIZE = 0xFFFFFFFF  # what writers that cannot seek put in the data size
_CONVERT_HINT = "convert it, e.g. `ffmpeg -i IN -ac 1 -ar 8000 -c:a pcm_s16le OUT.wav`"


class AudioFileError(UsageError):
    """An audio file that cannot be played: missing, empty, truncated or of an unsupported kind."""


@dataclass(frozen=True)
class WavInfo:
    """What a WAV header says: sample encoding (PCM, mu-law or A-law), layout and rate."""

    format_tag: int  # _PCM, _MULAW_TAG or _ALAW_TAG once EXTENSIBLE is resolved
    channels: int
    sample_rate: int
    sample_width: int  # bytes per sample per channel


def load_audio(
    path: str | Path, fmt: MediaFormat, *, raw_format: MediaFormat | None = None
) -> bytes:
    """Read an audio file and convert it to wire audio in `fmt`, ready to chunk into playAudio.

    Accepts integer PCM WAV (8/16/24/32-bit, any rate, any channel count), mu-law/A-law WAV, raw
    mu-law at 8 kHz (`.ulaw`, `.mulaw`) and raw audio in `raw_format` (`.raw`, `.pcm`, `.l16`).
    Audio already in `fmt` is returned byte for byte.
    """
    path = Path(path)
    data = _read(path)
    if _is_wav(path, data):
        info, samples = read_wav(path, data)
        if info.format_tag == _MULAW_TAG and info.channels == 1 and fmt == _wav_format(info):
            return samples
        pcm, rate = _wav_to_pcm(info, samples)
    else:
        raw_fmt = _raw_format(path, raw_format)
        if raw_fmt == fmt:
            return data
        pcm, rate = _decode_raw(path, data, raw_fmt), raw_fmt.sample_rate
    return codec.encode(codec.Resampler(rate, fmt.sample_rate).process(pcm), fmt)


def load_pcm(path: str | Path, *, raw_format: MediaFormat | None = None) -> tuple[bytes, int]:
    """Read an audio file as 16-bit mono PCM at its own rate: returns (pcm, sample_rate)."""
    path = Path(path)
    data = _read(path)
    if _is_wav(path, data):
        return _wav_to_pcm(*read_wav(path, data))
    raw_fmt = _raw_format(path, raw_format)
    return _decode_raw(path, data, raw_fmt), raw_fmt.sample_rate


def write_wav(path: str | Path, pcm16: bytes, rate: int, *, channels: int = 1) -> None:
    """Write 16-bit PCM as a WAV file (replacing any file at `path`).

    The file is opened first: `wave.open(name)` on a path it cannot open leaves a half-built
    writer whose `__del__` prints a second traceback after the error.
    """
    with open(path, "wb") as handle, wave.open(handle, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm16)


def read_wav(path: str | Path, data: bytes | None = None) -> tuple[WavInfo, bytes]:
    """Parse a WAV file (or its bytes, `data`): returns its header info and its sample bytes."""
    path = Path(path)
    if data is None:
        data = _read(path)
    if data[:4] == b"RF64":
        raise _bad(path, f"RF64 (64-bit) WAV is not supported; {_CONVERT_HINT}")
    if data[:4] != b"RIFF":
        raise _bad(path, "not a WAV file (no RIFF header)")
    if len(data) < 12:
        raise _bad(path, "truncated WAV header")
    if data[8:12] != b"WAVE":
        raise _bad(path, "a RIFF file but not WAVE audio")
    fmt_chunk, samples = _find_chunks(path, data)
    info = _parse_fmt(path, fmt_chunk)
    frame = info.channels * info.sample_width
    samples = samples[: len(samples) - len(samples) % frame]
    if not samples:
        raise _bad(path, "has no audio (its data chunk is empty)")
    return info, samples


def _read(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AudioFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise AudioFileError(f"{path}: is a directory, not an audio file") from None
    except OSError as exc:
        raise AudioFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not data:
        raise _bad(path, "is empty")
    return data


def _bad(path: Path, problem: str) -> AudioFileError:
    return AudioFileError(f"{path}: {problem}")


def _is_wav(path: Path, data: bytes) -> bool:
    """WAV by content or name, raw by name; other containers are refused by their magic bytes."""
    suffix = path.suffix.lower()
    if data[:4] in (b"RIFF", b"RF64"):
        return True
    if suffix in RAW_MULAW_SUFFIXES or suffix in RAW_SUFFIXES:
        return False
    kind = _sniff_other(data, suffix)
    if kind:
        raise _bad(path, f"{kind} is not supported; use WAV or raw mu-law ({_CONVERT_HINT})")
    return suffix in (".wav", ".wave")


def _sniff_other(data: bytes, suffix: str) -> str | None:
    # MPEG audio frames start with 11 set sync bits; checked only when the name says nothing,
    # since raw mu-law silence (0xFF...) looks the same.
    if data[:3] == b"ID3" or suffix == ".mp3" or (data[0] == 0xFF and data[1:2] >= b"\xe0"):
        return "MP3"
    for magic, name in ((b"OggS", "Ogg"), (b"fLaC", "FLAC"), (b"FORM", "AIFF")):
        if data.startswith(magic):
            return name
    if data[4:8] == b"ftyp":
        return "MP4/M4A"
    return None


def _find_chunks(path: Path, data: bytes) -> tuple[bytes, bytes]:
    """Walk the RIFF chunks; returns the fmt chunk body and the data chunk body."""
    fmt_chunk: bytes | None = None
    pos = 12
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if chunk_id == b"fmt ":
            fmt_chunk = data[body : body + size]
        elif chunk_id == b"data":
            if fmt_chunk is None:
                raise _bad(path, "data chunk comes before the fmt chunk (not a valid WAV)")
            # A data size past the end means a writer that crashed or could not seek: keep
            # what is there, as players do.
            end = len(data) if size == _STREAMING_SIZE else min(body + size, len(data))
            return fmt_chunk, data[body:end]
        pos = body + size + (size & 1)  # chunks are padded to an even size
    if fmt_chunk is None:
        raise _bad(path, "truncated WAV header (no fmt chunk)")
    _parse_fmt(path, fmt_chunk)  # a cut-off fmt chunk is the better explanation
    raise _bad(path, "truncated WAV file (no data chunk)")


def _parse_fmt(path: Path, chunk: bytes) -> WavInfo:
    if len(chunk) < 16:
        raise _bad(path, f"truncated WAV header (fmt chunk of {len(chunk)} bytes, need 16)")
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", chunk)
    if tag == _EXTENSIBLE:
        if len(chunk) < 40:
            raise _bad(path, "truncated WAV header (short WAVE_FORMAT_EXTENSIBLE fmt chunk)")
        tag = struct.unpack_from("<H", chunk, 24)[0]  # the sub-format GUID starts with the tag
    if tag not in (_PCM, _MULAW_TAG, _ALAW_TAG):
        name = _FORMAT_NAMES.get(tag, f"format code 0x{tag:04x}")
        raise _bad(path, f"compressed WAV ({name}) is not supported; {_CONVERT_HINT}")
    if channels < 1 or rate < 1:
        raise _bad(path, f"invalid WAV header ({channels} channels at {rate} Hz)")
    width = block_align // channels if block_align % channels == 0 else 0
    if tag != _PCM and width != 1:
        raise _bad(path, f"invalid G.711 WAV ({bits} bits per sample)")
    if width not in (1, 2, 3, 4) or bits > width * 8:
        raise _bad(path, f"{bits}-bit samples are not supported (use 8, 16, 24 or 32-bit PCM)")
    return WavInfo(tag, channels, rate, width)


def _wav_to_pcm(info: WavInfo, samples: bytes) -> tuple[bytes, int]:
    if info.format_tag == _MULAW_TAG:
        pcm = codec.decode(samples, MULAW_8K)
    elif info.format_tag == _ALAW_TAG:
        pcm = codec.alaw_to_pcm(samples)
    else:
        pcm = codec.to_16bit(samples, info.sample_width)
    return codec.to_mono(pcm, info.channels), info.sample_rate


def _wav_format(info: WavInfo) -> MediaFormat | None:
    return MULAW_8K if info.sample_rate == MULAW_8K.sample_rate else None


def _raw_format(path: Path, raw_format: MediaFormat | None) -> MediaFormat:
    suffix = path.suffix.lower()
    if suffix in RAW_MULAW_SUFFIXES:
        if raw_format is not None and raw_format.encoding != MULAW:
            raise _bad(path, f"a {suffix} file is mu-law, not {raw_format.content_type}")
        return raw_format or MULAW_8K
    if raw_format is not None:
        return raw_format
    if suffix in RAW_SUFFIXES:
        raise _bad(path, "raw audio needs its format stated (e.g. audio/x-l16;rate=16000)")
    raise _bad(
        path,
        f"unknown audio file type {suffix or '(no extension)'}: use a .wav file, raw mu-law "
        "(.ulaw/.mulaw), or raw audio with its format stated",
    )


def _decode_raw(path: Path, data: bytes, raw_fmt: MediaFormat) -> bytes:
    try:
        return codec.decode(data, raw_fmt)
    except codec.CodecError:
        raise _bad(
            path, f"odd length ({len(data)} bytes) for 16-bit {raw_fmt.content_type}"
        ) from None
