"""Baselines: both margins must be exceeded, lost metrics regress, mismatched runs are refused."""

from __future__ import annotations

from typing import Any

import pytest

from plivo_stream_cli import baseline
from plivo_stream_cli.baseline import BaselineMismatch, compare, make

IDENTITY = {"audio_sha256": "ab" * 32, "seed": 7, "network": {"loss": 1.0}, "scenario": "greet"}


def summary(
    p50: float | None, p90: float | None = None, p99: float | None = None
) -> dict[str, Any]:
    row = {"count": 3, "p50": p50, "p90": p90 if p90 is not None else p50, "p99": p99 or p50}
    if p50 is None:
        row = {"count": 0, "p50": None, "p90": None, "p99": None}
    return {"metrics": {"first_audio_ms": row}, "calls": [{}, {}, {}]}


def regressed(base: float | None, now: float | None, **margins: float) -> list[str]:
    saved = make(summary(base), IDENTITY)
    deltas = compare(summary(now), saved, IDENTITY, **margins)
    return [f"{d.stat}" for d in deltas if d.regressed]


def test_a_regression_must_beat_both_margins() -> None:
    # 300 -> 340: +40 ms (> 20) and +13 % (> 10 %): regressed
    assert regressed(300, 340) == ["p50", "p90", "p99"]
    # 300 -> 325: +25 ms but +8.3 %: within the relative margin
    assert regressed(300, 325) == []
    # 50 -> 65: +30 % but +15 ms: within the absolute margin
    assert regressed(50, 65) == []
    # tighter margins catch it
    assert regressed(50, 65, relative=0.1, absolute_ms=10) == ["p50", "p90", "p99"]


def test_faster_is_never_a_regression_and_a_lost_metric_always_is() -> None:
    assert regressed(300, 100) == []
    assert regressed(300, None) == ["p50", "p90", "p99"]
    assert regressed(None, 300) == []


def test_the_baseline_keeps_identity_and_pooled_metrics() -> None:
    saved = make(summary(300), IDENTITY)
    assert saved["baseline_version"] == baseline.BASELINE_VERSION
    assert saved["seed"] == 7 and saved["calls"] == 3
    assert saved["metrics"]["first_audio_ms"]["p50"] == 300


@pytest.mark.parametrize(
    ("key", "value"),
    [("audio_sha256", "cd" * 32), ("seed", 8), ("network", {"loss": 2.0}), ("scenario", "other")],
)
def test_runs_with_other_audio_seed_or_network_are_refused(key: str, value: Any) -> None:
    saved = make(summary(300), IDENTITY)
    with pytest.raises(BaselineMismatch) as caught:
        compare(summary(300), saved, {**IDENTITY, key: value})
    assert key in caught.value.message and caught.value.exit_code == 2


def test_a_baseline_of_another_version_is_refused() -> None:
    saved = make(summary(300), IDENTITY) | {"baseline_version": 99}
    with pytest.raises(BaselineMismatch):
        compare(summary(300), saved, IDENTITY)


@pytest.mark.parametrize(
    ("rel", "abs_ms"), [(-0.1, 20), (float("nan"), 20), (0.1, -1), (0.1, 1e12)]
)
def test_bad_margins_are_usage_errors(rel: float, abs_ms: float) -> None:
    saved = make(summary(300), IDENTITY)
    with pytest.raises(baseline.UsageError):
        compare(summary(300), saved, IDENTITY, relative=rel, absolute_ms=abs_ms)


def test_deltas_describe_themselves() -> None:
    saved = make(summary(300), IDENTITY)
    (p50, *_) = compare(summary(340), saved, IDENTITY)
    assert p50.describe() == "first_audio_ms p50: 340 ms vs baseline 300 ms (+40.0 ms)"
    assert p50.to_dict()["regressed"] is True
