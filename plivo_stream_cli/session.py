"""The per-stream state machines, sans-I/O in the style of python-websockets' `Protocol`.

`StreamSession` is the server's side of one stream: feed it each received text frame and get an
event back; ask it for `playAudio`/`checkpoint`/`clearAudio` and get the text to write. It tracks
state (awaiting start -> streaming -> stopped), the media format, sequence-number anomalies and
pending checkpoints. `PlaybackQueue` is Plivo's side of playback, used by the simulator: what has
been queued, which checkpoints become due as audio plays, and what `clearAudio` drops.

Pure: no sockets, clocks, files or asyncio. Time, where it matters, is passed in.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from plivo_stream_cli.events import (
    Checkpoint,
    ClearAudio,
    ClearedAudio,
    Dtmf,
    Event,
    Media,
    PlayAudio,
    PlayedStream,
    ProtocolError,
    Start,
    Stop,
    UnknownEvent,
    UnsupportedMedia,
    parse,
)
from plivo_stream_cli.formats import MediaFormat

SEEN_WINDOW = 1024  # sequence numbers remembered to tell duplicates from late arrivals (2**n)
_SEEN_MASK = SEEN_WINDOW - 1
# What a peer sends must not grow a stream's memory: collections keep counts and the last few
# items, and text from the peer is cut (DTMF "digits" and checkpoint names can be any string).
KEEP_DTMF = 64  # last digits kept (all are counted)
KEEP_CHECKPOINTS = 64  # last confirmed names kept (all are counted)
MAX_PENDING_CHECKPOINTS = 1000  # sent, unconfirmed: the oldest are forgotten past this
MAX_TRACKS = 8  # distinct track names counted apart; the rest under OTHER_TRACK
OTHER_TRACK = "(other)"
MAX_TEXT = 64  # characters kept of a digit, a name or a track from the peer


def _keep(items: list[str], item: str, most: int) -> None:
    """Append `item`, keeping only the last `most` items."""
    items.append(item)
    if len(items) > most:
        del items[0]


def cut(text: str, limit: int = MAX_TEXT) -> str:
    """`text` cut to `limit` characters (marked with an ellipsis) for keeping or showing."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


class SessionState(Enum):
    AWAITING_START = "awaiting start"
    STREAMING = "streaming"
    STOPPED = "stopped"


class SessionStateError(RuntimeError):
    """The caller asked the session for something its state does not allow (a local bug)."""


class StreamRefused(ProtocolError):
    """The stream cannot go on (its start names a format Plivo never sends): close it.

    Raised for the start itself (`first`) and, without counting an error again, for every
    frame after it, so the server says it once and closes.
    """

    def __init__(self, message: str, *, first: bool) -> None:
        super().__init__(message)
        self.first = first


# How a peer can depart from what Plivo sends while still being understood: said once per stream.
DEVIATIONS = {
    "seq": "no sequenceNumber (Plivo numbers every message): gaps cannot be counted",
    "chunk": "media without chunk (Plivo counts the chunks of each track)",
    "extra_headers": '{event} without extra_headers (Plivo always sends it, "" when empty)',
    "tracks": "start without tracks (Plivo lists the streamed tracks): none assumed",
    "account": "start without accountId (Plivo always sends the account)",
}


@dataclass
class SequenceTracker:
    """Classifies sequence numbers as in order, gap, duplicate or reordered (late).

    The last `SEEN_WINDOW` numbers (up to the highest) are remembered, one byte each in a ring,
    to tell a duplicate from a late arrival; an older number is taken as late. A ring, not a
    set: a frame is one byte written in place, and a stream's memory is a fixed 1 KB.
    """

    highest: int = 0
    gaps: int = 0  # messages found missing when a later number arrived
    duplicates: int = 0
    reorders: int = 0
    _seen: bytearray = field(default_factory=lambda: bytearray(SEEN_WINDOW))

    def observe(self, seq: int) -> str | None:
        """Record `seq`; return a note when it is out of the ordinary."""
        highest = self.highest
        if seq == highest + 1:  # the usual case, one per frame: in order, nothing to note
            self.highest = seq
            self._seen[seq & _SEEN_MASK] = 1  # the slot of seq - SEEN_WINDOW, forgotten now
            return None
        seen = self._seen
        if seq > highest:
            missing = seq - highest - 1 if highest else seq - 1
            self._forget(highest + 1, seq)
            self.highest = seq
            seen[seq & _SEEN_MASK] = 1
            if missing > 0:
                self.gaps += missing
                return f"sequence gap: {missing} missing before {seq}"
            return None
        remembered = highest - seq < SEEN_WINDOW
        if remembered and seen[seq & _SEEN_MASK]:
            self.duplicates += 1
            return f"duplicate sequence number {seq}"
        self.reorders += 1
        self.gaps = max(0, self.gaps - 1)
        if remembered:
            seen[seq & _SEEN_MASK] = 1
        return f"sequence number {seq} arrived late (after {self.highest})"

    def _forget(self, first: int, end: int) -> None:
        """Mark `first`..`end - 1` unseen: the slots now stand for them (at most the ring)."""
        count = min(end - first, SEEN_WINDOW)
        at = (end - count) & _SEEN_MASK
        head = min(count, SEEN_WINDOW - at)
        self._seen[at : at + head] = bytes(head)
        self._seen[: count - head] = bytes(count - head)


