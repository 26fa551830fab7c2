"""`pstream simulate`: play Plivo's side of one or more calls against any WebSocket server, measure
the bot's latency, and fail (exit 8) when it misses a threshold."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from plivo_stream_cli.commands import values
from plivo_stream_cli.commands.base import Registry
from plivo_stream_cli.commands.common import add, auth_token_option, resolve_token
from plivo_stream_cli.commands.stream_options import CONTENT_TYPE, ContentType

if TYPE_CHECKING:
    from plivo_stream_cli.callreport import CallReport
    from plivo_stream_cli.metrics import Check, Failure

SIMULATE_EPILOG = (
    "Example: pstream simulate ws://127.0.0.1:8080/stream --audio hello.wav --dtmf '5@1.5' "
    "--barge-in-at 0.5 --max-first-audio-ms 800 --max-clear-ms 300 --repeat 10 --json"
)
CI_PANEL = "Scenarios and CI"


REQUIRE_REPLY = typer.Option(
    False,
    "--require-reply",
    help="Exit 9 when a call gets no reply after the caller's speech (a silent bot fails).",
)


def register(app: Registry) -> None:
    add(app, simulate, "simulate", epilog=SIMULATE_EPILOG)


def simulate(
    url: str = typer.Argument(
        ...,
        metavar="URL",
        parser=values.url_parser(values.WS_SCHEMES),
        help="ws:// or wss:// URL of the stream server to test.",
    ),
    audio: Path | None = typer.Option(
        None, "--audio", help="The caller's audio (any PCM WAV; converted). Default: built-in clip."
    ),
    content_type: ContentType = CONTENT_TYPE,
    auth_token: str | None = auth_token_option(),
    speed: float = values.speed_option(1.0, "--speed", help="Send N times faster than real time."),
    dtmf: str | None = typer.Option(
        None, "--dtmf", help="Digits to press at given seconds, e.g. '5@1.5,#@3'."
    ),
    extra_headers: str = typer.Option(
        "", "--extra-headers", help="extra_headers of start, media and dtmf, e.g. 'a=1;b=2'."
    ),
    send_stop: bool = typer.Option(
        False, "--send-stop", help="Send a stop event before closing (Plivo's docs don't)."
    ),
    linger: float = values.seconds_option(
        2.0, "--linger", help="Seconds to stay on the call after the caller's audio ends."
    ),
    barge_in_at: float | None = values.seconds_option(
        None,
        "--barge-in-at",
        help="Talk over the bot's reply SECONDS after it begins (measures clear_ms).",
    ),
    barge_in_audio: Path | None = typer.Option(
        None, "--barge-in-audio", help="What the caller says at barge-in. Default: built-in clip."
    ),
    max_first_audio_ms: float | None = values.ms_option(
        None, "--max-first-audio-ms", help="Exit 8 if any call's time to first audio exceeds N."
    ),
    max_clear_ms: float | None = values.ms_option(
        None, "--max-clear-ms", help="Exit 8 if any call's barge-in-to-clearAudio exceeds N."
    ),
    repeat: int = values.count_option(
        1, "--repeat", what="calls", high=100_000, help="Run N calls (fresh ids each)."
    ),
    concurrency: int = values.count_option(
        1,
        "--concurrency",
        what="calls at once",
        high=10_000,
        help="Run at most N of the calls at the same time.",
    ),
    record_reply: Path | None = typer.Option(
        None, "--record-reply", help="Write the audio the server sent back to this WAV."
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Exit 7 when the server breaks the protocol."
    ),
    require_reply: bool = REQUIRE_REPLY,
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    report_page: Path | None = typer.Option(
        None, "--report", help="Also write the run as an HTML page (see pstream report)."
    ),
    scenario: Path | None = typer.Option(
        None,
        "--scenario",
        help="Run the steps and assertions of this YAML scenario.",
        rich_help_panel=CI_PANEL,
    ),
    loss: float | None = values.number_option(
        None,
        "--loss",
        what="percent",
        low=0.0,
        high=100.0,
        metavar="PCT",
        help="Lose PCT % of 20 ms frames.",
        rich_help_panel=CI_PANEL,
    ),
    jitter: float | None = values.number_option(
        None,
        "--jitter",
        what="milliseconds",
        low=0.0,
        high=10_000.0,
        metavar="MS",
        help="Delay frames 0..MS ms more.",
        rich_help_panel=CI_PANEL,
    ),
    latency: float | None = values.number_option(
        None,
        "--latency",
        what="milliseconds",
        low=0.0,
        high=10_000.0,
        metavar="MS",
        help="Delay every frame MS ms.",
        rich_help_panel=CI_PANEL,
    ),
    seed: int | None = values.number_option(
        None,
        "--seed",
        what="seed",
        low=0,
        high=2**63 - 1,
        integer=True,
        help="Seed of the impairment (reproducible).",
        rich_help_panel=CI_PANEL,
    ),
    save_baseline: Path | None = typer.Option(
        None,
        "--save-baseline",
        help="Save this run's percentiles as a baseline JSON file.",
        rich_help_panel=CI_PANEL,
    ),
    baseline: Path | None = typer.Option(
        None,
        "--baseline",
        help="Exit 8 when a percentile regressed from this baseline.",
        rich_help_panel=CI_PANEL,
    ),
    baseline_margin_pct: float = values.number_option(
        10.0,
        "--baseline-margin-pct",
        what="percent",
        low=0.0,
        high=10_000.0,
        metavar="PCT",
        help="A regression must exceed this many % ...",
        rich_help_panel=CI_PANEL,
    ),
    baseline_margin_ms: float = values.number_option(
        20.0,
        "--baseline-margin-ms",
        what="milliseconds",
        low=0.0,
        high=600_000.0,
        metavar="MS",
        help="... and this many ms over the baseline.",
        rich_help_panel=CI_PANEL,
    ),
    junit: Path | None = typer.Option(
        None,
        "--junit",
        help="Write a JUnit XML report (a testcase per call and assertion).",
        rich_help_panel=CI_PANEL,
    ),
) -> None:
    """Act as Plivo: connect (signed), send start, media and DTMF, answer checkpoints and clears."""
    import asyncio
    import dataclasses
    import uuid

    from plivo_stream_cli.adapters.simulator import SimulateConfig, parse_dtmf_schedule, run_calls
    from plivo_stream_cli.commands import scenario_run
    from plivo_stream_cli.errors import UsageError
    from plivo_stream_cli.formats import MediaFormat
    from plivo_stream_cli.synth import default_caller_audio

    ci = scenario_run.CiOptions(
        scenario, loss, jitter, latency, seed, save_baseline, baseline,
        baseline_margin_pct, baseline_margin_ms, junit,
    )  # fmt: skip
    scenario_run.check_options(ci, repeat=repeat, concurrency=concurrency)
    if max_clear_ms is not None and barge_in_at is None and scenario is None:
        raise UsageError("--max-clear-ms needs --barge-in-at (the caller must talk over the bot)")
    if speed <= 0:
        raise UsageError(f"--speed must be positive, got {speed:g}")
    if baseline is not None:
        ci.extra["baseline_doc"] = scenario_run.read_baseline(baseline)
    limits = {"first_audio_ms": max_first_audio_ms, "clear_ms": max_clear_ms}
    if scenario is not None:
        _run_scenario(url, ci, content_type, auth_token, speed, repeat, concurrency, locals())
        return
    check_reply_path(record_reply)
    fmt = MediaFormat.from_content_type(content_type.value)
    config = SimulateConfig(
        url=url,
        audio=_caller_audio(audio, fmt) if audio else default_caller_audio(fmt),
        media_format=fmt,
        auth_token=resolve_token(auth_token, required=False),
        speed=speed,
        dtmf=values.check_dtmf(parse_dtmf_schedule(dtmf or "")),
        extra_headers=extra_headers,
        send_stop=send_stop,
        linger=linger,
        barge_in_at=barge_in_at,
        barge_in_audio=_caller_audio(barge_in_audio, fmt) if barge_in_audio else b"",
    )
    configs = [config] + [
        dataclasses.replace(config, call_id=str(uuid.uuid4()), stream_id=str(uuid.uuid4()))
        for _ in range(repeat - 1)
    ]
    if ci.wanted:
        _run_ci(
            configs, ci, barge_in_at, concurrency, limits, record_reply, json_out, strict,
            require_reply,
        )  # fmt: skip
        return
    with progress_display(len(configs), concurrency, limits) as on_done:
        reports = asyncio.run(run_calls(configs, concurrency, on_done))
    if record_reply is not None:
        _write_replies(record_reply, reports)
    finish(
        reports,
        limits,
        json_out=json_out,
        strict=strict,
        report_page=report_page,
        require_reply=require_reply,
    )


def _run_scenario(
    url: str,
    ci: Any,
    content_type: ContentType,
    auth_token: str | None,
    speed: float,
    repeat: int,
    concurrency: int,
    given: dict[str, Any],
) -> None:
    """`--scenario`: the scenario's steps and assertions (flags given explicitly win)."""
    from plivo_stream_cli.commands import scenario_run
    from plivo_stream_cli.formats import MediaFormat

    # a flag that differs from its default overrides the scenario's key
    explicit = {"content_type"} if content_type != ContentType.MULAW_8K else set()
    explicit |= {"speed"} if speed != 1.0 else set()
    explicit |= {"extra_headers"} if given["extra_headers"] else set()
    fmt = MediaFormat.from_content_type(content_type.value) if "content_type" in explicit else None
    parsed, results, identity = scenario_run.run_scenario_calls(
        url,
        ci,
        fmt=fmt,
        auth_token=resolve_token(auth_token, required=False),
        speed=speed if "speed" in explicit else None,
        repeat=repeat,
        concurrency=concurrency,
        send_stop=given["send_stop"],
        extra_headers=given["extra_headers"] if "extra_headers" in explicit else None,
    )
    _finish_results(parsed, results, identity, ci, given)


