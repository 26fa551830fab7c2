"""The `--json` feed writer: feed records as JSON lines, written in batches.

Used by `serve --json` for stdout and by a `serve --workers` worker for its pipe to the first
process.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

from plivo_stream_cli.feed import Record, json_line

JSON_FLUSH_SECONDS = 0.05


class JsonPrinter:
    """`--json`: one compact JSON line per record on stdout, written in batches.

    A write per line would be a write per media frame per stream (stdout may be unbuffered:
    PYTHONUNBUFFERED); instead lines are gathered and the first one after a write arms a timer
    that writes them all `delay` seconds later, so `jq` still sees each record promptly.
    Outside an event loop every line is written at once. `write` takes each batch instead of
    stdout (a `serve --workers` worker sends its records to the first process with it).
    """

    def __init__(
        self,
        delay: float = JSON_FLUSH_SECONDS,
        max_lines: int = 1000,
        write: Callable[[str], None] | None = None,
    ) -> None:
        self.delay = delay
        self.max_lines = max_lines
        self._write = write or _write_stdout
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    def __call__(self, record: Record) -> None:
        self.line(json_line(record))

    def line(self, text: str) -> None:
        """Add one line already formatted (no newline)."""
        self._lines.append(text)
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(self.delay, self.flush)
        elif len(self._lines) >= self.max_lines:
            self.flush()

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        lines, self._lines = self._lines, []
        self._write("\n".join(lines) + "\n" if lines else "")


def _write_stdout(text: str) -> None:
    if text:
        sys.stdout.write(text)
    sys.stdout.flush()
