"""Replay protection for signed requests: remember recent signatures and refuse a second use.

Pure (no clock, no I/O: time is passed in). Plivo's V3 signature covers the URL, the form fields
and a random nonce, but no timestamp, so a captured request stays valid forever. `NonceCache`
remembers each accepted (nonce, signed request) for `window` seconds; the same one again within
the window is a replay. Memory is bounded by `max_entries`: when more distinct signatures arrive
within one window, the oldest are forgotten first (and `evicted` counts them).
"""

from __future__ import annotations

from collections import OrderedDict

DEFAULT_WINDOW = 300.0  # seconds
DEFAULT_MAX_ENTRIES = 100_000  # about 15 MB at worst


class NonceCache:
    """Signatures seen in the last `window` seconds, oldest first, at most `max_entries`."""

    def __init__(
        self, window: float = DEFAULT_WINDOW, max_entries: int = DEFAULT_MAX_ENTRIES
    ) -> None:
        if window <= 0:
            raise ValueError(f"replay window must be positive, got {window:g}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.window = window
        self.max_entries = max_entries
        self.evicted = 0  # entries forgotten early because the cache was full
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def first_seen(self, key: str, now: float) -> float | None:
        """Record `key` at `now`; return when it was first seen if that is within the window.

        A key seen before but longer ago than the window counts as new (and is re-armed).
        """
        self._expire(now)
        seen = self._seen.get(key)
        if seen is not None:
            return seen
        self._seen[key] = now
        if len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)
            self.evicted += 1
        return None

    def _expire(self, now: float) -> None:
        horizon = now - self.window
        while self._seen:
            oldest = next(iter(self._seen.values()))
            if oldest > horizon:
                return
            self._seen.popitem(last=False)


def replay_key(nonce: str, expected_signature: str) -> str:
    """What identifies one signed request: its nonce and the signature it must carry.

    The expected signature (not the header as sent) is used, so reordering or padding the
    comma-separated header does not make a replay look new.
    """
    return f"{nonce}\n{expected_signature}"
