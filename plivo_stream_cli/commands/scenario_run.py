"""`pstream simulate`'s CI side: scenarios, network impairment, baselines and JUnit.

`simulate` hands over here when it is given `--scenario`, `--loss/--jitter/--latency`,
`--baseline/--save-baseline` or `--junit`; the plain call without them stays in simulate_cmd.
The checks of the new flags' values live in `check_options`, in one place.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plivo_stream_cli.errors import UsageError

if TYPE_CHECKING:
    from plivo_stream_cli.adapters.scenario_runner import ScenarioResult
    from plivo_stream_cli.formats import MediaFormat
    from plivo_stream_cli.metrics import Check
    from plivo_stream_cli.scenario import Scenario

MAX_CALLS = 100_000


@dataclass
class CiOptions:
    """The new flags, checked."""

    scenario: Path | None = None
    loss: float | None = None
    jitter: float | None = None
    latency: float | None = None
    seed: int | None = None
    save_baseline: Path | None = None
    baseline: Path | None = None
    margin_pct: float = 10.0
    margin_ms: float = 20.0
    junit: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def wanted(self) -> bool:
        """Whether any of them was given (else plain simulate runs as before)."""
        return any(
            v is not None
            for v in (
                self.scenario,
                self.loss,
                self.jitter,
                self.latency,
                self.seed,
                self.save_baseline,
                self.baseline,
                self.junit,
            )
        )


def check_options(o: CiOptions, *, repeat: int, concurrency: int) -> None:
    """One `error:` line (exit 2) for what the flags' own parsers cannot see (numbers are
    checked as the command line is parsed: `commands.values`)."""
    for flag, path in (
        ("--scenario", o.scenario),
        ("--save-baseline", o.save_baseline),
        ("--baseline", o.baseline),
        ("--junit", o.junit),
    ):
        if path is not None and str(path).strip() in ("", "."):
            raise UsageError(f"{flag} needs a file name")
    if repeat > MAX_CALLS or concurrency > MAX_CALLS:
        raise UsageError(f"--repeat and --concurrency must be at most {MAX_CALLS}")
    same = o.save_baseline is not None and o.baseline is not None
    if same and o.save_baseline.resolve() == o.baseline.resolve():  # type: ignore[union-attr]
        raise UsageError("--save-baseline and --baseline name the same file")


def network(o: CiOptions, fallback: Any = None) -> tuple[Any, int | None]:
    """The impairment (flags over the scenario's `network`) and the seed to use."""
    from plivo_stream_cli.impairment import Impairment

    loss = o.loss if o.loss is not None else getattr(fallback, "loss", 0.0)
    jitter = o.jitter if o.jitter is not None else getattr(fallback, "jitter", 0.0)
    latency = o.latency if o.latency is not None else getattr(fallback, "latency", 0.0)
    seed = o.seed if o.seed is not None else getattr(fallback, "seed", None)
    impairment = Impairment(loss, jitter, latency)
    if impairment.active and seed is None:
        seed = random.SystemRandom().randrange(2**31)  # reported, so the run can be repeated
    return impairment, seed


def run_scenario_calls(
    url: str,
    o: CiOptions,
    *,
    fmt: MediaFormat | None,
    auth_token: str | None,
    speed: float | None,
    repeat: int,
    concurrency: int,
    send_stop: bool,
    extra_headers: str | None,
) -> tuple[Scenario, list[ScenarioResult], dict[str, Any]]:
    """Run `--scenario` `repeat` times; returns the scenario, the results and the run's identity."""
    import asyncio

    from plivo_stream_cli.adapters.scenario_runner import (
        identity_of,
        load_scenario,
        run_scenarios,
        scenario_calls,
    )
    from plivo_stream_cli.formats import MediaFormat

    assert o.scenario is not None
    parsed, audio, text = load_scenario(o.scenario, fmt)
    chosen = fmt or MediaFormat.from_content_type(parsed.content_type or "audio/x-mulaw;rate=8000")
    impairment, seed = network(o, parsed.network)
    configs = scenario_calls(
        url, parsed, audio, chosen, repeat=repeat, impairment=impairment, seed=seed,
        auth_token=auth_token, speed=speed, extra_headers=extra_headers, send_stop=send_stop,
    )  # fmt: skip
    results = asyncio.run(run_scenarios(configs, concurrency))
    identity = identity_of(
        [text.encode(), *(audio[k] for k in sorted(audio))], chosen, seed, impairment, parsed.name
    )
    return parsed, results, identity


def run_impaired_calls(
    configs: list[Any], o: CiOptions, barge_in_at: float | None, concurrency: int
) -> tuple[Scenario, list[ScenarioResult], dict[str, Any]]:
    """A plain simulate under impairment: its calls as a one-`say` scenario through the runner."""
    import asyncio
    import dataclasses

    from plivo_stream_cli import scenario
    from plivo_stream_cli.adapters.scenario_runner import ScenarioConfig, identity_of, run_scenarios

    first = configs[0]
    if first.dtmf:
        raise UsageError("--dtmf with --loss/--jitter/--latency: write a scenario with dtmf steps")
    steps: list[scenario.Step] = [scenario.Say("caller.wav")]
    audio = {"caller.wav": first.audio}
    if barge_in_at is not None:
        steps.append(
            scenario.BargeIn(barge_in_at * 1000, "barge.wav" if first.barge_in_audio else None)
        )
        audio["barge.wav"] = first.barge_in_audio
    plain = scenario.Scenario("simulate", "simulate", tuple(steps), linger=first.linger)
    impairment, seed = network(o)
    runs = [
        ScenarioConfig(
            url=c.url,
            scenario=plain,
            media_format=c.media_format,
            audio=audio,
            auth_token=c.auth_token,
            impairment=impairment,
            seed=seed or 0,
            call_index=index,
            speed=c.speed,
            extra_headers=c.extra_headers,
            linger=c.linger,
            send_stop=c.send_stop,
        )
        for index, c in enumerate(configs)
    ]
    results = asyncio.run(run_scenarios(runs, concurrency))
    parts = [first.audio, first.barge_in_audio, str(barge_in_at).encode()]
    identity = identity_of(parts, first.media_format, seed, impairment, None)
    return dataclasses.replace(plain, source="simulate"), results, identity


def plain_identity(
    configs: list[Any], barge_in_at: float | None, seed: int | None
) -> dict[str, Any]:
    first = configs[0]
    dtmf = ",".join(f"{d}@{t:g}" for d, t in first.dtmf).encode()
    parts = [first.audio, first.barge_in_audio, dtmf, str(barge_in_at).encode()]
    from plivo_stream_cli.adapters.scenario_runner import identity_of
    from plivo_stream_cli.impairment import Impairment

    return identity_of(parts, first.media_format, seed, Impairment(), None)


def finish_ci(
    reports: list[Any],
    results: list[ScenarioResult] | None,
    checks: list[Check],
    identity: dict[str, Any],
    o: CiOptions,
    *,
    scenario_doc: Scenario | None,
    json_out: bool,
    strict: bool,
    require_reply: bool = False,
) -> None:
    """Summarize (assertions, baseline), write JUnit and the baseline, print, then exit.

    As `simulate_cmd.finish`: a refused call exits 3, a protocol break with --strict 7, a failed
    assertion, threshold or baseline 8, a silent bot (--require-reply) or a barge-in never
    cleared 9; `passed` always agrees."""
    from plivo_stream_cli import baseline
    from plivo_stream_cli.adapters.scenario_runner import summarize_run
    from plivo_stream_cli.commands.simulate_cmd import _exit_for, _report_checks, _verbose_timelines
    from plivo_stream_cli.console import output
    from plivo_stream_cli.errors import CheckFailed, NoReply
    from plivo_stream_cli.metrics import failures, render_text

    failed = failures(reports, strict=strict, require_reply=require_reply)
    summary = summarize_run(reports, results, checks, identity, scenario_doc, failed)
    deltas: list[baseline.Delta] = []
    if o.baseline is not None:
        saved = o.extra.get("baseline_doc") or read_baseline(o.baseline)
        deltas = baseline.compare(
            summary, saved, identity, relative=o.margin_pct / 100, absolute_ms=o.margin_ms
        )
        regressed = [d for d in deltas if d.regressed]
        summary["baseline"] = {
            "path": str(o.baseline),
            "relative_pct": o.margin_pct,
            "absolute_ms": o.margin_ms,
            "passed": not regressed,
            "deltas": [d.to_dict() for d in deltas],
        }
        summary["passed"] = summary["passed"] and not regressed
    if o.save_baseline is not None:
        _write(o.save_baseline, json.dumps(baseline.make(summary, identity), indent=2) + "\n")
        output.status(f"baseline saved to {o.save_baseline}")
    if o.junit is not None:
        _write(o.junit, _junit(summary, results, checks, deltas, scenario_doc))
        output.status(f"JUnit report written to {o.junit}")
    _verbose_timelines(reports)
    if json_out:
        output.json_line(summary)
    else:
        shown = summary | {"calls": [_plain(c) for c in summary["calls"]]}
        for line in render_text(shown):
            output.data(line)
        for line in _ci_lines(summary, results):
            output.data(line)
    serious = [f for f in failed if f.kind in ("refused", "protocol")]
    _exit_for(serious, [])
    _report_checks(checks)
    problems = [c.describe() for c in checks if not c.passed]
    if results is not None:
        problems += _failed_assertions(results)
    problems += [d.describe() for d in deltas if d.regressed]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CheckFailed(problems[0] + more)
    if failed:
        raise NoReply("; ".join(f.message for f in failed))


def _plain(call: dict[str, Any]) -> dict[str, Any]:
    """A call's fields for the text summary (the assertions get their own lines)."""
    return {k: v for k, v in call.items() if k not in ("assertions", "step_failures", "passed")}


def _failed_assertions(results: list[ScenarioResult]) -> list[str]:
    out = []
    for number, result in enumerate(results, start=1):
        where = f"call {number}: " if len(results) > 1 else ""
        out += [where + f for f in result.step_failures]
        out += [f"{where}{o.assertion.label}: {o.message}" for o in result.outcomes if not o.passed]
    return out


def _ci_lines(summary: dict[str, Any], results: list[ScenarioResult] | None) -> list[str]:
    lines = []
    run = summary["run"]
    net = run["network"]
    if any(net.values()):
        lost = sum(c.get("frames_lost_up", 0) for c in summary["calls"])
        lost_down = sum(c.get("frames_lost_down", 0) for c in summary["calls"])
        lines.append(
            f"{'network':<24} loss {net['loss']:g} %  jitter {net['jitter']:g} ms  latency "
            f"{net['latency']:g} ms  seed {run['seed']}  (frames lost: {lost} up, {lost_down} down)"
        )
    if results is not None:
        calls = len(results)
        labels: dict[str, list[bool]] = {}
        for result in results:
            for o in result.outcomes:
                labels.setdefault(o.assertion.label, []).append(o.passed)
        for result in results:
            for failure in result.step_failures:
                lines.append(f"FAIL {failure}")
        if calls == 1:
            for o in results[0].outcomes:
                lines.append(f"{'pass' if o.passed else 'FAIL'} {o.assertion.label}  ({o.message})")
        else:
            for label, verdicts in labels.items():
                word = "pass" if all(verdicts) else "FAIL"
                lines.append(f"{word} {label}  ({sum(verdicts)} of {calls} calls passed)")
    if "baseline" in summary:
        b = summary["baseline"]
        for d in b["deltas"]:
            if d["regressed"]:
                lines.append(
                    f"REGRESSED {d['metric']} {d['stat']}: {d['current']} ms vs {d['baseline']} ms"
                )
        word = "pass" if b["passed"] else "FAIL"
        lines.append(
            f"{word} baseline {b['path']} "
            f"(margins {b['relative_pct']:g} % and {b['absolute_ms']:g} ms)"
        )
    return lines


def _junit(
    summary: dict[str, Any],
    results: list[ScenarioResult] | None,
    checks: list[Check],
    deltas: list[Any],
    scenario_doc: Scenario | None,
) -> str:
    from datetime import datetime, timezone

    from plivo_stream_cli.junit import Case, render

    suite = scenario_doc.name if scenario_doc is not None else "simulate"
    cases = []
    for number, call in enumerate(summary["calls"], start=1):
        classname = f"{suite}.call-{number}"
        result = results[number - 1] if results is not None else None
        trouble = list(call["violations"][:1])
        if call["close_code"] == 1008:
            trouble.append(f"the server closed the stream with 1008 {call['close_reason']}".strip())
        if result is not None:
            trouble += result.step_failures
        cases.append(
            Case(
                classname,
                "call",
                call["duration_s"],
                "; ".join(trouble) or None,
                output=f"call_id {call['call_id']} stream_id {call['stream_id']}",
            )
        )
        if result is not None:
            for o in result.outcomes:
                cases.append(
                    Case(
                        classname,
                        o.assertion.label,
                        0.0,
                        None if o.passed else o.message,
                        o.message,
                    )
                )
        for c in checks:
            value = call["metrics"].get(c.metric)
            ok = value is not None and value <= c.limit
            shown = "not measured" if value is None else f"{value:g} ms"
            text = f"{c.metric} {shown} (limit {c.limit:g} ms)"
            cases.append(
                Case(classname, f"{c.metric} <= {c.limit:g} ms", 0.0, None if ok else text)
            )
    for d in deltas:
        cases.append(
            Case(
                f"{suite}.baseline",
                f"{d.metric} {d.stat}",
                0.0,
                d.describe() if d.regressed else None,
            )
        )
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return render(f"pstream simulate {suite}", cases, stamp)


def read_baseline(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read baseline {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"baseline {path} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("metrics"), dict):
        raise UsageError(f"baseline {path} is not a pstream baseline (no metrics)")
    return doc


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, "utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
