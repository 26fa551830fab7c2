"""The live view of `serve` and `tail`: per-stream panels and a scrolling event log (rich).

Rendering works from snapshots (plain dicts of counters, made by the server at the refresh rate)
and from the non-media feed records, never per audio frame. The same renderer serves a local
`serve` and a remote `tail`.

The view fits the terminal it is drawn on, whatever the number of streams: a panel per stream
while the panels fit with a few lines of log under them, else one compact row per stream (and
"… N more" when even the rows do not fit); the event log takes every line left. A line too long
for the width keeps its start and its end (a rejection's reason is at the end) with an ellipsis
in the middle.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from plivo_stream_cli.feed import Record, describe, printable
from plivo_stream_cli.turns import latency_line

Snapshot = dict[str, Any]
METER_WIDTH = 24
METER_FLOOR_DB = -60.0
SILENT_DB = -96.0
LOG_KEPT = 1000  # lines remembered; as many as fit are shown
MIN_LOG_LINES = 3
ELLIPSIS = "…"


class StreamView:
    """Keeps the event log and the previous snapshot (for packet rates); renders both."""

    def __init__(self, title: str, log_lines: int = LOG_KEPT) -> None:
        self.title = title
        self.log: deque[str] = deque(maxlen=log_lines)
        self._previous: dict[str, tuple[float, int]] = {}

    def add(self, record: Record) -> None:
        if record.get("event") == "media":
            return
        stamp = time.strftime("%H:%M:%S", time.localtime(float(record.get("t", time.time()))))
        self.log.append(f"{stamp} {describe(record)}")

    def render(self, snapshots: list[Snapshot]) -> RenderableType:
        """A renderable that lays itself out for the console's width and height when drawn."""
        rates = {str(s.get("stream")): self._rate(s) for s in snapshots}
        return _Screen(self, snapshots, rates)

    def layout(
        self, snapshots: list[Snapshot], rates: dict[str, float], width: int, height: int
    ) -> Iterator[RenderableType]:
        """The title, the streams (panels or compact rows) and the log, in `height` lines."""
        yield Text(fit(self.title, width), style="bold", no_wrap=True)
        left = height - 1
        body: list[RenderableType] = []
        if not snapshots:
            body.append(Text("waiting for a stream…", style="dim"))
            left -= 1
        elif sum(panel_height(s) for s in snapshots) + MIN_LOG_LINES + 2 <= left:
            for snap in snapshots:
                body.append(self._panel(snap, rates.get(str(snap.get("stream")), 0.0), width))
                left -= panel_height(snap)
        else:
            rows = max(0, left - 1 - (MIN_LOG_LINES + 2))  # header line, then the log's minimum
            body.append(compact_table(snapshots, rates, width, rows))
            left -= 1 + min(rows, len(snapshots))
        yield from body
        yield self._log_panel(width, max(MIN_LOG_LINES, left - 2))

    def _log_panel(self, width: int, lines: int) -> Panel:
        inner = max(10, width - 4)
        shown = list(self.log)[-lines:] if lines > 0 else []
        text = Text("\n".join(fit(line, inner) for line in shown) or "no events yet")
        if not shown:
            text.stylize("dim")
        return Panel(text, title="events", border_style="blue", height=lines + 2)

    def _panel(self, snap: Snapshot, rate: float, width: int) -> Panel:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="cyan", no_wrap=True)
        table.add_column(no_wrap=True)
        inner = max(10, width - 4 - 11 - 2)  # borders, the key column, the padding
        bar = max(4, min(METER_WIDTH, (inner - 30) // 2))
        levels = Text("caller ")
        levels.append_text(meter(_level(snap, "level"), bar))
        levels.append("   bot ")
        levels.append_text(meter(_level(snap, "bot_level"), bar))
        rows: list[tuple[str, str | Text]] = [
            ("call", f"{snap.get('call', '')}  account {snap.get('account', '')}"),
            ("format", f"{snap.get('format', '')}  tracks {','.join(snap.get('tracks', []))}"),
            ("elapsed", f"{snap.get('elapsed', 0):.1f} s  state {snap.get('state', '')}"),
            ("media", f"{snap.get('media', 0)} packets  {rate:.0f}/s"),
            (
                "sequence",
                f"gaps {_or_unknown(snap.get('gaps', 0))}  duplicates {snap.get('duplicates', 0)}  "
                f"reordered {snap.get('reorders', 0)}",
            ),
            ("level", levels),
            ("dtmf", snap.get("dtmf") or "-"),
            (
                "checkpoints",
                f"sent {snap.get('checkpoints_sent', 0)}  "
                f"confirmed {snap.get('checkpoints_confirmed', 0)}  "
                f"queued {snap.get('queued', 0.0):.1f} s",
            ),
            ("errors", str(snap.get("errors", 0))),
        ]
        if snap.get("upstream"):
            rows.insert(1, ("bot", snap["upstream"]))
        if snap.get("latency"):
            rows.append(("latency", latency_line(snap["latency"])))
        if snap.get("headers"):
            rows.insert(2, ("headers", " ".join(f"{k}={v}" for k, v in snap["headers"].items())))
        for key, value in rows:
            cell = value if isinstance(value, Text) else Text(fit(printable(str(value)), inner))
            table.add_row(key, cell)
        style = "red" if snap.get("errors") else "green"
        title = Text(f"stream {printable(str(snap.get('stream', '')))}")  # never markup
        return Panel(table, title=title, border_style=style, height=panel_height(snap))

    def _rate(self, snap: Snapshot) -> float:
        key = str(snap.get("stream"))
        now, packets = time.monotonic(), int(snap.get("media", 0))
        before = self._previous.get(key)
        self._previous[key] = (now, packets)
        if before is None or now <= before[0]:
            return 0.0
        return (packets - before[1]) / (now - before[0])


class _Screen:
    """The view as drawn: laid out when rich knows the space (the terminal, or a test console)."""

    def __init__(self, view: StreamView, snapshots: list[Snapshot], rates: dict[str, float]):
        self.view, self.snapshots, self.rates = view, snapshots, rates

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        height = options.height or console.size.height
        yield Group(*self.view.layout(self.snapshots, self.rates, options.max_width, height))


def panel_height(snap: Snapshot) -> int:
    """Lines a stream's panel takes: its rows and two borders."""
    return 9 + (1 if snap.get("headers") else 0) + 2


def compact_table(
    snapshots: list[Snapshot], rates: dict[str, float], width: int, rows: int
) -> RenderableType:
    """One line per stream (as many as `rows` allow, then "… N more"), with a header line."""
    bar = 6 if width >= 110 else 3
    table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold")
    for name, justify in (
        ("stream", "left"),
        ("call", "left"),
        ("state", "left"),
        ("time", "right"),
        ("pkt/s", "right"),
        ("gap/dup/ord", "right"),
        ("caller", "left"),
        ("bot", "left"),
        ("dtmf", "left"),
        ("ckpt", "right"),
        ("queue", "right"),
        ("err", "right"),
    ):
        table.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis")  # type: ignore[arg-type]
    shown = snapshots if len(snapshots) <= rows else snapshots[: max(0, rows - 1)]
    for snap in shown:
        err = int(snap.get("errors", 0))
        table.add_row(
            Text(printable(str(snap.get("stream", "")))[:8]),
            Text(printable(str(snap.get("call", "")))[:8]),
            Text(printable(str(snap.get("state", "")))),
            f"{snap.get('elapsed', 0):.0f}s",
            f"{rates.get(str(snap.get('stream')), 0.0):.0f}",
            f"{snap.get('gaps', 0)}/{snap.get('duplicates', 0)}/{snap.get('reorders', 0)}",
            meter(_level(snap, "level"), bar),
            meter(_level(snap, "bot_level"), bar),
            Text(fit(printable(str(snap.get("dtmf") or "-")), 6, head=0)),
            f"{snap.get('checkpoints_confirmed', 0)}/{snap.get('checkpoints_sent', 0)}",
            f"{snap.get('queued', 0.0):.1f}s",
            Text(str(err), style="red" if err else ""),
        )
    if len(shown) == len(snapshots):
        return table
    more = Text(f"{ELLIPSIS} {len(snapshots) - len(shown)} more streams", style="dim")
    return Group(table, more)


def fit(line: str, width: int, *, head: int | None = None) -> str:
    """`line` in `width` columns: when too long, its start and its end around an ellipsis.

    The start says when and which stream; the end often says why (a rejection's reason), so
    neither is dropped. `head` is how much of the start to keep (default: a third).
    """
    if len(line) <= width:
        return line
    if width <= 1:
        return ELLIPSIS[:width]
    keep = width - 1
    start = min(keep, keep // 3 if head is None else head)
    return line[:start] + ELLIPSIS + line[len(line) - (keep - start) :]


def _level(snap: Snapshot, key: str) -> float:
    try:
        return float(snap.get(key, SILENT_DB))
    except (TypeError, ValueError):
        return SILENT_DB


def meter(dbfs: float, width: int = METER_WIDTH) -> Text:
    """A level bar from -60 dBFS (empty) to 0 dBFS (full), then the level in dBFS."""
    fraction = min(1.0, max(0.0, (dbfs - METER_FLOOR_DB) / -METER_FLOOR_DB))
    filled = round(fraction * width)
    style = "red" if dbfs > -6 else "yellow" if dbfs > -20 else "green"
    bar = Text("█" * filled, style=style)
    bar.append("░" * (width - filled), style="dim")
    bar.append(f" {dbfs:5.0f} dB" if width < METER_WIDTH else f" {dbfs:6.1f} dBFS")
    return bar


def _or_unknown(value: object) -> object:
    return "unknown" if value is None else value  # no sequence numbers: nothing to count
