"""Recording streams: crash-safe WAV files per track, a stereo call WAV, and a JSONL capture.

I/O, kept off the hot path: audio is batched and written at most every half second of audio (or
second of wall time), and each write is followed by rewriting the WAV header's sizes, so a file
is always a valid WAV; a crash or SIGKILL loses only the audio not yet written: under 0.5 s in a
track file, under 0.7 s in the stereo call file (mixed in 0.2 s batches). The JSONL capture
is written line by line, or with `capture_flush` in batches written once they are that many
seconds old. A `clocked` recording (as `serve` makes) is written when its owner flushes it,
on a clock of its own (serve's: every half second, so a crash loses about as much). Write
errors (a full disk) stop that one file with a warning instead of raising into the server loop.

Names built from `callId`/`streamId` come from the network: `safe_name` reduces them to
`[A-Za-z0-9_-]`, and files are created exclusively, so a recording can neither leave its
directory nor replace an existing file.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import os
import re
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from plivo_stream_cli import codec
from plivo_stream_cli.errors import UsageError
from plivo_stream_cli.formats import MediaFormat

__all__ = [
    "CallRecorder",
    "CaptureError",
    "CaptureLine",
    "CaptureWriter",
    "RecordedFile",
    "WavRecorder",
    "read_capture",
    "safe_name",
]

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")  # the canonical 44-byte PCM WAV header
_MAX_DATA = 0xFFFFFFFF - _HEADER.size  # RIFF sizes are 32-bit
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"{dev}{n}" for dev in ("COM", "LPT") for n in range(1, 10)}
)
_pwrite = getattr(os, "pwrite", None)
MAX_CAPTURE_HELD = 64 * 1024  # characters of capture lines held before they are written
_LINE_OVERHEAD = 42  # characters a capture line adds to its message (time and direction)
# A clocked recording (`CallRecorder(clocked=True)`) is written when its owner flushes it; this
# much audio per track is held at most meanwhile, should the clock be late.
CLOCKED_HOLD_SECONDS = 2.0
_CALL_BATCH_SECONDS = 0.2  # caller audio gathered before mixing into call.wav
# The call's clock is the caller's audio, but wall time when that falls behind by more than
# CALL_LAG_SECONDS (only played audio arrives): the caller is taken as silent, so the stereo
# buffer drains on time, not on the caller's next frame. Played audio is kept at most
# MAX_AHEAD_SECONDS (Plivo's whole queue) ahead of the clock: a flood moves the clock on.
CALL_LAG_SECONDS = 1.0
MAX_AHEAD_SECONDS = 60.0


def safe_name(value: str, *, max_len: int = 64) -> str:
    """A file-name stem made from an untrusted id: only `[A-Za-z0-9_-]`, never empty or hidden.

    Long values are cut and given a hash of the original so distinct ids stay distinct.
    """
    name = _UNSAFE.sub("_", value).strip("_-")
    if len(name) > max_len:
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        name = f"{name[: max_len - 9]}-{digest}"
    if not name:
        return "unknown"
    return f"_{name}" if name.upper() in _RESERVED else name


def private(path: str, flags: int) -> int:
    """Open a recording readable by its owner only (0600): calls are personal data."""
    return os.open(path, flags, 0o600)


@dataclass(frozen=True)
class RecordedFile:
    """One file a recording produced: its path, the audio (or capture) duration, any problem."""

    path: Path
    duration: float
    kind: str  # inbound | outbound | call | capture
    warning: str | None = None


class WavRecorder:
    """A 16-bit PCM WAV file written as audio arrives, valid at every moment.

    Audio is buffered until half a second of it (`flush_seconds`) or a second of wall time
    (`max_delay`) has gathered, then written with the header's sizes updated; with `max_delay`
    None, only `flush_seconds` of audio or a `flush()` writes it (the owner flushes on a
    clock). An `OSError` while writing stops the file: `.warning` says why (and is passed to
    `on_warning`; logged by default) and later writes are ignored.
    Opening raises `OSError` (`FileExistsError` with `exclusive=True` if the file exists).
    """

    def __init__(
        self,
        path: str | Path,
        sample_rate: int,
        *,
        channels: int = 1,
        exclusive: bool = False,
        flush_seconds: float = 0.5,
        max_delay: float | None = 1.0,
        on_warning: Callable[[str], None] | None = None,
        wire: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.path = Path(path)
        self._on_warning = on_warning or _log_warning
        self.sample_rate = sample_rate
        self.channels = channels
        self.warning: str | None = None
        self._block = 2 * channels
        self._threshold = max(1, int(flush_seconds * sample_rate)) * self._block
        self._max_delay = max_delay
        # Chunks, joined when written: appending to one growing buffer reallocates it again
        # and again, and with hundreds of streams that is a copy per frame.
        self._pending: list[bytes] = []
        self._pending_bytes = 0  # of PCM, counting the wire chunks as the PCM they become
        self._wire = wire  # wire audio (say mu-law) -> PCM, for `write_wire`
        self._wire_chunks: list[bytes] = []
        self._data_bytes = 0  # audio bytes on disk and counted in the header
        self._frames = 0
        self._closed = False
        mode = "xb" if exclusive else "wb"
        self._file: IO[bytes] | None = open(  # noqa: SIM115
            self.path, mode, buffering=0, opener=private
        )
        try:
            self._write_all(self._header())
        except OSError:
            self._file.close()
            raise
        self._last_sync = time.monotonic()

    @property
    def frames_written(self) -> int:
        """Frames accepted so far (all of them on disk once the file is flushed or closed)."""
        return self._frames

    @property
    def duration(self) -> float:
        """Seconds of audio accepted so far."""
        return self._frames / self.sample_rate

    def write(self, pcm: bytes) -> None:
        """Append 16-bit PCM frames (interleaved if stereo); cheap, writes happen in batches."""
        if self._file is None:
            self._refuse()
            return
        if len(pcm) % self._block:
            raise codec.CodecError(
                f"{self.path}: {len(pcm)} bytes is not a whole number of {self._block}-byte frames"
            )
        if self._wire_chunks:  # in order: the wire audio before this PCM first
            self._settle()
        self._pending.append(pcm if type(pcm) is bytes else bytes(pcm))  # kept: not a view
        self._add(len(pcm), len(pcm) // self._block)

    def write_wire(self, data: bytes) -> None:
        """Append mono wire audio (one byte a sample), turned into PCM by `wire` when written.

        For a stream's inbound track: a frame costs a list append here, and a batch is decoded
        in one call, not frame by frame.
        """
        if self._wire is None or self.channels != 1:
            raise ValueError(f"{self.path}: no wire format to decode (PCM only)")
        if self._file is None:
            self._refuse()
            return
        self._wire_chunks.append(data)
        self._add(2 * len(data), len(data))

    def _add(self, pcm_bytes: int, frames: int) -> None:
        self._frames += frames
        self._pending_bytes += pcm_bytes
        if self._pending_bytes >= self._threshold or (
            self._max_delay is not None and time.monotonic() - self._last_sync >= self._max_delay
        ):
            self.flush()

    def _refuse(self) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: write after close")
        # else: stopped after a write error; the warning says so

    def _settle(self) -> None:
        """Decode the wire chunks gathered so far into the PCM to write."""
        assert self._wire is not None
        chunks, self._wire_chunks = self._wire_chunks, []
        self._pending.append(self._wire(b"".join(chunks)))

    def flush(self) -> None:
        """Write buffered audio and the updated header now."""
        self._last_sync = time.monotonic()
        if self._file is None or not self._pending_bytes:
            return
        if self._data_bytes + self._pending_bytes > _MAX_DATA:
            self._stop("the WAV format's 4 GB limit was reached")
            return
        if self._wire_chunks:
            self._settle()
        # Take the buffer: after a failed write it may still be exported to a traceback.
        pending = b"".join(self._pending)
        self._pending, self._pending_bytes = [], 0
        try:
            self._write_all(pending)
            self._data_bytes += len(pending)
            self._write_header()
        except OSError as exc:
            self._stop(exc.strerror or str(exc))

    def close(self) -> None:
        """Write what is buffered, finish the header and close the file (idempotent)."""
        if self._file is not None:
            self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None
        self._closed = True

    def __enter__(self) -> WavRecorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _header(self) -> bytes:
        rate, block = self.sample_rate, self._block
        return _HEADER.pack(
            b"RIFF", 36 + self._data_bytes, b"WAVE", b"fmt ", 16, 1, self.channels,
            rate, rate * block, block, 16, b"data", self._data_bytes,
        )  # fmt: skip

    def _write_header(self) -> None:
        assert self._file is not None
        if _pwrite is not None:  # one syscall, and the append position is untouched
            _pwrite(self._file.fileno(), self._header(), 0)
            return
        self._file.seek(0)
        self._file.write(self._header())
        self._file.seek(0, os.SEEK_END)

    def _write_all(self, data: bytes) -> None:
        assert self._file is not None
        _write_all(self._file, data)

    def _stop(self, reason: str) -> None:
        """Give up on this file after a write error, keeping the header of what is on disk."""
        self.warning = f"{self.path}: recording stopped: {reason}"
        self._on_warning(self.warning)
        self._frames = self._data_bytes // self._block
        self._pending, self._pending_bytes, self._wire_chunks = [], 0, []
        if self._file is not None:
            # If this fails too, the header on disk still describes an earlier, complete state.
            with contextlib.suppress(OSError):
                self._write_header()
            # A batch cut short by a full disk leaves bytes past what the header counts: drop
            # them, so the file is exactly the WAV it claims to be (truncating needs no space).
            with contextlib.suppress(OSError):
                self._file.truncate(_HEADER.size + self._data_bytes)
            self._file.close()
            self._file = None


class CaptureWriter:
    """A JSONL capture file: its lines held in memory and written together, in order.

    With `flush_seconds` 0 each line is written at once; otherwise the lines held are written
    with the first one added `flush_seconds` after the last write, or once they reach
    `MAX_CAPTURE_HELD` characters; with `flush_seconds` None, only at that size or by `flush()`
    (the owner flushes on a clock). Held as str and encoded a batch at a time (a lone
    surrogate becomes a JSON escape, not a failed write): per line that is a list append. A
    message known to be JSON (`write_json`, once per frame) is held as it came, with its time,
    and its line is formatted when the batch is written.
    Opening raises `OSError` (`FileExistsError`: the file is created exclusively); so do
    `write`, `flush` and `close` when the disk refuses the lines.
    """

    def __init__(self, path: Path, flush_seconds: float | None = 0.0) -> None:
        self.path = path
        self._file: IO[bytes] = open(path, "xb", buffering=0, opener=private)  # noqa: SIM115
        # a line, or (time, direction, JSON text) for a line formatted when written
        self._lines: list[str | tuple[float, str, str]] = []
        self._held = 0  # characters in `_lines` (about, for the JSON texts)
        self._flush_seconds = flush_seconds
        self._timed = flush_seconds is not None
        self._due = time.monotonic() + (flush_seconds or 0.0)

    def write(self, line: str) -> None:
        """Add one line (with its newline)."""
        self._lines.append(line)
        self._held += len(line)
        if self._held >= MAX_CAPTURE_HELD or (self._timed and time.monotonic() >= self._due):
            self.flush()

    def write_json(self, t: float, direction: str, text: str) -> None:
        """Add the line of a message received or sent at `t` whose `text` is known to be JSON."""
        self._lines.append((t, direction, text))
        self._held += len(text) + _LINE_OVERHEAD
        if self._held >= MAX_CAPTURE_HELD or (self._timed and time.monotonic() >= self._due):
            self.flush()

    def flush(self) -> None:
        """Write the lines held now."""
        if self._flush_seconds is not None:
            self._due = time.monotonic() + self._flush_seconds
        if not self._lines:
            return
        lines, self._lines, self._held = self._lines, [], 0
        parts: list[str] = []
        add = parts.append
        for line in lines:
            if isinstance(line, str):
                add(line)
                continue
            t, direction, text = line  # as `_capture_line` writes it, without copying `text`
            if "\n" in text or "\r" in text:
                add(_capture_line(t, direction, text, is_json=True))
                continue
            add(f'{{"t":{t:.6f},"dir":"{direction}","msg":')
            add(text.strip())
            add("}\n")
        _write_all(self._file, "".join(parts).encode("utf-8", "backslashreplace"))

    def close(self) -> None:
        """Write what is held and close the file (idempotent)."""
        try:
            if not self._file.closed:
                self.flush()
        finally:
            self._file.close()


class CallRecorder:
    """Everything recorded for one stream: `<name>.inbound.wav`, `<name>.outbound.wav`,
    optionally `<name>.call.wav` (stereo: caller left, played audio right) and `<name>.jsonl`.

    `<name>` is `safe_name(call_id)_safe_name(stream_id)`, with `-1`, `-2`... added if any of
    those files exists. Audio is 16-bit PCM at the stream's rate (`decode` output).
    The call timeline is the caller's audio: played audio starts when it is sent, or when the
    audio queued before it ends, as Plivo plays it; silence fills the gaps. `outbound.wav` holds
    all audio sent for playback back to back, including any later cut short by `clear_outbound`.

    `clocked`: the owner calls `flush()` on a clock (serve: every stream's recording at once,
    every `livestream.RECORDING_FLUSH_SECONDS`), and nothing is written in between unless
    `CLOCKED_HOLD_SECONDS` of audio or `MAX_CAPTURE_HELD` of capture gathered. Writes done
    together are cheaper than the same writes scattered between frames, and a quiet stream's
    last audio reaches the disk on time, not with its next frame.
    """

    def __init__(
        self,
        directory: str | Path,
        call_id: str,
        stream_id: str,
        fmt: MediaFormat,
        *,
        stereo: bool = False,
        capture: bool = True,
        capture_flush: float = 0.0,
        clocked: bool = False,
        on_warning: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = Path(directory)
        self._clocked = clocked
        self._clock = clock
        self._clock_t0: float | None = None  # when the call's timeline began (first audio)
        self._capture_flush = capture_flush
        self._on_warning = on_warning or _log_warning
        self.fmt = fmt
        self.stereo = stereo
        self._kinds = ("inbound", "outbound") + (("call",) if stereo else ())
        self._wavs: dict[str, WavRecorder] = {}
        self._capture: CaptureWriter | None = None
        self._capture_path: Path | None = None
        self._capture_warning: str | None = None
        self._first_t: float | None = None
        self._last_t: float | None = None
        # Stereo timeline, in samples: the caller's audio is the call's clock (`_in_pos`).
        # `_left`/`_right` hold both channels from `_call_pos` (what call.wav has) on.
        self._left = bytearray()
        self._right = bytearray()
        self._call_pos = 0
        self._in_pos = 0
        self._out_end = 0  # where the played audio queued so far ends
        self._emit_bytes = 2 * int(fmt.sample_rate * _CALL_BATCH_SECONDS)
        self._max_ahead = 2 * int(fmt.sample_rate * MAX_AHEAD_SECONDS)
        self._result: list[RecordedFile] | None = None
        self._batch_decode = not stereo and fmt.sample_width == 1  # see `inbound_wire`
        self._create_files(f"{safe_name(call_id)}_{safe_name(stream_id)}", capture)
        self._inbound_wav = self._wavs["inbound"]  # written once per frame

    @property
    def paths(self) -> list[Path]:
        """Every file this recorder writes."""
        paths = [w.path for w in self._wavs.values()]
        return paths + ([self._capture_path] if self._capture_path else [])

    @property
    def warnings(self) -> list[str]:
        """Problems met so far (e.g. a file stopped because the disk is full)."""
        found = [w.warning for w in self._wavs.values() if w.warning]
        return found + ([self._capture_warning] if self._capture_warning else [])

    @property
    def warning(self) -> str | None:
        """The first problem met, if any."""
        found = self.warnings
        return found[0] if found else None

    def inbound(self, pcm: bytes, track: str = "inbound") -> None:
        """Audio from a `media` event; an `outbound` track (audioTrack=both) is played audio."""
        if track == "outbound":
            self.outbound(pcm)
            return
        self._inbound_wav.write(pcm)
        if self.stereo:
            if self._clock_t0 is None:
                self._clock_t0 = self._clock()
            self._left += pcm
            self._in_pos += len(pcm) // 2
            if len(self._left) >= self._emit_bytes:
                self._emit_call()

    def inbound_wire(self, payload: bytes, track: str = "inbound") -> None:
        """`inbound`, given the audio as the media event carried it (say mu-law), not decoded.

        What serve calls once per frame: a mono recording decodes a batch at a time.
        """
        if track == "outbound" or not self._batch_decode:
            self.inbound(codec.decode(payload, self.fmt), track)
            return
        self._inbound_wav.write_wire(payload)

    def _decode(self, payload: bytes) -> bytes:
        return codec.decode(payload, self.fmt)

    def outbound(self, pcm: bytes) -> None:
        """Audio sent to be played to the caller (a playAudio payload, decoded)."""
        self._wavs["outbound"].write(pcm)
        if self.stereo:
            self._keep_time(CALL_LAG_SECONDS)
            start = max(self._out_end, self._in_pos)
            gap = 2 * (start - self._call_pos) - len(self._right)
            if gap > 0:
                self._right += bytes(gap)
            self._right += pcm
            self._out_end = start + len(pcm) // 2
            ahead = len(self._right) - len(self._left) - self._max_ahead
            if ahead > 0:  # more played audio than Plivo could queue: the clock moves on
                self._silence(ahead // 2)

    @property
    def buffered_bytes(self) -> int:
        """Audio held in memory for call.wav (bounded, see MAX_AHEAD_SECONDS)."""
        return len(self._left) + len(self._right)

    def _keep_time(self, lag: float) -> None:
        """Take the caller as silent up to `lag` seconds before now (wall time)."""
        now = self._clock()
        if self._clock_t0 is None:
            self._clock_t0 = now
        due = round((now - self._clock_t0 - lag) * self.fmt.sample_rate)
        if due > self._in_pos:
            self._silence(due - self._in_pos)

    def _silence(self, samples: int) -> None:
        """`samples` of caller silence on the call's timeline."""
        self._left += bytes(2 * samples)
        self._in_pos += samples
        if len(self._left) >= self._emit_bytes:
            self._emit_call()

    def clear_outbound(self) -> None:
        """A clearAudio was sent: played audio queued beyond this moment is dropped."""
        del self._right[2 * (self._in_pos - self._call_pos) :]
        self._out_end = self._in_pos

    def capture(
        self,
        direction: str,
        raw: str | bytes | dict[str, Any],
        t: float | None = None,
        *,
        is_json: bool = False,
    ) -> None:
        """Append one event to the JSONL capture: `direction` is "in" (received) or "out" (sent).

        `raw` is the frame's text, a parsed message, or a binary frame; `t` defaults to now.
        `is_json` says the text is known to be JSON already (the server has parsed it), which
        spares parsing it again. With `capture_flush`, lines are written in batches, at the
        latest with the first line captured `capture_flush` seconds after the last write.
        """
        if direction not in ("in", "out"):
            raise ValueError(f"capture direction must be 'in' or 'out', got {direction!r}")
        capture = self._capture
        if capture is None:
            return
        t = time.time() if t is None else t
        try:
            if is_json and isinstance(raw, str):
                capture.write_json(t, direction, raw)  # per frame: its line made when written
            else:
                capture.write(_capture_line(t, direction, raw, is_json))
        except OSError as exc:
            self._stop_capture(exc.strerror or str(exc))
            return
        if self._first_t is None:
            self._first_t = t
        self._last_t = t

    def flush(self) -> None:
        """Put everything received so far on disk now (e.g. from a timer while a call is quiet)."""
        if self._result is not None:
            return
        if self.stereo:
            self._keep_time(CALL_LAG_SECONDS)
            self._emit_call()
        for wav in self._wavs.values():
            wav.flush()
        if self._capture is not None:
            try:
                self._capture.flush()
            except OSError as exc:
                self._stop_capture(exc.strerror or str(exc))

    def close(self) -> list[RecordedFile]:
        """Finish every file (idempotent); returns what was recorded."""
        if self._result is not None:
            return self._result
        result = []
        if self.stereo:
            if self._clock_t0 is not None:
                self._keep_time(CALL_LAG_SECONDS)
            self._emit_call()
        for kind, wav in self._wavs.items():
            wav.close()
            result.append(RecordedFile(wav.path, wav.duration, kind, wav.warning))
        if self._capture_path is not None:
            if self._capture is not None:
                try:
                    self._capture.close()
                except OSError as exc:
                    self._stop_capture(exc.strerror or str(exc))
            span = (self._last_t or 0.0) - (self._first_t or 0.0)
            result.append(RecordedFile(self._capture_path, span, "capture", self._capture_warning))
        self._capture = None
        self._result = result
        return result

    def __enter__(self) -> CallRecorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _emit_call(self) -> None:
        """Write the caller audio gathered so far to call.wav beside the played audio."""
        n = len(self._left)
        if not n:
            return
        right = bytes(self._right[:n])
        del self._right[:n]
        if len(right) < n:
            right += bytes(n - len(right))
        left = bytes(self._left)
        self._left.clear()
        self._call_pos += n // 2
        self._wavs["call"].write(codec.interleave(left, right))

    def _create_files(self, stem: str, capture: bool) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._unwritable(exc) from None
        for attempt in range(1000):
            name = stem if attempt == 0 else f"{stem}-{attempt}"
            try:
                self._open_set(name, capture)
                return
            except FileExistsError:
                self._discard()
            except OSError as exc:
                self._discard()
                raise self._unwritable(exc) from None
        raise UsageError(f"cannot record to {self.directory}: too many recordings named {stem}")

    def _open_set(self, name: str, capture: bool) -> None:
        for kind in self._kinds:
            path = self._inside(f"{name}.{kind}.wav")
            channels = 2 if kind == "call" else 1
            self._wavs[kind] = WavRecorder(
                path,
                self.fmt.sample_rate,
                channels=channels,
                exclusive=True,
                flush_seconds=CLOCKED_HOLD_SECONDS if self._clocked else 0.5,
                max_delay=None if self._clocked else 1.0,
                on_warning=self._on_warning,
                wire=self._decode if kind == "inbound" and self._batch_decode else None,
            )
        if capture:
            path = self._inside(f"{name}.jsonl")
            self._capture = CaptureWriter(path, None if self._clocked else self._capture_flush)
            self._capture_path = path

    def _inside(self, filename: str) -> Path:
        path = self.directory / filename
        if path.parent != self.directory or "/" in filename or "\\" in filename:
            raise UsageError(f"refusing to record outside {self.directory}: {filename!r}")
        return path

    def _discard(self) -> None:
        """Remove the files of a half-created set (they are ours: created exclusively)."""
        for wav in self._wavs.values():
            wav.close()
            wav.path.unlink(missing_ok=True)
        self._wavs.clear()
        if self._capture is not None and self._capture_path is not None:
            self._capture.close()
            self._capture_path.unlink(missing_ok=True)
        self._capture, self._capture_path = None, None

    def _unwritable(self, exc: OSError) -> UsageError:
        reason = exc.strerror or str(exc)
        return UsageError(f"cannot record to {self.directory}: {reason}")

    def _stop_capture(self, reason: str) -> None:
        self._capture_warning = f"{self._capture_path}: capture stopped: {reason}"
        self._on_warning(self._capture_warning)
        if self._capture is not None:
            with contextlib.suppress(OSError):  # the lines written before the error are intact
                self._capture.close()
            self._capture = None


