"""Stepped load (`pstream load`): the steps, each step's verdict, the table and the answer.

Pure. A run raises the number of concurrent calls step by step; each step's figures come from
the calls that started after its warm-up, and the step passes when every one of those calls
succeeded, every threshold holds over them, and the generator kept its own pacing (a late
generator makes the bot's figures untrustworthy, so such a step cannot pass). The answer is the
largest step that passed before the first that did not.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from plivo_stream_cli import metrics
from plivo_stream_cli.errors import UsageError

if TYPE_CHECKING:
    from plivo_stream_cli.callreport import CallReport

MAX_STEPS = 50
MAX_CONCURRENCY = 5000


def parse_steps(text: str) -> list[int]:
    """`'10,20,40'` or `'10:100:10'` (first:last:step) -> the concurrency of each step."""
    text = text.strip()
    try:
        if ":" in text:
            parts = [int(p) for p in text.split(":")]
            if len(parts) != 3:
                raise ValueError
            first, last, step = parts
            if step <= 0 or last < first:
                raise UsageError(f"--steps {text!r}: expected FIRST:LAST:STEP with LAST >= FIRST")
            steps = list(range(first, last + 1, step))
        else:
            steps = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise UsageError(
            f"--steps {text!r}: expected a list like 10,20,40 or a range like 10:100:10"
        ) from None
    if not steps:
        raise UsageError("--steps: give at least one step")
    if any(n < 1 or n > MAX_CONCURRENCY for n in steps):
        raise UsageError(f"--steps {text!r}: each step must be between 1 and {MAX_CONCURRENCY}")
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise UsageError(f"--steps {text!r}: steps must grow")
    if len(steps) > MAX_STEPS:
        raise UsageError(f"--steps {text!r}: at most {MAX_STEPS} steps")
    return steps


def call_failure(report: CallReport) -> str | None:
    """Why a call that ran to its end still failed, or None."""
    if report.rejected:
        return f"the server closed the stream with 1008 ({report.close_reason or 'policy'})"
    if report.violations:
        return f"protocol violation: {report.violations[0]}"
    if report.closed_by_server and report.close_code not in (1000, 1001):
        return f"the server closed the stream with {report.close_code}"
    return None


@dataclass
class Step:
    """What one step measured, over the calls that started after its warm-up."""

    concurrency: int
    calls: int  # counted calls
    warm_up_calls: int  # started during the warm-up, not counted
    failures: list[str]  # why counted calls failed (one line each)
    per_call: list[dict[str, Any]]  # metrics.call_metrics of each counted call that ran
    pacing: dict[str, Any]
    checks: list[metrics.Check] = field(default_factory=list)
    max_late_ms: float = metrics.PACING_UNRELIABLE_P99_MS

    @property
    def unreliable(self) -> bool:
        late = self.pacing.get("p99")
        return late is not None and late > self.max_late_ms

    @property
    def passed(self) -> bool:
        return (
            self.calls > 0
            and not self.failures
            and not self.unreliable
            and all(c.passed for c in self.checks)
        )

    def reason(self) -> str:
        """Why the step failed (empty when it passed)."""
        if self.calls == 0:
            return "no call started after the warm-up (make the step longer)"
        if self.failures:
            return f"{len(self.failures)} of {self.calls} calls failed: {self.failures[0]}"
        if self.unreliable:
            late = self.pacing.get("p99")
            return (
                f"the generator ran late (p99 {late:g} ms > {self.max_late_ms:g}): "
                "its figures are not the bot's alone"
            )
        failed = [c.describe() for c in self.checks if not c.passed]
        return "; ".join(failed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "calls": self.calls,
            "warm_up_calls": self.warm_up_calls,
            "failed_calls": len(self.failures),
            "failures": self.failures[:5],
            "passed": self.passed,
            "reason": self.reason(),
            "checks": [c.to_dict() for c in self.checks],
            "metrics": metrics.aggregate(self.per_call),
            "pacing": {**self.pacing, "unreliable": self.unreliable},
        }


def judge(
    step: Step,
    limits: dict[str, float | None],
    max_late_ms: float = metrics.PACING_UNRELIABLE_P99_MS,
) -> Step:
    """Fill the step's threshold checks (`reply_gaps_ms` holds every gap to the limit)."""
    step.checks = []
    step.max_late_ms = max_late_ms
    for name, limit in limits.items():
        if limit is None:
            continue
        if name == "reply_gaps_ms":  # a list per call: its worst gap, 0 when there was none
            worst = [{name: max(m.get(name) or [0.0])} for m in step.per_call]
            step.checks.append(metrics.check(worst, name, limit))
        else:
            step.checks.append(metrics.check(step.per_call, name, limit))
    return step


def largest_passing(steps: Sequence[Step]) -> int | None:
    """The concurrency of the last step that passed before the first failure."""
    best = None
    for step in steps:
        if not step.passed:
            break
        best = step.concurrency
    return best


HEADER = (
    f"{'calls at once':>13} {'calls':>6} {'failed':>6} {'first p50':>10} {'first p99':>10} "
    f"{'clear p99':>10} {'gap max':>8} {'late p99':>9}  verdict"
)


def table_row(step: Step) -> str:
    """One line of the table printed after each step."""
    agg = metrics.aggregate(step.per_call)

    def cell(name: str, key: str, width: int) -> str:
        value = agg[name].get(key)
        return f"{'-' if value is None else f'{value:g}':>{width}}"

    late = step.pacing.get("p99")
    verdict = "pass" if step.passed else "FAIL: " + step.reason()
    return (
        f"{step.concurrency:>13} {step.calls:>6} {len(step.failures):>6} "
        f"{cell('first_audio_ms', 'p50', 10)} {cell('first_audio_ms', 'p99', 10)} "
        f"{cell('clear_ms', 'p99', 10)} {cell('reply_gaps_ms', 'max', 8)} "
        f"{'-' if late is None else f'{late:g}':>9}  {verdict}"
    )


def summary(steps: Sequence[Step], planned: Sequence[int]) -> dict[str, Any]:
    """The `--json` document of a stepped run."""
    best = largest_passing(steps)
    return {
        "schema_version": metrics.SCHEMA_VERSION,
        "passed": best is not None,
        "largest_passing": best,
        "planned_steps": list(planned),
        "steps": [s.to_dict() for s in steps],
    }
