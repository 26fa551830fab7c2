"""`FeedHub`: who gets which records, and the media-wanted signal `serve --workers` relies on."""

from __future__ import annotations

from plivo_stream_cli.adapters.feedhub import FeedHub
from plivo_stream_cli.feed import Record

MEDIA: Record = {"t": 1.0, "event": "media", "dir": "in", "stream": "s"}
REPLY_CHUNK: Record = {"t": 1.0, "event": "playAudio", "dir": "out", "continues": True}
START: Record = {"t": 1.0, "event": "start", "dir": "in", "stream": "s"}


def test_listeners_without_media_get_everything_else() -> None:
    hub = FeedHub()
    everything: list[Record] = []
    plain: list[Record] = []
    hub.subscribe(everything.append)
    hub.subscribe(plain.append, media=False)
    for record in (START, MEDIA, REPLY_CHUNK):
        hub.publish(record)
    assert everything == [START, MEDIA, REPLY_CHUNK]
    assert plain == [START]


def test_media_wanted_is_told_only_when_it_changes() -> None:
    hub = FeedHub()
    told: list[bool] = []
    hub.on_media_change = told.append
    hub.subscribe(lambda r: None, media=False)
    first = hub.subscribe(lambda r: None)
    second = hub.subscribe(lambda r: None)
    assert told == [True] and hub.media_listeners == 2
    first()
    first()  # a second unsubscribe is a no-op
    assert told == [True]
    second()
    assert told == [True, False] and hub.media_listeners == 0


def test_a_failing_listener_is_dropped_and_the_others_still_get_records() -> None:
    hub = FeedHub()
    got: list[Record] = []

    def broken(record: Record) -> None:
        raise RuntimeError("consumer bug")

    hub.subscribe(broken)
    hub.subscribe(got.append)
    hub.publish(START)
    hub.publish(MEDIA)
    assert got == [START, MEDIA] and broken not in hub.listeners