def _write_all(file: IO[bytes], data: bytes) -> None:
    """Write all of `data` to an unbuffered file (a short write is not an error; none is)."""
    view = memoryview(data)
    while view:
        written = file.write(view)
        if not written:
            raise OSError(28, "no space left on device")
        view = view[written:]


def _log_warning(message: str) -> None:
    log.warning("%s", message)


def _capture_line(
    t: float, direction: str, raw: str | bytes | dict[str, Any], is_json: bool = False
) -> str:
    head = f'{{"t":{t:.6f},"dir":"{direction}",'
    if is_json and isinstance(raw, str) and "\n" not in raw and "\r" not in raw:
        return f'{head}"msg":{raw.strip()}}}\n'
    if isinstance(raw, dict):
        return f'{head}"msg":{json.dumps(raw, separators=(",", ":"), ensure_ascii=False)}}}\n'
    if isinstance(raw, (bytes, bytearray, memoryview)):
        return f'{head}"binary":"{base64.b64encode(raw).decode("ascii")}"}}\n'
    try:
        json.loads(raw)
        if "\n" in raw or "\r" in raw:  # valid JSON spread over lines: re-serialize on one line
            raw = json.dumps(json.loads(raw), separators=(",", ":"), ensure_ascii=False)
    except (ValueError, RecursionError):  # not JSON, or nested too deep to handle as JSON
        return f'{head}"text":{json.dumps(raw, ensure_ascii=False)}}}\n'
    return f'{head}"msg":{raw.strip()}}}\n'


