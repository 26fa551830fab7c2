"""The feed hub: who listens to a serve's feed records, and handing each record to them.

Every stream, the HTTP routes and the control channel publish here; the live view, `--json`,
control-channel monitors and `serve --workers` relays subscribe.
"""

from __future__ import annotations

from collections.abc import Callable

from plivo_stream_cli.feed import Record

Listener = Callable[[Record], None]


class FeedHub:
    """Listeners of the feed, and `publish` to reach them all."""

    def __init__(self) -> None:
        self.listeners: list[Listener] = []
        self._listening: tuple[Listener, ...] = ()  # `listeners` as of its last change
        self.media_listeners = 0  # listeners that want per-frame media records
        # Told when media records start or stop being wanted (`serve --workers` tells its
        # workers, which then build and relay them only while someone listens).
        self.on_media_change: Callable[[bool], None] | None = None

    def subscribe(self, listener: Listener, *, media: bool = True) -> Callable[[], None]:
        """Receive every feed record (media too unless `media=False`); returns an unsubscribe."""
        entry = listener if media else _without_media(listener)
        self.listeners.append(entry)
        self._listening = tuple(self.listeners)
        if media:
            self._count_media(+1)

        def unsubscribe() -> None:
            if entry in self.listeners:
                self.listeners.remove(entry)
                self._listening = tuple(self.listeners)
                if media:
                    self._count_media(-1)

        return unsubscribe

    def _count_media(self, change: int) -> None:
        before = self.media_listeners
        self.media_listeners += change
        if (before == 0) != (self.media_listeners == 0) and self.on_media_change is not None:
            self.on_media_change(self.media_listeners > 0)

    def publish(self, record: Record) -> None:
        # A snapshot, not a copy per record: a listener may unsubscribe while it is called.
        for listener in self._listening:
            try:
                listener(record)
            except Exception:  # a broken consumer must never hurt the stream
                if listener in self.listeners:
                    self.listeners.remove(listener)
                    self._listening = tuple(self.listeners)


def _without_media(listener: Listener) -> Listener:
    def filtered(record: Record) -> None:
        # per-frame records: the caller's media, and the tap's chunks that continue a reply
        if (record.get("event") != "media" or record.get("dir") != "in") and not record.get(
            "continues"
        ):
            listener(record)

    return filtered
