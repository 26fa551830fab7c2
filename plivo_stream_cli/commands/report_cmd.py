"""`pstream report`: a call's timeline, or a run's latencies, as one self-contained HTML page.

Reads a JSONL capture (`serve --record`, `demo`) or a `simulate --json` result, builds the page
(`timeline` models a call, `reportpage` draws it), writes it and prints its path. The helpers
`write_call_report` and `write_run_report` are what `demo` and `simulate --report` call.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from plivo_stream_cli.commands.common import add

if TYPE_CHECKING:
    from plivo_stream_cli.timeline import CallTimeline

REPORT_EPILOG = (
    "Example: pstream report calls/CA123_ST456.jsonl --open   |   "
    "pstream simulate ws://127.0.0.1:8080/stream --repeat 20 --json > run.json && "
    "pstream report run.json --captures calls/"
)


def register(app: typer.Typer) -> None:
    add(app, report, "report", epilog=REPORT_EPILOG)


def report(
    source: Path = typer.Argument(
        ...,
        help="A JSONL capture (serve --record, demo) or a result (simulate --json, demo --json).",
    ),
    out: Path | None = typer.Option(
        None, "--output", "-o", help="Write the page here. Default: SOURCE with .html."
    ),
    captures: Path | None = typer.Option(
        None,
        "--captures",
        help="For a result: where serve --record wrote the calls' captures, so failed calls "
        "link to their timeline. Default: the result's directory.",
    ),
    open_page: bool = typer.Option(
        False, "--open", help="Open the page in the default browser (when there is one)."
    ),
) -> None:
    """Draw a call's timeline (both tracks, every event, the metrics) or a run's latencies."""
    from plivo_stream_cli.console import output
    from plivo_stream_cli.errors import UsageError

    target = out if out is not None else source.with_suffix(".html")
    if target.resolve() == source.resolve():
        raise UsageError(f"{target}: the page would replace its own input; give -o FILE")
    kind, document = _read(source)
    if kind == "capture":
        path = write_call_report(source, target)
    else:
        path = write_run_report(document, target, source=source, captures=captures)
    output.data(str(path))
    if open_page:
        _open(path)


def write_call_report(capture: Path, target: Path) -> Path:
    """Write the timeline page of one capture; `UsageError` (exit 2) for a bad capture."""
    from plivo_stream_cli import reportpage

    timeline = load_timeline(capture)
    return _write(target, reportpage.call_page(timeline, source=str(capture)))


def write_run_report(
    summary: dict[str, Any],
    target: Path,
    *,
    source: Path | None = None,
    captures: Path | None = None,
) -> Path:
    """Write the run page of a `simulate --json` summary; failed calls get their timelines."""
    from plivo_stream_cli import reportpage
    from plivo_stream_cli.console import output
    from plivo_stream_cli.errors import UsageError

    folder = captures if captures is not None else (source.parent if source else None)
    timelines: dict[int, CallTimeline] = {}
    failed = reportpage.failed_calls(summary)
    for index in failed:
        capture = _capture_of(summary["calls"][index], folder)
        if capture is None:
            continue
        try:
            timelines[index] = load_timeline(capture)
        except UsageError as exc:
            output.warn(f"call {index + 1}: {exc.message}")
    note = ""
    if failed and len(timelines) < len(failed):
        where = f"No capture in {folder} for" if folder else "No capture looked for:"
        note = (
            f"{where} {len(failed) - len(timelines)} of these calls. Record the server with "
            "pstream serve --record DIR, then pstream report RESULT.json --captures DIR."
        )
    page = reportpage.run_page(
        summary,
        source=str(source) if source else "pstream simulate",
        timelines=timelines,
        missing_note=note,
    )
    return _write(target, page)


def load_timeline(capture: Path) -> CallTimeline:
    """Read a capture into its timeline; `UsageError` (exit 2) when it is not one."""
    from plivo_stream_cli.adapters.recorder import read_capture
    from plivo_stream_cli.console import output
    from plivo_stream_cli.errors import UsageError
    from plivo_stream_cli.timeline import NotACapture, build

    try:
        timeline = build((line.t, line.direction, line.msg) for line in read_capture(capture))
    except NotACapture as exc:
        raise UsageError(f"{capture}: {exc}") from None
    if _torn(capture):
        output.warn(f"{capture}: the last line is incomplete (the recorder stopped mid-write)")
    return timeline


def _read(source: Path) -> tuple[str, dict[str, Any]]:
    """What `source` is: ("capture", {}) or ("run", the summary); `UsageError` otherwise."""
    import json

    from plivo_stream_cli.errors import UsageError

    what = "not a pstream capture (serve --record) or result (simulate --json)"
    try:
        with source.open("rb") as handle:
            first = handle.readline(1 << 20)
            while first and not first.strip():
                first = handle.readline(1 << 20)
    except OSError as exc:
        raise UsageError(f"{source}: cannot read: {exc.strerror or exc}") from None
    if not first:
        raise UsageError(f"{source}: empty: {what}")
    try:
        head = json.loads(first)
    except ValueError:
        head = None
    if isinstance(head, dict) and "dir" in head and "t" in head:
        return "capture", {}
    try:
        document = json.loads(source.read_bytes())
    except (OSError, ValueError):
        raise UsageError(f"{source}: {what} (or it is truncated)") from None
    if isinstance(document, dict) and isinstance(document.get("call"), dict):
        document = {**document, "calls": [document["call"]]}  # demo --json: a run of one call
    if not isinstance(document, dict) or not isinstance(document.get("calls"), list):
        raise UsageError(f"{source}: {what}")
    return "run", document


def _capture_of(call: Any, folder: Path | None) -> Path | None:
    """The capture serve --record wrote for this call, if it is in `folder`."""
    from plivo_stream_cli.adapters.recorder import safe_name

    if folder is None or not isinstance(call, dict):
        return None
    call_id, stream_id = call.get("call_id"), call.get("stream_id")
    if not isinstance(call_id, str) or not isinstance(stream_id, str):
        return None
    path = folder / f"{safe_name(call_id)}_{safe_name(stream_id)}.jsonl"
    return path if path.is_file() else None


def _torn(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            if handle.tell() == 0:
                return False
            handle.seek(-1, 2)
            return handle.read(1) != b"\n"
    except OSError:
        return False


def _write(target: Path, page: str) -> Path:
    from plivo_stream_cli.errors import UsageError

    try:
        target.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target


def _open(path: Path) -> None:
    import webbrowser

    from plivo_stream_cli.console import output

    try:
        browser = webbrowser.get()
    except webbrowser.Error:
        output.status("no browser found: open the page yourself")
        return
    if not browser.open(path.resolve().as_uri()):
        output.status("the browser did not start: open the page yourself")