class CaptureError(UsageError):
    """A capture file that cannot be read or is not a pstream JSONL capture."""


@dataclass(frozen=True)
class CaptureLine:
    """One captured event: receive/send time, direction, and the message as it travelled.

    `msg` is the parsed JSON message; a frame that was not JSON is kept in `text` (and `msg` is
    None), a binary frame in `data`.
    """

    t: float
    direction: str  # "in" (received by the recorder's side) | "out" (sent)
    msg: Any
    line: int
    text: str | None = None
    data: bytes | None = None


def read_capture(path: str | Path) -> Iterator[CaptureLine]:
    """Read a JSONL capture line by line; a torn last line (from a crash) is skipped."""
    path = Path(path)
    try:
        handle = path.open(encoding="utf-8", errors="surrogateescape", newline="\n")
    except OSError as exc:
        raise CaptureError(f"{path}: cannot read capture: {exc.strerror or exc}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield _parse_capture_line(line, number)
            except (ValueError, KeyError, TypeError, binascii.Error):
                if not line.endswith("\n"):
                    return  # the writer died mid-line
                raise CaptureError(f"{path}:{number}: not a pstream capture line") from None


def _parse_capture_line(line: str, number: int) -> CaptureLine:
    obj = json.loads(line)
    direction = obj["dir"]
    if direction not in ("in", "out"):
        raise ValueError(direction)
    data = base64.b64decode(obj["binary"], validate=True) if "binary" in obj else None
    if "msg" not in obj and "text" not in obj and data is None:
        raise KeyError("msg")
    return CaptureLine(
        t=float(obj["t"]),
        direction=direction,
        msg=obj.get("msg"),
        line=number,
        text=obj.get("text"),
        data=data,
    )
