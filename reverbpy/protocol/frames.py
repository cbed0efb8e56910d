"""Server-to-client WebSocket frames.

Server frames are never masked (RFC 6455 5.1), so one broadcast frame is the same bytes for
every subscriber: it is built once here and written as is to each transport.
"""

from __future__ import annotations

_TEXT_FIN = 0x81


def text_frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((_TEXT_FIN, n)) + payload
    if n < 65_536:
        return bytes((_TEXT_FIN, 126)) + n.to_bytes(2, "big") + payload
    return bytes((_TEXT_FIN, 127)) + n.to_bytes(8, "big") + payload