def _run_ci(
    configs: list[Any],
    ci: Any,
    barge_in_at: float | None,
    concurrency: int,
    limits: dict[str, float | None],
    record_reply: Path | None,
    json_out: bool,
    strict: bool,
    require_reply: bool,
) -> None:
    """A plain call with impairment, a baseline or JUnit."""
    import asyncio

    from plivo_stream_cli.adapters.simulator import run_calls
    from plivo_stream_cli.commands import scenario_run

    impairment, seed = scenario_run.network(ci)
    given = {
        "limits": limits,
        "record_reply": record_reply,
        "json_out": json_out,
        "strict": strict,
        "require_reply": require_reply,
    }
    if impairment.active:
        parsed, results, identity = scenario_run.run_impaired_calls(
            configs, ci, barge_in_at, concurrency
        )
        _finish_results(parsed, results, identity, ci, given, plain=True)
        return
    reports = asyncio.run(run_calls(configs, concurrency))
    if record_reply is not None:
        _write_replies(record_reply, reports)
    identity = scenario_run.plain_identity(configs, barge_in_at, seed)
    checks = _checks(reports, limits)
    scenario_run.finish_ci(
        reports, None, checks, identity, ci, scenario_doc=None, json_out=json_out, strict=strict,
        require_reply=require_reply,
    )  # fmt: skip


