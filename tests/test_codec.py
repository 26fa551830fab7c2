"""Tests for plivo_stream_cli.codec: G.711/L16, resampling, channels, sample widths, framing."""

from __future__ import annotations

import base64
import itertools
import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plivo_stream_cli import codec
from plivo_stream_cli.codec import CodecError, Resampler
from plivo_stream_cli.formats import L16_8K, L16_16K, MULAW_8K, MediaFormat


def sine(freq: float, rate: int, seconds: float, amplitude: int = 12000) -> bytes:
    n = int(rate * seconds)
    return struct.pack(
        f"<{n}h", *(round(amplitude * math.sin(2 * math.pi * freq * i / rate)) for i in range(n))
    )


def samples(pcm: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(pcm) // 2}h", pcm))


# -- G.711 mu-law and L16 ------------------------------------------------------------------------


def test_every_mulaw_code_round_trips() -> None:
    for code in range(256):
        pcm = codec.decode(bytes([code]), MULAW_8K)
        assert len(pcm) == 2
        back = codec.encode(pcm, MULAW_8K)[0]
        # 0x7F is mu-law's "negative zero": it decodes to 0, which encodes as 0xFF (positive zero).
        assert back == (0xFF if code == 0x7F else code), hex(code)


def test_mulaw_decodes_to_known_values() -> None:
    pcm = codec.decode(bytes([0x00, 0x80, 0xFF, 0x7F]), MULAW_8K)
    assert samples(pcm) == [-32124, 32124, 0, 0]


def test_mulaw_frame_sizes() -> None:
    frame = bytes(range(160)).replace(b"\x7f", b"\xff")  # without the code that cannot survive
    assert len(codec.decode(frame, MULAW_8K)) == 320
    assert codec.encode(codec.decode(frame, MULAW_8K), MULAW_8K) == frame


@given(st.binary(max_size=2000).map(lambda b: b[: len(b) // 2 * 2]))
def test_l16_round_trips_byte_exact(payload: bytes) -> None:
    for fmt in (L16_8K, L16_16K):
        pcm = codec.decode(payload, fmt)
        assert pcm == payload
        assert codec.encode(pcm, fmt) == payload


def test_l16_is_little_endian() -> None:
    assert samples(codec.decode(b"\x01\x00\xff\x7f\x00\x80", L16_8K)) == [1, 32767, -32768]


def test_odd_l16_and_odd_pcm_are_rejected() -> None:
    with pytest.raises(CodecError, match="3 bytes"):
        codec.decode(b"\x00\x01\x02", L16_16K)
    with pytest.raises(CodecError):
        codec.encode(b"\x00", MULAW_8K)
    with pytest.raises(CodecError):
        codec.encode(b"\x00", L16_8K)


def test_codec_error_is_a_value_error() -> None:
    assert issubclass(CodecError, ValueError)


def test_alaw_to_pcm() -> None:
    assert samples(codec.alaw_to_pcm(bytes([0xD5, 0x55]))) == [8, -8]


# -- resampling -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "dst"), [(8000, 16000), (16000, 8000), (44100, 8000), (8000, 48000)]
)
def test_resampling_in_chunks_equals_resampling_whole(src: int, dst: int) -> None:
    pcm = sine(440, src, 1.0)
    whole = Resampler(src, dst).process(pcm)
    resampler = Resampler(src, dst)
    # Odd chunk sizes on purpose: some end mid-sample, which must be held for the next chunk.
    sizes = [1, 7, 160, 333, 2, 4096]
    parts, pos, i = [], 0, 0
    while pos < len(pcm):
        parts.append(resampler.process(pcm[pos : pos + sizes[i % len(sizes)]]))
        pos += sizes[i % len(sizes)]
        i += 1
    parts.append(resampler.flush())
    assert b"".join(parts) == whole
    # One second in, one second out, less the interpolation tail after the last input sample.
    assert 0 <= dst - len(whole) // 2 <= dst // src


def test_resampler_identity_passes_chunks_through() -> None:
    pcm = sine(300, 8000, 0.1)
    resampler = Resampler(8000, 8000)
    assert resampler.identity
    assert resampler.process(pcm) is pcm


def test_resampled_sine_keeps_its_frequency_and_level() -> None:
    out = codec.resample(sine(440, 8000, 1.0), 8000, 16000)
    values = samples(out)
    crossings = sum(1 for a, b in itertools.pairwise(values) if a < 0 <= b)
    assert 438 <= crossings <= 442
    assert codec.level_dbfs(out) == pytest.approx(codec.level_dbfs(sine(440, 8000, 1.0)), abs=0.2)


def test_flush_resets_the_stream() -> None:
    resampler = Resampler(8000, 16000)
    first = resampler.process(sine(440, 8000, 0.1))
    resampler.flush()
    assert resampler.process(sine(440, 8000, 0.1)) == first


def test_bad_rates_are_rejected() -> None:
    with pytest.raises(CodecError):
        Resampler(0, 8000)


# -- channels and sample widths -------------------------------------------------------------------


def test_stereo_to_mono_averages() -> None:
    stereo = struct.pack("<6h", 1000, 3000, -200, -400, 32767, 32767)
    assert samples(codec.to_mono(stereo, 2)) == [2000, -300, 32767]


def test_more_channels_to_mono() -> None:
    four = struct.pack("<8h", 100, 200, 300, 400, -4, -4, -4, -4)
    assert samples(codec.to_mono(four, 4)) == [250, -4]


def test_mono_is_unchanged_and_misaligned_is_rejected() -> None:
    assert codec.to_mono(b"\x01\x02", 1) == b"\x01\x02"
    with pytest.raises(CodecError):
        codec.to_mono(b"\x00\x00", 2)


def test_8bit_wav_samples_are_unsigned() -> None:
    assert samples(codec.to_16bit(bytes([128, 255, 0, 192]), 1)) == [0, 32512, -32768, 16384]


def test_24_and_32_bit_to_16() -> None:
    s24 = b"".join(v.to_bytes(3, "little", signed=True) for v in (0, 0x7FFFFF, -0x800000, 0x123456))
    assert samples(codec.to_16bit(s24, 3)) == [0, 32767, -32768, 0x1234]
    s32 = struct.pack("<3i", 0x7FFFFFFF, -0x80000000, 0x00010000)
    assert samples(codec.to_16bit(s32, 4)) == [32767, -32768, 1]
    assert codec.to_16bit(b"\x01\x02", 2) == b"\x01\x02"


def test_bad_widths_are_rejected() -> None:
    with pytest.raises(CodecError, match="40 bits"):
        codec.to_16bit(b"\x00" * 5, 5)
    with pytest.raises(CodecError, match="3-byte"):
        codec.to_16bit(b"\x00" * 4, 3)


def test_interleave() -> None:
    left, right = struct.pack("<2h", 1, 2), struct.pack("<2h", -1, -2)
    assert samples(codec.interleave(left, right)) == [1, -1, 2, -2]
    with pytest.raises(CodecError):
        codec.interleave(left, b"")


# -- chunking and framing -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [MULAW_8K, L16_8K, L16_16K])
@pytest.mark.parametrize("max_b64", [4, 5, 100, 16384, codec.MAX_B64_LIMIT])
def test_chunks_fit_base64_limit_and_whole_samples(fmt: MediaFormat, max_b64: int) -> None:
    wire = bytes(range(256)) * 200  # 51200 bytes, even
    chunks = codec.chunk_payloads(wire, fmt, max_b64)
    assert b"".join(chunks) == wire
    for chunk in chunks:
        assert len(base64.b64encode(chunk)) <= max_b64
        assert len(chunk) % fmt.sample_width == 0
    assert len({len(c) for c in chunks[:-1]}) <= 1


def test_default_chunk_is_as_large_as_allowed() -> None:
    chunks = codec.chunk_payloads(b"\xff" * 40000, MULAW_8K)
    assert len(base64.b64encode(chunks[0])) == 16384
    assert codec.chunk_payloads(b"", MULAW_8K) == []


def test_chunk_limits_are_checked() -> None:
    with pytest.raises(CodecError):
        codec.chunk_payloads(b"\x00\x00", L16_8K, max_b64=3)
    with pytest.raises(CodecError):
        codec.chunk_payloads(b"\x00\x00", L16_8K, max_b64=64 * 1024)
    with pytest.raises(CodecError):
        codec.chunk_payloads(b"\x00", L16_8K)


@pytest.mark.parametrize(("fmt", "size"), [(MULAW_8K, 160), (L16_8K, 320), (L16_16K, 640)])
def test_twenty_ms_frames_and_silence_padding(fmt: MediaFormat, size: int) -> None:
    wire = b"\x01\x02" * (size * 2 + 10)  # 4.x frames
    out = codec.frames(wire, fmt)
    assert [len(f) for f in out] == [size] * 5
    pad = b"\xff" if fmt == MULAW_8K else b"\x00"
    assert out[-1] == wire[size * 4 :] + pad * (size - len(wire[size * 4 :]))
    assert b"".join(out)[: len(wire)] == wire
    assert codec.frames(b"", fmt) == []


def test_frames_of_other_durations() -> None:
    assert [len(f) for f in codec.frames(b"\xff" * 800, MULAW_8K, ms=50)] == [400, 400]
    with pytest.raises(CodecError):
        codec.frames(b"\xff", MULAW_8K, ms=0)


def test_silence() -> None:
    assert codec.silence(MULAW_8K, 3) == b"\xff\xff\xff"
    assert codec.silence(L16_16K, 4) == b"\x00" * 4
    assert codec.decode(codec.silence(MULAW_8K, 160), MULAW_8K) == bytes(320)


# -- levels ---------------------------------------------------------------------------------------


def test_levels() -> None:
    assert codec.level_dbfs(bytes(320)) == codec.SILENCE_DBFS == -96.0
    assert codec.level_dbfs(b"") == codec.SILENCE_DBFS
    assert codec.level_dbfs(sine(1000, 8000, 0.1, amplitude=32767)) == pytest.approx(
        -3.01, abs=0.05
    )
    square = struct.pack("<4h", 32767, -32767, 32767, -32767)
    assert codec.level_dbfs(square) == pytest.approx(0.0, abs=0.01)
    quietest = struct.pack("<2h", 1, -1)
    assert codec.SILENCE_DBFS < codec.level_dbfs(quietest) < -90
    with pytest.raises(CodecError):
        codec.level_dbfs(b"\x00")


def test_audioop_is_imported_without_warnings() -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", "import plivo_stream_cli.codec"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
