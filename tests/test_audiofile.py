"""Tests for adapters.audiofile: loading WAV/raw files for playback, refusing the rest."""

from __future__ import annotations

import itertools
import math
import struct
import wave
from pathlib import Path

import pytest

from plivo_stream_cli import codec
from plivo_stream_cli.adapters.audiofile import (
    AudioFileError,
    load_audio,
    load_pcm,
    read_wav,
    write_wav,
)
from plivo_stream_cli.errors import ExitCode, UsageError
from plivo_stream_cli.formats import L16_8K, L16_16K, MULAW_8K, MediaFormat


def sine_values(freq: float, rate: int, seconds: float, peak: float = 0.5) -> list[float]:
    return [peak * math.sin(2 * math.pi * freq * i / rate) for i in range(int(rate * seconds))]


def encode_width(values: list[float], width: int) -> bytes:
    """Samples in [-1, 1) as WAV integer PCM of `width` bytes (8-bit unsigned)."""
    if width == 1:
        return bytes(round(v * 127) + 128 for v in values)
    scale = 2 ** (8 * width - 1) - 1
    return b"".join(round(v * scale).to_bytes(width, "little", signed=True) for v in values)


def make_wav(path: Path, frames: bytes, *, rate: int, width: int, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(frames)
    return path


def tone_wav(path: Path, *, rate: int = 8000, width: int = 2, channels: int = 1) -> Path:
    values = sine_values(440, rate, 0.5)
    mono = encode_width(values, width)
    if channels == 2:  # the tone on the left, silence on the right
        silent = encode_width([0.0] * len(values), width)
        frames = b"".join(
            mono[i : i + width] + silent[i : i + width] for i in range(0, len(mono), width)
        )
    else:
        frames = mono
    return make_wav(path, frames, rate=rate, width=width, channels=channels)


def pcm_samples(pcm: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(pcm) // 2}h", pcm))


def zero_crossings(pcm: bytes) -> int:
    values = pcm_samples(pcm)
    return sum(1 for a, b in itertools.pairwise(values) if a < 0 <= b)


# -- what loads -----------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [1, 2, 3, 4])
@pytest.mark.parametrize("fmt", [MULAW_8K, L16_8K, L16_16K])
def test_integer_pcm_wavs_of_every_width_load(tmp_path: Path, width: int, fmt: MediaFormat) -> None:
    wire = load_audio(tone_wav(tmp_path / f"t{width}.wav", width=width), fmt)
    assert len(wire) == fmt.bytes_per_second // 2 - (fmt.sample_width if fmt == L16_16K else 0)
    pcm = codec.decode(wire, fmt)
    assert 218 <= zero_crossings(pcm) <= 221  # a 440 Hz tone for half a second
    # Half of full scale is -9 dBFS for a sine; 8-bit and mu-law are coarser but close.
    assert codec.level_dbfs(pcm) == pytest.approx(-9.03, abs=0.3)


def test_16bit_mono_at_the_stream_rate_is_bit_exact(tmp_path: Path) -> None:
    frames = encode_width(sine_values(300, 16000, 0.2), 2)
    path = make_wav(tmp_path / "exact.wav", frames, rate=16000, width=2)
    assert load_audio(path, L16_16K) == frames
    assert load_pcm(path) == (frames, 16000)


def test_stereo_44k_wav_is_mixed_down_and_resampled(tmp_path: Path) -> None:
    path = tone_wav(tmp_path / "cd.wav", rate=44100, channels=2)
    wire = load_audio(path, MULAW_8K)
    assert abs(len(wire) - 4000) <= 6
    pcm = codec.decode(wire, MULAW_8K)
    assert 218 <= zero_crossings(pcm) <= 221
    assert codec.level_dbfs(pcm) == pytest.approx(-9.03 - 6.02, abs=0.3)  # mixed with silence


def test_raw_mulaw_file(tmp_path: Path) -> None:
    ulaw = codec.encode(encode_width(sine_values(440, 8000, 0.1), 2), MULAW_8K)
    for suffix in (".ulaw", ".mulaw"):
        path = tmp_path / f"x{suffix}"
        path.write_bytes(ulaw)
        assert load_audio(path, MULAW_8K) == ulaw  # untouched
        pcm16k = codec.decode(load_audio(path, L16_16K), L16_16K)
        assert abs(len(pcm16k) // 2 - 1600) <= 2


def test_raw_mulaw_of_silence_is_not_taken_for_mp3(tmp_path: Path) -> None:
    path = tmp_path / "quiet.ulaw"
    path.write_bytes(b"\xff" * 800)
    assert load_audio(path, L16_8K) == bytes(1600)


def test_raw_l16_with_a_stated_format(tmp_path: Path) -> None:
    pcm = encode_width(sine_values(440, 16000, 0.1), 2)
    path = tmp_path / "x.raw"
    path.write_bytes(pcm)
    assert load_audio(path, L16_16K, raw_format=L16_16K) == pcm
    assert len(load_audio(path, MULAW_8K, raw_format=L16_16K)) == 800
    assert load_pcm(path, raw_format=L16_16K) == (pcm, 16000)


def test_mulaw_wav_loads_without_loss(tmp_path: Path) -> None:
    ulaw = bytes(range(128, 256)) * 10
    path = tmp_path / "g711.wav"
    fmt_chunk = struct.pack("<HHIIHH", 7, 1, 8000, 8000, 1, 8)
    riff = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt_chunk
    riff += b"data" + struct.pack("<I", len(ulaw)) + ulaw
    path.write_bytes(b"RIFF" + struct.pack("<I", len(riff)) + riff)
    assert load_audio(path, MULAW_8K) == ulaw
    assert load_audio(path, L16_8K) == codec.decode(ulaw, MULAW_8K)


def wav_bytes(fmt_chunk: bytes, data: bytes, *, extra: bytes = b"") -> bytes:
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt_chunk)) + fmt_chunk + extra
    body += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def extensible_fmt(tag: int, bits: int, channels: int = 1, rate: int = 8000) -> bytes:
    block = channels * bits // 8
    guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    return (
        struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * block, block, bits, 22, bits, 0)
        + struct.pack("<H", tag)
        + guid_tail
    )