def _finish_results(
    parsed: Any, results: list[Any], identity: dict[str, Any], ci: Any, given: dict[str, Any],
    *, plain: bool = False,
) -> None:  # fmt: skip
    from plivo_stream_cli.commands import scenario_run

    reports = [r.report for r in results]
    record_reply = given.get("record_reply")
    if record_reply is not None:
        _write_replies(record_reply, reports)
    limits = given.get("limits") or {
        "first_audio_ms": given.get("max_first_audio_ms"),
        "clear_ms": given.get("max_clear_ms"),
    }
    scenario_run.finish_ci(
        reports,
        None if plain else results,
        _checks(reports, limits),
        identity,
        ci,
        scenario_doc=None if plain else parsed,
        json_out=given["json_out"],
        strict=given["strict"],
        require_reply=given.get("require_reply", False),
    )


def _checks(reports: list[CallReport], limits: dict[str, float | None]) -> list[Check]:
    from plivo_stream_cli.metrics import check, summarize

    per_call = [summarize(r)["metrics"] for r in reports]
    return [check(per_call, name, limit) for name, limit in limits.items() if limit is not None]


class RunProgress:
    """What a run of many calls has done so far: calls done and failing, running percentiles."""

    def __init__(self, total: int, concurrency: int, limits: dict[str, float | None]) -> None:
        self.total = total
        self.concurrency = concurrency
        self.limits = {name: limit for name, limit in limits.items() if limit is not None}
        self.done = 0
        self.failing = 0
        self.first_audio: list[float] = []

    def add(self, report: CallReport) -> None:
        from plivo_stream_cli.metrics import summarize

        metrics = summarize(report)["metrics"]
        self.done += 1
        if metrics.get("first_audio_ms") is not None:
            self.first_audio.append(float(metrics["first_audio_ms"]))
        over = any(
            isinstance(metrics.get(name), (int, float)) and metrics[name] > limit
            for name, limit in self.limits.items()
        )
        if over or report.violations or report.rejected:
            self.failing += 1

    def line(self) -> str:
        running = min(self.concurrency, self.total - self.done)
        parts = [f"calls {self.done}/{self.total} done", f"{running} running"]
        parts.append(f"{self.failing} failing")
        if self.first_audio:
            ordered = sorted(self.first_audio)
            p50, p95 = (_percentile(ordered, q) for q in (0.5, 0.95))
            parts.append(f"first audio p50 {p50:.0f} ms p95 {p95:.0f} ms")
        return "  ".join(parts)


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextlib.contextmanager
def progress_display(
    total: int, concurrency: int, limits: dict[str, float | None]
) -> Iterator[Callable[[CallReport], None] | None]:
    """A live progress line on a terminal's stderr for a run of many calls; nothing when piped."""
    from plivo_stream_cli.console import output

    if total < 2 or output.VERBOSITY.level < 0 or not output.is_terminal(stderr=True):
        yield None
        return
    from rich.live import Live
    from rich.text import Text

    progress = RunProgress(total, concurrency, limits)
    with Live(Text(progress.line()), console=output.console(stderr=True), transient=True) as live:

        def on_done(report: CallReport) -> None:
            progress.add(report)
            live.update(Text(progress.line()))

        yield on_done


