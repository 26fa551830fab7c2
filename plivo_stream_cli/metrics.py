"""What a simulated call measured: the summary `simulate` prints, and the latency metrics.

Pure: works on a `CallReport`'s timeline (seconds since the call began), never on sockets.
"""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = 1


def summarize(report: Any) -> dict[str, Any]:
    """The summary of one call as a JSON-ready dict (`--json` prints it as is)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "call_id": report.call_id,
        "stream_id": report.stream_id,
        "content_type": report.media_format.content_type,
        "frames_sent": report.frames_sent,
        "bytes_sent": report.bytes_sent,
        "dtmf_sent": "".join(report.dtmf_sent),
        "play_messages": report.play_messages,
        "audio_received_s": round(report.received_seconds, 3),
        "checkpoints_received": report.checkpoints_received,
        "checkpoints_confirmed": report.checkpoints_confirmed,
        "clears": report.clears,
        "close_code": report.close_code,
        "close_reason": report.close_reason,
        "violations": report.violations,
        "warnings": report.warnings,
        "duration_s": round(report.duration, 3),
    }
