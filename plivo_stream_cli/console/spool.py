"""Terminal and pipe output that never blocks the event loop: `serve`'s stdout and stderr.

I/O. A reader that stops (a slow `jq`, Ctrl-S on a terminal) fills the pipe after ~64 KB, and
a plain write then blocks the whole server. A `Spool` takes each write into a bounded buffer
and returns at once; a thread writes the buffer out as fast as the reader takes it. Once the
buffer is full, whole writes are dropped and their lines counted, so streams and recordings
never wait for output. The thread writes with blocking writes on its own (the file's flags
are left alone: O_NONBLOCK would leak to the shell that shares a terminal or pipe).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import TextIO

LIMIT_BYTES = 1024 * 1024  # buffered per stream before writes are dropped
CLOSE_SECONDS = 0.25  # at exit, how long a reader gets to take what is buffered
# One write call at most: a call blocked when `close` gives up may still complete if the
# reader wakes, so `dropped_lines` can overcount by the lines of one such write.
WRITE_BYTES = 64 * 1024


class Spool:
    """A text stream (write/flush/isatty/fileno) whose writes never block.

    `dropped_lines` counts the lines of writes dropped because the buffer was full (or the
    reader went away); `on_drop` is called once, at the first drop, by the write that dropped.
    """

    def __init__(
        self,
        target: TextIO,
        *,
        limit: int = LIMIT_BYTES,
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        self.target = target
        self.limit = limit
        self.on_drop = on_drop
        self.dropped_lines = 0
        self.encoding = getattr(target, "encoding", None) or "utf-8"
        self._fd = _fd_of(target)
        self._lock = threading.Condition()
        self._chunks: deque[bytes] = deque()
        self._size = 0  # bytes buffered, in flight included
        self._inflight = b""  # the batch being written, of which `_taken` bytes are written
        self._taken = 0
        self._closing = False
        self._broken = False
        with contextlib.suppress(Exception):
            target.flush()  # what was written before goes first
        self._thread = threading.Thread(target=self._run, name="pstream-spool", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ the stream API

    def write(self, text: str) -> int:
        data = text.encode(self.encoding, "backslashreplace")
        dropped = False
        with self._lock:
            if self._broken or self._closing or self._size + len(data) > self.limit:
                dropped = not self.dropped_lines
                self.dropped_lines += text.count("\n") or 1
            else:
                self._chunks.append(data)
                self._size += len(data)
                self._lock.notify()
        if dropped and self.on_drop is not None:
            with contextlib.suppress(Exception):
                self.on_drop()
        return len(text)

    def flush(self) -> None:
        """Nothing to wait for: the thread writes as soon as the reader takes data."""

    def isatty(self) -> bool:
        return bool(getattr(self.target, "isatty", lambda: False)())

    def fileno(self) -> int:
        return self.target.fileno()

    @property
    def buffered(self) -> int:
        """Bytes not yet taken by the reader."""
        with self._lock:
            return self._size

    # ------------------------------------------------------------ the writer

    def close(self, timeout: float = CLOSE_SECONDS) -> int:
        """Give the reader up to `timeout` seconds for what is buffered; what it has not taken
        by then is dropped. Returns `dropped_lines`."""
        with self._lock:
            self._closing = True
            self._lock.notify()
        self._thread.join(timeout)
        with self._lock:
            if self._thread.is_alive():  # the reader is stalled: give up on the rest
                left = self._inflight.count(b"\n", self._taken)
                left += sum(chunk.count(b"\n") for chunk in self._chunks)
                self.dropped_lines += left
                self._chunks.clear()
                self._broken = True
            return self.dropped_lines

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._chunks and not self._closing:
                    self._lock.wait()
                if not self._chunks:
                    return
                batch = b"".join(self._chunks)
                self._chunks.clear()
                self._inflight, self._taken = batch, 0
            try:
                self._write(batch)
            except (OSError, ValueError):  # the reader went away (EPIPE) or the file closed
                with self._lock:
                    self.dropped_lines += self._inflight.count(b"\n", self._taken) or 1
                    self.dropped_lines += sum(chunk.count(b"\n") for chunk in self._chunks)
                    self._broken = True
                    self._chunks.clear()
                    self._size = 0
                return
            with self._lock:
                self._inflight, self._taken = b"", 0

    def _write(self, batch: bytes) -> None:
        if self._fd is None:  # no file descriptor (a test's captured stream)
            self.target.write(batch.decode(self.encoding, "replace"))
            self.target.flush()
            self._taken_up(len(batch))
            return
        view = memoryview(batch)
        while view and not self._broken:  # once `close` gave up, what is left stays dropped
            written = os.write(self._fd, view[:WRITE_BYTES])
            view = view[written:]
            self._taken_up(written)

    def _taken_up(self, written: int) -> None:
        with self._lock:
            self._taken += written
            self._size -= written


def _fd_of(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return None


class StdioSpools:
    """`sys.stdout` and `sys.stderr` replaced by `Spool`s (rich consoles, `print` and the JSON
    feed all write through them) until `end_stdout` / `end` put the real ones back.

    `on_drop(name)` is called once per stream ("stdout", "stderr") at its first dropped line.
    """

    def __init__(self, on_drop: Callable[[str], None] | None = None) -> None:
        self._targets = (sys.stdout, sys.stderr)

        def notify(name: str) -> Callable[[], None] | None:
            return None if on_drop is None else lambda: on_drop(name)

        self.out = Spool(sys.stdout, on_drop=notify("stdout"))
        self.err = Spool(sys.stderr, on_drop=notify("stderr"))
        self._out_open = self._err_open = True
        sys.stdout, sys.stderr = self.out, self.err

    @property
    def dropped(self) -> int:
        """Lines dropped so far, both streams."""
        return self.out.dropped_lines + self.err.dropped_lines

    def end_stdout(self) -> int:
        """Give stdout's reader `CLOSE_SECONDS` for the rest, put stdout back; lines dropped."""
        if self._out_open:
            self._out_open = False
            self.out.close()
            sys.stdout = self._targets[0]
        return self.out.dropped_lines

    def end(self) -> None:
        """Both streams back (stderr's reader gets `CLOSE_SECONDS` too)."""
        self.end_stdout()
        if self._err_open:
            self._err_open = False
            self.err.close()
            sys.stderr = self._targets[1]