def test_wave_format_extensible_24bit_loads(tmp_path: Path) -> None:
    values = sine_values(440, 8000, 0.25)
    path = tmp_path / "ext.wav"
    # An odd-sized LIST chunk before the data checks that chunk padding is honoured.
    path.write_bytes(
        wav_bytes(
            extensible_fmt(1, 24), encode_width(values, 3), extra=b"LIST\x03\x00\x00\x00abc\x00"
        )
    )
    pcm, rate = load_pcm(path)
    assert rate == 8000
    expected = pcm_samples(encode_width(values, 2))
    # 24 -> 16 bits drops the low byte (truncation), so samples may differ by one step.
    assert len(pcm_samples(pcm)) == len(expected)
    assert max(abs(a - b) for a, b in zip(pcm_samples(pcm), expected, strict=True)) <= 1


def test_a_data_size_past_the_end_keeps_what_is_there(tmp_path: Path) -> None:
    data = encode_width(sine_values(440, 8000, 0.1), 2)
    raw = bytearray(wav_bytes(struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16), data))
    raw[40:44] = struct.pack("<I", 0xFFFFFFFF)  # what a writer that cannot seek leaves
    path = tmp_path / "streamed.wav"
    path.write_bytes(bytes(raw) + b"\x00")  # and a stray half sample
    assert load_pcm(path) == (data, 8000)


def test_write_wav_round_trip(tmp_path: Path) -> None:
    pcm = encode_width(sine_values(1000, 16000, 0.1), 2)
    write_wav(tmp_path / "w.wav", pcm, 16000)
    with wave.open(str(tmp_path / "w.wav")) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 16000)
        assert wav.readframes(wav.getnframes()) == pcm
    info, frames = read_wav(tmp_path / "w.wav")
    assert (info.channels, info.sample_rate, info.sample_width, frames) == (1, 16000, 2, pcm)


# -- what is refused, and the message -------------------------------------------------------------


