"""A client's WebSocket frames on the wire: the complete text frames at the front of a buffer.

The stream server reads the common case itself (see `server.py`): a 20 ms media event is one
small text frame, and a general WebSocket parser spends more time on it than pstream spends on
the event. `scan_text_frames` handles only *simple* frames: final (FIN), text, masked (as a
client's must be), no RSV bits (so no extension is involved), a 7- or 16-bit length no larger
than the limit, and a payload that is valid UTF-8. It stops at the first frame that is anything
else (control frames, binary, fragments, 64-bit lengths, oversize, bad UTF-8) and says so, so the
caller can hand the rest of the stream to a full implementation, which applies every check of
RFC 6455 to it. A frame is never half consumed: the scan stops at frame boundaries only.
"""

from __future__ import annotations

from collections.abc import Callable

Unmask = Callable[[bytes, bytes], bytes]
"""XOR a payload with its 4-byte masking key (websockets' `apply_mask`, C when built)."""

_FIN_TEXT = 0x81  # FIN set, RSV1-3 clear, opcode 1 (text)
_MASKED = 0x80
_LENGTH_16 = 126


def scan_text_frames(
    buf: bytes, limit: int, unmask: Unmask, emit: Callable[[str], None]
) -> tuple[int, bool]:
    """Pass the text of each simple frame at the front of `buf` to `emit`, in order.

    Returns `(used, other)`: `buf[:used]` held exactly the frames emitted; `other` is true when
    a frame that is not simple starts at `used`, false when `buf[used:]` is the start of a
    simple frame that is not complete yet (or nothing).
    """
    pos = 0
    size = len(buf)
    while size - pos >= 2:
        head2 = buf[pos + 1]
        if buf[pos] != _FIN_TEXT or head2 < _MASKED:
            return pos, True
        length = head2 & 0x7F
        if length < _LENGTH_16:
            start = pos + 6
        elif length == _LENGTH_16:
            if size - pos < 4:
                return pos, False
            length = (buf[pos + 2] << 8) | buf[pos + 3]
            start = pos + 8
        else:  # 64-bit lengths: far beyond an event; the full parser applies its limits
            return pos, True
        if length > limit:
            return pos, True
        end = start + length
        if end > size:
            return pos, False
        try:
            text = str(unmask(buf[start:end], buf[start - 4 : start]), "utf-8")
        except UnicodeDecodeError:
            return pos, True
        emit(text)
        pos = end
    return pos, False
