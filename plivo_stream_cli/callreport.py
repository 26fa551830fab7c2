"""What one simulated (or replayed) call did: the caller's report and its timeline.

Pure data: the simulator (`adapters.simulator`) fills a `CallReport` while the call runs;
`metrics` derives the latency figures from it, the commands render it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from plivo_stream_cli.formats import MediaFormat

POLICY_VIOLATION = 1008


@dataclass
class TimedEvent:
    t: float  # seconds since the call started (monotonic)
    kind: str
    detail: str = ""
    nbytes: int = 0


@dataclass
class CallReport:
    """What happened during one simulated call; times are seconds since the stream opened."""

    call_id: str
    stream_id: str
    media_format: MediaFormat
    speed: float = 1.0
    frames_sent: int = 0
    bytes_sent: int = 0
    dtmf_sent: list[str] = field(default_factory=list)
    received_audio: bytearray = field(default_factory=bytearray)  # every playAudio payload
    played_audio: bytearray = field(default_factory=bytearray)  # what the caller "heard"
    play_messages: int = 0
    checkpoints_received: list[str] = field(default_factory=list)
    checkpoints_confirmed: list[str] = field(default_factory=list)
    clears: int = 0
    violations: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    closed_by_server: bool = False
    # When the caller's last speech frame was sent (a frame is sent as its 20 ms of audio ends,
    # as Plivo does), or the last frame of audio that holds no speech; barge-in audio excluded.
    speech_end: float | None = None
    barge_in_at: float | None = None  # the barge-in asked for (seconds into the reply)
    barge_in_started: float | None = None  # when the first barge-in frame was sent
    barge_in_ended: float | None = None  # when the last one was
    timeline: list[TimedEvent] = field(default_factory=list)
    duration: float = 0.0
    connect_s: float | None = None  # the WebSocket's opening handshake, when the simulator timed it
    pacing_late_ms: list[float] = field(default_factory=list)  # each paced wake-up's lateness

    @property
    def received_seconds(self) -> float:
        return self.media_format.seconds(len(self.received_audio))

    @property
    def rejected(self) -> bool:
        return self.closed_by_server and self.close_code == POLICY_VIOLATION

    def times(self, kind: str) -> list[float]:
        return [e.t for e in self.timeline if e.kind == kind]
