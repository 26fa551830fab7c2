"""Baselines: save a run's pooled percentiles, and fail a later run that regressed.

Pure: works on `metrics.run_summary` documents (plus what identifies the run: a digest of the
caller's audio, the seed and impairment, the scenario's name), never on files.

A percentile regressed when it grew beyond BOTH margins: more than `relative` (a fraction, 0.10 =
10 %) above the baseline's value, AND more than `absolute_ms` above it. The relative margin keeps
slow bots from failing on noise that is small for them; the absolute one keeps fast bots (a 20 ms
figure) from failing on a few ms. A metric the baseline measured that the run no longer measures
(the bot stopped replying) is a regression too. Runs whose audio, seed or impairment differ
measure different things: `compare` refuses them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from plivo_stream_cli.errors import UsageError

BASELINE_VERSION = 1
DEFAULT_RELATIVE = 0.10
DEFAULT_ABSOLUTE_MS = 20.0
COMPARED = ("p50", "p90", "p99")
IDENTITY = ("audio_sha256", "seed", "network", "scenario")


class BaselineMismatch(UsageError):
    """The baseline was taken from a run that cannot be compared with this one."""


def make(summary: dict[str, Any], identity: dict[str, Any]) -> dict[str, Any]:
    """The baseline document of a run: its identity and pooled percentiles."""
    return {
        "baseline_version": BASELINE_VERSION,
        **{key: identity.get(key) for key in IDENTITY},
        "calls": len(summary.get("calls", [])),
        "metrics": summary["metrics"],
    }


@dataclass(frozen=True)
class Delta:
    metric: str
    stat: str
    baseline: float | None
    current: float | None
    regressed: bool

    def describe(self) -> str:
        if self.current is None:
            return f"{self.metric} {self.stat}: no longer measured (baseline {self.baseline:g} ms)"
        if self.baseline is None:
            return f"{self.metric} {self.stat}: {self.current:g} ms (not in the baseline)"
        change = self.current - self.baseline
        return (
            f"{self.metric} {self.stat}: {self.current:g} ms vs baseline {self.baseline:g} ms "
            f"({change:+.1f} ms)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "stat": self.stat,
            "baseline": self.baseline,
            "current": self.current,
            "regressed": self.regressed,
        }


def check_margins(relative: float, absolute_ms: float) -> None:
    if not math.isfinite(relative) or not 0 <= relative <= 100:
        raise UsageError(f"the relative margin must be between 0 and 100, got {relative!r}")
    if not math.isfinite(absolute_ms) or not 0 <= absolute_ms <= 600_000:
        raise UsageError(
            f"the absolute margin must be between 0 and 600000 ms, got {absolute_ms!r}"
        )


def compare(
    current: dict[str, Any],
    baseline: dict[str, Any],
    identity: dict[str, Any],
    *,
    relative: float = DEFAULT_RELATIVE,
    absolute_ms: float = DEFAULT_ABSOLUTE_MS,
) -> list[Delta]:
    """Every compared percentile of `current` (a run summary) against `baseline`."""
    check_margins(relative, absolute_ms)
    if baseline.get("baseline_version") != BASELINE_VERSION:
        raise BaselineMismatch(
            f"baseline version {baseline.get('baseline_version')!r} is not {BASELINE_VERSION}"
        )
    for key in IDENTITY:
        if baseline.get(key) != identity.get(key):
            raise BaselineMismatch(
                f"the baseline's {key} ({_show(baseline.get(key))}) differs from this run's "
                f"({_show(identity.get(key))}): runs with different audio, seed or network "
                "cannot be compared"
            )
    deltas = []
    for metric, rows in baseline.get("metrics", {}).items():
        now = current["metrics"].get(metric, {})
        for stat in COMPARED:
            base, cur = rows.get(stat), now.get(stat)
            if base is None and cur is None:
                continue
            deltas.append(
                Delta(metric, stat, base, cur, _regressed(base, cur, relative, absolute_ms))
            )
    return deltas


def _regressed(base: float | None, cur: float | None, relative: float, absolute_ms: float) -> bool:
    if base is None:
        return False  # newly measured: nothing to regress from
    if cur is None:
        return True
    grew = cur - base
    return grew > absolute_ms and grew > abs(base) * relative


def _show(value: Any) -> str:
    if isinstance(value, str) and len(value) > 16:
        return value[:12] + "…"
    return repr(value)
