"""Media formats of Plivo Audio Streaming: the three supported encoding/rate pairs.

Pure. Converts between content types (`audio/x-mulaw;rate=8000`), the (encoding, sampleRate) pairs
that travel in events, and frame sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

MULAW = "audio/x-mulaw"
L16 = "audio/x-l16"
FRAME_MS = 20


class FormatError(ValueError):
    """A content type or encoding/rate pair that Plivo does not support."""


@dataclass(frozen=True, slots=True)
class MediaFormat:
    """One of the three formats Plivo streams: mu-law@8000, L16@8000, L16@16000."""

    encoding: str
    sample_rate: int

    def __post_init__(self) -> None:
        if (self.encoding, self.sample_rate) not in _SUPPORTED_PAIRS:
            raise FormatError(
                f"unsupported media format {self.encoding}@{self.sample_rate}; "
                f"use one of {', '.join(CONTENT_TYPES)}"
            )

    @property
    def content_type(self) -> str:
        """The XML/REST spelling, e.g. `audio/x-l16;rate=16000`."""
        return f"{self.encoding};rate={self.sample_rate}"

    @property
    def sample_width(self) -> int:
        """Bytes per sample on the wire: 1 for mu-law, 2 for L16."""
        return 1 if self.encoding == MULAW else 2

    @property
    def bytes_per_second(self) -> int:
        return self.sample_rate * self.sample_width

    def frame_bytes(self, ms: int = FRAME_MS) -> int:
        """Bytes in `ms` milliseconds of wire audio (160 for 20 ms of mu-law at 8 kHz)."""
        return self.bytes_per_second * ms // 1000

    def seconds(self, nbytes: int) -> float:
        """Duration of `nbytes` of wire audio."""
        return nbytes / self.bytes_per_second

    @classmethod
    def from_content_type(cls, content_type: str) -> MediaFormat:
        """Parse `audio/x-mulaw;rate=8000` (spaces and case tolerated; rate defaults to 8000)."""
        parts = [p.strip() for p in content_type.strip().lower().split(";") if p.strip()]
        if not parts:
            raise FormatError("empty content type")
        rate = 8000
        for param in parts[1:]:
            key, _, value = param.partition("=")
            if key.strip() == "rate":
                try:
                    rate = int(value.strip())
                except ValueError:
                    raise FormatError(f"bad rate in content type {content_type!r}") from None
        return cls(parts[0], rate)


_SUPPORTED_PAIRS = frozenset({(MULAW, 8000), (L16, 8000), (L16, 16000)})
MULAW_8K = MediaFormat(MULAW, 8000)
L16_8K = MediaFormat(L16, 8000)
L16_16K = MediaFormat(L16, 16000)
SUPPORTED_FORMATS = (MULAW_8K, L16_8K, L16_16K)
CONTENT_TYPES = tuple(f.content_type for f in SUPPORTED_FORMATS)
DEFAULT_FORMAT = MULAW_8K
