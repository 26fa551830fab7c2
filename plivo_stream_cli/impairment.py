"""Seeded network impairment: which 20 ms frames are lost and how late the others arrive.

Pure: a `Link` is one direction of the call's network; it takes a `random.Random` (seed it for a
reproducible run) and decides, frame by frame in sending order, whether the frame is lost and
when it arrives. The stream rides on one TCP connection, so frames are never reordered: a frame
never arrives before the one sent before it (a late frame delays those behind it, as
head-of-line blocking does).

- `loss` — percent of frames lost (each independently).
- `latency` — milliseconds every frame is delayed.
- `jitter` — a further delay drawn uniformly from 0 to `jitter` ms, per frame.

Each decision consumes exactly two draws from the generator whatever the settings, so the loss
pattern of a seed stays the same when only the delays change.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

MAX_LOSS = 100.0
MAX_DELAY_MS = 10_000.0


@dataclass(frozen=True)
class Impairment:
    """What the network does to frames in one direction (`loss` in %, the rest in ms)."""

    loss: float = 0.0
    jitter: float = 0.0
    latency: float = 0.0

    def __post_init__(self) -> None:
        for name, high in (("loss", MAX_LOSS), ("jitter", MAX_DELAY_MS), ("latency", MAX_DELAY_MS)):
            value = getattr(self, name)
            if not math.isfinite(value) or not 0 <= value <= high:
                raise ValueError(f"{name} must be between 0 and {high:g}, got {value!r}")

    @property
    def active(self) -> bool:
        return bool(self.loss or self.jitter or self.latency)


@dataclass(frozen=True)
class Fate:
    """One frame's fate: `arrival` in seconds on the sender's clock, None when lost."""

    arrival: float | None

    @property
    def lost(self) -> bool:
        return self.arrival is None


class Link:
    """One direction of the network: decides each frame's fate, in sending order."""

    def __init__(self, impairment: Impairment, rng: random.Random) -> None:
        self.impairment = impairment
        self.rng = rng
        self._last_arrival = -math.inf
        self.sent = 0
        self.lost = 0

    def send(self, t: float, *, lossless: bool = False) -> Fate:
        """The fate of a frame sent at `t` seconds; `lossless` for signalling (delayed, in
        order, never lost: it rides on TCP)."""
        drop, spread = self.rng.random(), self.rng.random()
        self.sent += 1
        if not lossless and drop * 100 < self.impairment.loss:
            self.lost += 1
            return Fate(None)
        delay = (self.impairment.latency + spread * self.impairment.jitter) / 1000
        arrival = max(t + delay, self._last_arrival)
        self._last_arrival = arrival
        return Fate(arrival)


def links(impairment: Impairment, seed: int, call: int = 0) -> tuple[Link, Link]:
    """The (caller -> bot, bot -> caller) links of call number `call` of a run seeded `seed`:
    each direction and each call draws from its own generator, all derived from the seed."""
    up = random.Random(f"pstream:{seed}:{call}:up")
    down = random.Random(f"pstream:{seed}:{call}:down")
    return Link(impairment, up), Link(impairment, down)