@dataclass
class SessionStats:
    """Counters the live view renders at a fixed rate (never per frame)."""

    messages: int = 0
    media_packets: int = 0
    media_bytes: dict[str, int] = field(default_factory=dict)  # at most MAX_TRACKS + 1 keys
    dtmf: list[str] = field(default_factory=list)  # the last KEEP_DTMF (a list: 56 bytes idle)
    dtmf_count: int = 0
    errors: int = 0
    unknown_events: int = 0
    play_messages: int = 0
    play_bytes: int = 0
    checkpoints_sent: int = 0
    checkpoints_confirmed: int = 0
    checkpoints_cleared: int = 0
    clears_sent: int = 0
    clears_confirmed: int = 0


class StreamSession:
    """The server's side of one stream. Not thread-safe; one per WebSocket connection."""

    def __init__(self) -> None:
        self.state = SessionState.AWAITING_START
        self.start: Start | None = None
        self.sequence = SequenceTracker()
        self.stats = SessionStats()
        self.pending_checkpoints: list[str] = []  # at most MAX_PENDING_CHECKPOINTS
        self.confirmed_checkpoints: list[str] = []  # the last KEEP_CHECKPOINTS
        self.notes: deque[str] = deque(maxlen=256)
        self.deviations: set[str] = set()  # kinds of departure from Plivo's protocol seen
        self.warnings: list[str] = []  # one line per new deviation, for the server to show
        self.refusal: str | None = None  # why the stream was refused (see StreamRefused)
        self._l16 = False  # the start's format has 2-byte samples (odd payloads are refused)

    # ------------------------------------------------------------ receiving

    @property
    def stream_id(self) -> str:
        return self.start.stream_id if self.start else ""

    @property
    def media_format(self) -> MediaFormat:
        if self.start is None:
            raise SessionStateError("no media format before the start event")
        return self.start.media_format

    @property
    def gaps(self) -> int | None:
        """Messages missing from the sequence, or None when no message carried a number."""
        return self.sequence.gaps if self.sequence.highest else None

    def receive(self, data: str | bytes) -> Event:
        """Parse and apply one received frame. Raises `ProtocolError` (counted) on bad input."""
        stats = self.stats
        stats.messages += 1
        if self.refusal is not None:
            raise StreamRefused(self.refusal, first=False)
        try:
            event = parse(data)
            if type(event) is Media and self.state is not SessionState.AWAITING_START:
                self._media(event)  # one per frame: spared `_apply`'s dispatch
            else:
                self._apply(event)
        except UnsupportedMedia as exc:
            stats.errors += 1
            if self.state is not SessionState.AWAITING_START:  # the stream's own format stands
                raise ProtocolError(
                    f"start: a second start event on the same stream ({exc})"
                ) from None
            self.refusal = f"{exc}: this stream cannot be decoded, closing it"
            raise StreamRefused(self.refusal, first=True) from None
        except ProtocolError:
            stats.errors += 1
            raise
        return event

    def _deviate(self, kind: str, text: str | None = None) -> None:
        if kind not in self.deviations:
            self.deviations.add(kind)
            self.warnings.append(f"not Plivo's protocol: {text or DEVIATIONS[kind]} (accepted)")

    def _check_shape(self, event: Start | Media | Dtmf) -> None:
        """Note once per stream each way `event` departs from what Plivo sends."""
        if event.sequence_number is None:
            self._deviate("seq")
        if event.extra_headers is None:
            self._deviate(
                f"extra_headers:{event.event}",
                DEVIATIONS["extra_headers"].format(event=event.event),
            )
        if isinstance(event, Media) and event.chunk is None:
            self._deviate("chunk")
        if isinstance(event, Start):
            if not event.tracks:
                self._deviate("tracks")
            if not event.account_id:
                self._deviate("account")
        for quirk in event.quirks:
            self._deviate(quirk, quirk)

    def _apply(self, event: Event) -> None:
        if isinstance(event, Media):
            self._require_streaming("media")
            self._media(event)
            return
        seq = getattr(event, "sequence_number", None)
        if isinstance(event, Start):
            self._start(event)
            self._check_shape(event)
        elif isinstance(event, Dtmf):
            self._require_streaming("dtmf")
            _keep(self.stats.dtmf, cut(event.digit), KEEP_DTMF)
            self.stats.dtmf_count += 1
            self._check_shape(event)
        elif isinstance(event, PlayedStream):
            self._played(event)
        elif isinstance(event, ClearedAudio):
            self.stats.clears_confirmed += 1
        elif isinstance(event, Stop):
            self.state = SessionState.STOPPED
        elif isinstance(event, UnknownEvent):
            self.stats.unknown_events += 1
            self.notes.append(f"unknown event {cut(event.name)!r} ignored")
        else:
            raise ProtocolError(f"event: {event.event!r} is sent by servers, not by Plivo")
        if seq is not None:
            note = self.sequence.observe(seq)
            if note:
                self.notes.append(note)

    def _start(self, event: Start) -> None:
        if self.state is not SessionState.AWAITING_START:
            raise ProtocolError("start: a second start event on the same stream")
        self.start = event
        self._l16 = event.media_format.sample_width == 2
        self.state = SessionState.STREAMING

    def _media(self, event: Media) -> None:
        """Count one media event of a started stream and observe its sequence number."""
        size = len(event.payload)
        if size & 1 and self._l16:
            raise ProtocolError(f"media.payload: odd length {size} for 16-bit L16")
        stats = self.stats
        stats.media_packets += 1
        by_track, track = stats.media_bytes, event.track
        count = by_track.get(track)
        if count is None:  # a new track name (rare): only so many are counted apart
            if len(by_track) >= MAX_TRACKS or len(track) > MAX_TEXT:
                track = OTHER_TRACK
            count = by_track.get(track, 0)
        by_track[track] = count + size
        seq = event.sequence_number
        if seq is None or event.chunk is None or event.extra_headers is None or event.quirks:
            self._check_shape(event)
        if seq is not None:
            note = self.sequence.observe(seq)
            if note:
                self.notes.append(note)

    def _played(self, event: PlayedStream) -> None:
        if event.name in self.pending_checkpoints:
            self.pending_checkpoints.remove(event.name)
        else:
            self.notes.append(f"playedStream for unknown checkpoint {cut(event.name)!r}")
        _keep(self.confirmed_checkpoints, cut(event.name), KEEP_CHECKPOINTS)
        self.stats.checkpoints_confirmed += 1

    def _require_streaming(self, what: str) -> None:
        if self.state is SessionState.AWAITING_START:
            raise ProtocolError(f"{what}: received before the start event")

    # ------------------------------------------------------------ sending

    def play_audio(self, payload: bytes) -> str:
        """The `playAudio` text for `payload` (wire audio in the stream's format)."""
        fmt = self._sendable("playAudio")
        self.stats.play_messages += 1
        self.stats.play_bytes += len(payload)
        return PlayAudio(fmt, payload).to_json()

    def checkpoint(self, name: str) -> str:
        """The `checkpoint` text; `name` becomes pending until `playedStream` confirms it."""
        self._sendable("checkpoint")
        self.pending_checkpoints.append(name)
        if len(self.pending_checkpoints) > MAX_PENDING_CHECKPOINTS:
            del self.pending_checkpoints[0]  # never confirmed so far: forgotten, still counted
        self.stats.checkpoints_sent += 1
        return Checkpoint(self.stream_id, name).to_json()

    def clear_audio(self) -> str:
        """The `clearAudio` text; pending checkpoints are cleared and will never be confirmed."""
        self._sendable("clearAudio")
        self.stats.checkpoints_cleared += len(self.pending_checkpoints)
        self.pending_checkpoints.clear()
        self.stats.clears_sent += 1
        return ClearAudio(self.stream_id).to_json()

    def _sendable(self, what: str) -> MediaFormat:
        if self.start is None:
            raise SessionStateError(f"cannot send {what} before the stream's start event")
        if self.state is SessionState.STOPPED:
            raise SessionStateError(f"cannot send {what}: the stream has stopped")
        return self.start.media_format

    def close(self) -> None:
        """The connection ended (with or without a stop event)."""
        self.state = SessionState.STOPPED


