"""The live view fits the terminal at any number of streams (issue 22 item 9): rendered by rich
on a 120x40 console, as `serve` draws it, for 1, 4 and 40 streams."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from plivo_stream_cli.console.view import StreamView, compact_table, fit, panel_height
from plivo_stream_cli.feed import note_record

WIDTH, HEIGHT = 120, 40
REASON_END = "END-OF-REASON"


def snapshot(number: int, **fields: Any) -> dict[str, Any]:
    snap = {
        "stream": f"{number:08d}-1ece-4fdb-860d-51e436a11f86",
        "call": f"c{number:07d}-ece1-4fdb-860d-51e436a11f86",
        "account": "MA0000000000000000XX",
        "format": "audio/x-mulaw;rate=8000",
        "tracks": ["inbound"],
        "headers": {},
        "state": "streaming",
        "elapsed": 3.2,
        "media": 160,
        "gaps": 0,
        "duplicates": 0,
        "reorders": 0,
        "level": -23.4,
        "bot_level": -9.5,
        "dtmf": "5",
        "checkpoints_sent": 1,
        "checkpoints_confirmed": 1,
        "queued": 0.4,
        "errors": 0,
    }
    return {**snap, **fields}


def view_with_log(lines: int) -> StreamView:
    view = StreamView("pstream serve  ws://127.0.0.1:8080/stream")
    for n in range(lines):
        reason = f"signature invalid: it matches wss://x.example.com/s?{'q' * 90} {REASON_END}"
        view.add(note_record("rejected", t=1_700_000_000.0 + n, stream=f"conn-{n}", reason=reason))
    return view


def draw(view: StreamView, snapshots: list[dict[str, Any]]) -> list[str]:
    console = Console(
        file=io.StringIO(), width=WIDTH, height=HEIGHT, record=True, color_system=None
    )
    console.print(view.render(snapshots))
    return console.export_text().splitlines()


@pytest.mark.parametrize("streams", [0, 1, 2, 4, 7, 40, 300])
def test_the_view_never_overflows_the_terminal(streams: int) -> None:
    lines = draw(view_with_log(200), [snapshot(n) for n in range(streams)])
    assert len(lines) == HEIGHT, len(lines)
    assert max(len(line) for line in lines) <= WIDTH
    assert lines[-1].startswith("╰") and any(" events " in line for line in lines)


def test_one_stream_gets_a_panel_and_the_log_takes_every_line_left() -> None:
    view = view_with_log(200)
    lines = draw(view, [snapshot(1)])
    assert sum("stream 00000001-" in line for line in lines) == 1  # the panel's title
    log = [line for line in lines if "conn-" in line]
    assert len(log) == HEIGHT - 1 - panel_height(snapshot(1)) - 2
    assert "conn-199" in log[-1]  # the newest at the bottom


def test_a_long_line_keeps_its_start_and_its_reason() -> None:
    lines = draw(view_with_log(3), [snapshot(1)])
    log = [line for line in lines if "conn-" in line]
    assert len(log) == 3
    for line in log:
        assert "…" in line and REASON_END in line and "rejected" in line


def test_four_streams_on_120x40_are_compact_rows_with_the_log_below() -> None:
    lines = draw(view_with_log(200), [snapshot(n) for n in range(4)])
    rows = [line for line in lines if line.lstrip().startswith("0000000")]
    assert len(rows) == 4
    assert all("-23 dB" in row and "-10 dB" in row for row in rows)  # caller and bot levels
    log = [line for line in lines if "conn-" in line]
    assert len(log) == HEIGHT - 1 - 1 - 4 - 2


def test_two_streams_fit_as_panels_showing_the_bots_level_beside_the_callers() -> None:
    lines = draw(view_with_log(5), [snapshot(1), snapshot(2, errors=2)])
    level = [line for line in lines if "caller" in line and "bot" in line]
    assert len(level) == 2
    assert all("-23.4 dBFS" in line and "-9.5 dBFS" in line for line in level)


def test_forty_streams_show_the_rows_that_fit_and_how_many_more() -> None:
    lines = draw(view_with_log(200), [snapshot(n) for n in range(40)])
    rows = [line for line in lines if line.lstrip().startswith("000000")]
    more = [line for line in lines if "more streams" in line]
    assert len(more) == 1 and more[0].strip() == f"… {40 - len(rows)} more streams"
    log = [line for line in lines if "conn-" in line]
    assert len(log) == 3 and len(rows) == HEIGHT - 1 - 1 - 1 - 5


def test_text_from_the_peer_is_never_markup_and_never_bidi() -> None:
    nasty = snapshot(1, call="[bold]x[/bold]\u202eevil", headers={"k": "[red]v"})
    lines = draw(view_with_log(1), [nasty])
    text = "\n".join(lines)
    assert "[bold]x[/bold]\\u202eevil" in text and "[red]v" in text
    table = Console(file=io.StringIO(), width=WIDTH, record=True, color_system=None)
    table.print(compact_table([nasty], {}, WIDTH, 5))
    assert "\u202e" not in table.export_text()


def test_fit() -> None:
    assert fit("short", 10) == "short"
    assert fit("0123456789abcdef", 10) == "012…abcdef"
    assert len(fit("x" * 500, 37)) == 37
    assert fit("0123456789", 5, head=0) == "…6789"
