"""Seeded impairment: statistics over many frames, reproducibility, TCP order."""

from __future__ import annotations

import itertools
import random
import statistics

import pytest

from plivo_stream_cli.impairment import Impairment, Link, links

FRAMES = 50_000


def run_link(impairment: Impairment, seed: int) -> list[float | None]:
    link = Link(impairment, random.Random(seed))
    return [link.send(i * 0.02).arrival for i in range(FRAMES)]


def test_loss_rate_matches_the_setting_over_many_frames() -> None:
    fates = run_link(Impairment(loss=5), seed=1)
    lost = fates.count(None) / FRAMES
    # binomial: sd = sqrt(0.05 * 0.95 / 50000) ~ 0.001; 4 sd either side
    assert 0.046 < lost < 0.054


def test_latency_and_jitter_delay_every_frame_within_bounds() -> None:
    imp = Impairment(latency=40, jitter=30)
    fates = run_link(imp, seed=2)
    delays = [(a - i * 0.02) * 1000 for i, a in enumerate(fates) if a is not None]
    assert len(delays) == FRAMES
    assert min(delays) >= 40 - 1e-6
    # order is kept: a frame waits for the one before it, so delays may exceed 70 ms only by
    # what head-of-line blocking adds, never by more than the jitter itself
    assert max(delays) <= 40 + 30 + 1e-6
    # uniform 0..30 ms jitter: mean 15, and frames 20 ms apart block rarely
    assert 54 < statistics.fmean(delays) < 56.5


def test_arrivals_never_reorder() -> None:
    fates = run_link(Impairment(jitter=200, loss=10), seed=3)
    arrivals = [a for a in fates if a is not None]
    assert arrivals == sorted(arrivals)
    assert max(b - a for a, b in itertools.pairwise(arrivals)) > 0  # and they are not all equal


def test_the_same_seed_gives_the_same_fates_and_another_seed_does_not() -> None:
    imp = Impairment(loss=3, jitter=20, latency=10)
    assert run_link(imp, 42) == run_link(imp, 42)
    assert run_link(imp, 42) != run_link(imp, 43)


def test_the_loss_pattern_does_not_depend_on_the_delays() -> None:
    lost_a = [a is None for a in run_link(Impairment(loss=7), 9)]
    lost_b = [a is None for a in run_link(Impairment(loss=7, jitter=50, latency=5), 9)]
    assert lost_a == lost_b


def test_no_impairment_delivers_every_frame_at_once() -> None:
    assert run_link(Impairment(), 1)[:3] == [0.0, 0.02, 0.04]
    assert not Impairment().active and Impairment(loss=1).active


def test_each_direction_and_call_draws_its_own_numbers() -> None:
    imp = Impairment(loss=50)
    up, down = links(imp, seed=5)
    pattern_up = [up.send(i).lost for i in range(200)]
    pattern_down = [down.send(i).lost for i in range(200)]
    assert pattern_up != pattern_down
    again_up, _ = links(imp, seed=5)
    assert [again_up.send(i).lost for i in range(200)] == pattern_up
    other_call, _ = links(imp, seed=5, call=1)
    assert [other_call.send(i).lost for i in range(200)] != pattern_up
    assert up.sent == 200 and 60 < up.lost < 140


@pytest.mark.parametrize(
    "kwargs",
    [{"loss": -1}, {"loss": 100.5}, {"jitter": float("nan")}, {"latency": float("inf")}],
)
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Impairment(**kwargs)