@dataclass
class _Queued:
    audio: bytes = b""
    checkpoint: str | None = None


class PlaybackQueue:
    """Plivo's playback queue, as the simulator models it.

    Audio and checkpoints are queued in order; `play(nbytes)` consumes audio at the caller's pace
    and returns the checkpoints whose preceding audio has now fully played; `clear()` drops
    everything, and cleared checkpoints are never confirmed.
    """

    def __init__(self) -> None:
        self._items: deque[_Queued] = deque()
        self.queued_bytes = 0

    def add_audio(self, audio: bytes) -> None:
        if audio:
            self._items.append(_Queued(audio=audio))
            self.queued_bytes += len(audio)

    def add_checkpoint(self, name: str) -> None:
        self._items.append(_Queued(checkpoint=name))

    def play(self, nbytes: int) -> tuple[bytes, list[str]]:
        """Consume up to `nbytes` of audio; return it and the checkpoints reached."""
        played = bytearray()
        reached = self._due()
        while self._items and len(played) < nbytes:
            head = self._items[0]
            take = head.audio[: nbytes - len(played)]
            played += take
            self.queued_bytes -= len(take)
            if len(take) == len(head.audio):
                self._items.popleft()
            else:
                self._items[0] = _Queued(audio=head.audio[len(take) :])
            reached += self._due()
        return bytes(played), reached

    def _due(self) -> list[str]:
        names = []
        while self._items and self._items[0].checkpoint is not None:
            name = self._items.popleft().checkpoint
            assert name is not None
            names.append(name)
        return names

    def clear(self) -> int:
        """Drop all queued audio and checkpoints; returns the bytes dropped."""
        dropped = self.queued_bytes
        self._items.clear()
        self.queued_bytes = 0
        return dropped

    def __len__(self) -> int:
        return len(self._items)
