"""The live view of `serve` and `tail`: per-stream panels and a scrolling event log (rich).

Rendering works from snapshots (plain dicts of counters, made by the server at the refresh rate)
and from the non-media feed records, never per audio frame. The same renderer serves a local
`serve` and a remote `tail`.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from plivo_stream_cli.feed import Record, describe, printable
from plivo_stream_cli.turns import latency_line

Snapshot = dict[str, Any]
METER_WIDTH = 24
METER_FLOOR_DB = -60.0


class StreamView:
    """Keeps the event log and the previous snapshot (for packet rates); renders both."""

    def __init__(self, title: str, log_lines: int = 12) -> None:
        self.title = title
        self.log: deque[str] = deque(maxlen=log_lines)
        self._previous: dict[str, tuple[float, int]] = {}

    def add(self, record: Record) -> None:
        if record.get("event") == "media":
            return
        stamp = time.strftime("%H:%M:%S", time.localtime(float(record.get("t", time.time()))))
        self.log.append(f"{stamp} {describe(record)}")

    def render(self, snapshots: list[Snapshot]) -> RenderableType:
        panels: list[RenderableType] = [self._panel(s) for s in snapshots]
        if not panels:
            panels.append(Text("waiting for a stream…", style="dim"))
        log = Text("\n".join(self.log) or "no events yet", style="dim" if not self.log else "")
        panels.append(Panel(log, title="events", border_style="blue"))
        return Group(Text(self.title, style="bold"), *panels)

    def _panel(self, snap: Snapshot) -> Panel:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="cyan", no_wrap=True)
        table.add_column()
        rate = self._rate(snap)
        rows = [
            ("call", f"{snap.get('call', '')}  account {snap.get('account', '')}"),
            ("format", f"{snap.get('format', '')}  tracks {','.join(snap.get('tracks', []))}"),
            ("elapsed", f"{snap.get('elapsed', 0):.1f} s  state {snap.get('state', '')}"),
            ("media", f"{snap.get('media', 0)} packets  {rate:.0f}/s"),
            (
                "sequence",
                f"gaps {snap.get('gaps', 0)}  duplicates {snap.get('duplicates', 0)}  "
                f"reordered {snap.get('reorders', 0)}",
            ),
            ("level", meter(float(snap.get("level", -96.0)))),
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
            table.add_row(key, value if isinstance(value, Text) else Text(printable(str(value))))
        style = "red" if snap.get("errors") else "green"
        title = Text(f"stream {printable(str(snap.get('stream', '')))}")  # never markup
        return Panel(table, title=title, border_style=style)

    def _rate(self, snap: Snapshot) -> float:
        key = str(snap.get("stream"))
        now, packets = time.monotonic(), int(snap.get("media", 0))
        before = self._previous.get(key)
        self._previous[key] = (now, packets)
        if before is None or now <= before[0]:
            return 0.0
        return (packets - before[1]) / (now - before[0])


def meter(dbfs: float) -> Text:
    """A level bar from -60 dBFS (empty) to 0 dBFS (full)."""
    fraction = min(1.0, max(0.0, (dbfs - METER_FLOOR_DB) / -METER_FLOOR_DB))
    filled = round(fraction * METER_WIDTH)
    style = "red" if dbfs > -6 else "yellow" if dbfs > -20 else "green"
    bar = Text("█" * filled, style=style)
    bar.append("░" * (METER_WIDTH - filled), style="dim")
    bar.append(f" {dbfs:6.1f} dBFS")
    return bar