PCM16_FMT = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.wav", b"", "is empty"),
        ("short.wav", b"RIFF\x00\x00", "truncated WAV header"),
        ("nofmt.wav", b"RIFF\x04\x00\x00\x00WAVE", "truncated WAV header (no fmt chunk)"),
        ("halffmt.wav", b"RIFF\x10\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00", "fmt chunk of 2"),
        (
            "nodata.wav",
            b"RIFF\x1c\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + PCM16_FMT,
            "no data chunk",
        ),
        ("nosamples.wav", wav_bytes(PCM16_FMT, b""), "has no audio"),
        (
            "float.wav",
            wav_bytes(struct.pack("<HHIIHH", 3, 1, 8000, 32000, 4, 32), b"\0" * 8),
            "compressed WAV (32-bit float)",
        ),
        (
            "adpcm.wav",
            wav_bytes(struct.pack("<HHIIHH", 2, 1, 8000, 4000, 256, 4), b"\0" * 8),
            "compressed WAV (Microsoft ADPCM)",
        ),
        ("extfloat.wav", wav_bytes(extensible_fmt(3, 32), b"\0" * 8), "32-bit float"),
        (
            "mp3inwav.wav",
            wav_bytes(struct.pack("<HHIIHH", 0x55, 1, 8000, 1000, 1, 0), b"\0" * 8),
            "compressed WAV (MP3)",
        ),
        (
            "odd.wav",
            wav_bytes(struct.pack("<HHIIHH", 1, 1, 8000, 20000, 5, 40), b"\0" * 10),
            "40-bit samples are not supported",
        ),
        ("rf64.wav", b"RF64" + b"\xff" * 4 + b"WAVE" + b"\0" * 40, "RF64"),
        ("aiff.wav", b"FORM\x00\x00\x00\x10AIFFCOMM", "AIFF is not supported"),
        ("junk.wav", b"hello, this is text", "not a WAV file"),
        ("riff.wav", b"RIFF\x04\x00\x00\x00AVI LIST", "not WAVE audio"),
        ("song.mp3", b"ID3\x04\x00\x00\x00\x00\x00\x00", "MP3 is not supported"),
        ("noid3.bin", b"\xff\xfb\x90\x64" + b"\0" * 100, "MP3 is not supported"),
        ("clip.ogg", b"OggS\x00\x02" + b"\0" * 20, "Ogg is not supported"),
        ("clip.flac", b"fLaC\x00\x00\x00\x22", "FLAC is not supported"),
        ("clip.m4a", b"\x00\x00\x00\x20ftypM4A ", "MP4/M4A is not supported"),
        ("notes.txt", b"some text", "unknown audio file type .txt"),
        ("noext", b"some text", "unknown audio file type (no extension)"),
        ("x.raw", b"\x00\x00", "raw audio needs its format stated"),
    ],
)
def test_unsupported_files_get_one_clear_line(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AudioFileError) as caught:
        load_audio(path, MULAW_8K)
    text = str(caught.value)
    assert text.startswith(f"{path}: ")
    assert message in text
    assert "\n" not in text
    assert caught.value.exit_code == ExitCode.USAGE
    assert isinstance(caught.value, UsageError)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(AudioFileError, match="no such file"):
        load_audio(tmp_path / "nope.wav", MULAW_8K)
    with pytest.raises(AudioFileError, match="is a directory"):
        load_audio(tmp_path, MULAW_8K)


def test_odd_length_raw_l16(tmp_path: Path) -> None:
    path = tmp_path / "odd.raw"
    path.write_bytes(b"\x00\x01\x02")
    with pytest.raises(AudioFileError, match="odd length"):
        load_audio(path, MULAW_8K, raw_format=L16_8K)


def test_mulaw_file_with_a_contradicting_format(tmp_path: Path) -> None:
    path = tmp_path / "x.ulaw"
    path.write_bytes(b"\xff" * 10)
    with pytest.raises(AudioFileError, match=r"is mu-law, not audio/x-l16;rate=8000"):
        load_audio(path, MULAW_8K, raw_format=L16_8K)


def test_a_wav_that_cannot_be_written_is_one_clean_error(tmp_path: Path) -> None:
    """No `Wave_write.__del__` traceback after the OSError (issue 22.2)."""
    import subprocess
    import sys

    code = (
        "from plivo_stream_cli.adapters.audiofile import write_wav\n"
        "try:\n"
        f"    write_wav({str(tmp_path / 'missing' / 'x.wav')!r}, b'\\0\\0', 8000)\n"
        "except OSError as exc:\n"
        "    print('refused', exc.errno)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.startswith("refused"), done
    assert done.stderr == "", done.stderr