def finish(
    reports: list[CallReport],
    limits: dict[str, float | None],
    *,
    json_out: bool,
    strict: bool,
    report_page: Path | None = None,
    require_reply: bool = False,
) -> None:
    """Print the run's summary, then exit as the calls and the thresholds say (shared by replay).

    The exit code and `passed` always agree: a refused call (1008) exits 3, a protocol break
    with --strict 7, a missed threshold 8, a silent bot (--require-reply) or a barge-in never
    cleared 9.
    """
    from plivo_stream_cli.console import output
    from plivo_stream_cli.metrics import check, failures, render_text, run_summary, summarize

    per_call = [summarize(r)["metrics"] for r in reports]
    checks = [check(per_call, name, limit) for name, limit in limits.items() if limit is not None]
    failed = failures(reports, strict=strict, require_reply=require_reply)
    summary = run_summary(reports, checks, failed)
    _verbose_timelines(reports)
    if report_page is not None:
        from rich.markup import escape

        from plivo_stream_cli.commands.report_cmd import write_run_report

        output.status(f"report: {escape(str(write_run_report(summary, report_page)))}")
    if json_out:
        output.json_line(summary)
    else:
        for line in render_text(summary):
            output.data(line)
    _exit_for(failed, checks)


def finish_quietly(reports: list[CallReport], *, require_reply: bool) -> None:
    """Exit as `finish` would, without printing a summary (for commands that print their own)."""
    from plivo_stream_cli.console import output
    from plivo_stream_cli.metrics import failures, silence_note

    for report in reports:
        note = silence_note(report)
        if note and not report.rejected:
            output.warn(f"no reply: {note}")
    _exit_for(failures(reports, require_reply=require_reply), [])


def _exit_for(failed: list[Failure], checks: list[Check]) -> None:
    """Raise the error of the most serious failure, if any (after listing passed checks)."""
    from plivo_stream_cli.errors import CheckFailed, ConfigError, NoReply, ProtocolViolation

    kinds = {f.kind: f.message for f in failed}
    if "refused" in kinds:
        raise ConfigError(kinds["refused"])
    if "protocol" in kinds:
        raise ProtocolViolation(kinds["protocol"])
    _report_checks(checks)
    missed = [c for c in checks if not c.passed]
    if missed:
        raise CheckFailed("; ".join(c.describe() for c in missed))
    if failed:
        raise NoReply("; ".join(f.message for f in failed))


def _verbose_timelines(reports: list[CallReport]) -> None:
    """With -v: what happened in each call, in order (media frames left out), on stderr."""
    from plivo_stream_cli.console import output

    if output.VERBOSITY.level < 1:
        return
    for report in reports:
        output.verbose(f"call {report.call_id} stream {report.stream_id}:")
        for event in report.timeline:
            size = f" ({event.nbytes} B)" if event.nbytes else ""
            output.verbose(f"{event.t:9.3f} s  {event.kind:<12} {event.detail}{size}".rstrip())


def _report_checks(checks: list[Check]) -> None:
    from plivo_stream_cli.console import output

    for item in checks:
        if item.passed:
            output.status(f"[green]pass[/green] {item.describe()}")


def check_reply_path(path: Path | None) -> None:
    """Refuse a --record-reply path that cannot be written, before any call is made."""
    from plivo_stream_cli.errors import UsageError

    if path is None:
        return
    if path.is_dir():
        raise UsageError(f"--record-reply: {path} is a directory: give a file name, e.g. reply.wav")
    if not path.parent.is_dir():
        raise UsageError(f"--record-reply: the directory {path.parent} does not exist")


def _caller_audio(path: Path, fmt: Any) -> bytes:
    from plivo_stream_cli.adapters.audiofile import load_audio

    return load_audio(path, fmt)


def _write_replies(path: Path, reports: list[CallReport]) -> None:
    from plivo_stream_cli.adapters.simulator import save_reply
    from plivo_stream_cli.console import output

    for number, report in enumerate(reports, start=1):
        target = path if len(reports) == 1 else path.with_stem(f"{path.stem}-{number}")
        save_reply(target, report)
        output.status(f"reply recorded to {target} ({report.received_seconds:.2f} s)")
