"""RFC 6455 framing, without I/O: the handshake answer, server frames and a client-frame reader.

Server frames are never masked (RFC 6455 5.1), so one broadcast frame is the same bytes for
every subscriber: it is built once here and written as is to each transport.

reverbpy reads client frames itself rather than through aiohttp's ``WebSocketResponse``:
after the upgrade a socket is a transport plus one small ``Connection`` and its
``rfc6455.ServerProtocol`` (this module's ``FrameReader`` plus the RFC's states), not a
request, a parser, a reader queue and a task waiting on it (see ``bench/RESULTS.md``, memory
per socket). Permessage-deflate is never negotiated, so RSV bits are always an error.
"""

from __future__ import annotations

import binascii
import codecs
import hashlib
from enum import IntEnum
from typing import Final

_TEXT_FIN = 0x81
FRAME_COST: Final = 64
"""What each fragment of a message costs besides its payload (a bytes object and a list slot,
rounded up): a message may have ``max(16, max_size // FRAME_COST)`` fragments (156 at the
default 10,000), so it cannot be split into unboundedly many (even empty) ones. The payload
limit itself does not depend on fragmentation: ``max_size`` bytes pass in one frame or in as
many fragments as that, whatever their sizes."""
MIN_FRAGMENTS: Final = 16
_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Opcode(IntEnum):
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    NO_STATUS = 1005
    ABNORMAL = 1006
    INVALID_DATA = 1007
    MESSAGE_TOO_BIG = 1009


class FrameError(Exception):
    """The client broke RFC 6455: close with ``code`` (1002, 1007 or 1009)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key`` (RFC 6455 4.2.2)."""
    return _accept(key.encode()).decode()


def _accept(key: bytes) -> bytes:
    return binascii.b2a_base64(hashlib.sha1(key + _GUID).digest(), newline=False)


def valid_key(key: str | bytes | None) -> bool:
    """A ``Sec-WebSocket-Key`` must be 16 random bytes, base64-encoded (RFC 6455 4.1).
    (``binascii``'s strict mode checks the alphabet and padding in C, where ``b64decode``'s
    ``validate`` runs a regex first.)"""
    if not key or len(key) != 24:
        return False
    try:
        return len(binascii.a2b_base64(key, strict_mode=True)) == 16
    except (binascii.Error, ValueError):
        return False


_SWITCHING = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: "
)


def handshake_response(key: str) -> bytes:
    return _SWITCHING + _accept(key.encode()) + b"\r\n\r\n"


def text_frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((_TEXT_FIN, n)) + payload
    if n < 65_536:
        return bytes((_TEXT_FIN, 126)) + n.to_bytes(2, "big") + payload
    return bytes((_TEXT_FIN, 127)) + n.to_bytes(8, "big") + payload


def control_frame(opcode: Opcode, payload: bytes = b"") -> bytes:
    """A ping, pong or close frame: control payloads are at most 125 bytes (RFC 6455 5.5)."""
    payload = payload[:125]
    return bytes((0x80 | opcode, len(payload))) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame; the reason is cut to fit 123 bytes without splitting a character."""
    data = reason.encode()[:123].decode("utf-8", "ignore").encode()
    return control_frame(Opcode.CLOSE, code.to_bytes(2, "big") + data)


def unmask(mask: bytes, data: bytes) -> bytes:
    """XOR the payload with the client's 4-byte key, as one big-integer operation."""
    n = len(data)
    if not n:
        return data
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


# The codes a peer may send: RFC 6455 7.4.1 and the IANA registry (1012 service restart, 1013
# try again later, 1014 bad gateway); 1004-1006 and 1015 are reserved, 3000-4999 are for
# libraries and applications (Pusher's 4xxx among them).
_PEER_CLOSE_CODES: Final = frozenset(
    (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014)
)


def _valid_close_code(code: int) -> bool:
    return code in _PEER_CLOSE_CODES or 3000 <= code <= 4999


def parse_close(payload: bytes) -> tuple[int, str]:
    """The code and reason of a client's close frame (1005 when it gave none)."""
    if not payload:
        return CloseCode.NO_STATUS, ""
    if len(payload) == 1:
        raise FrameError(CloseCode.PROTOCOL_ERROR, "Invalid close frame")
    code = int.from_bytes(payload[:2], "big")
    if not _valid_close_code(code):
        raise FrameError(CloseCode.PROTOCOL_ERROR, f"Invalid close code {code}")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        raise FrameError(CloseCode.INVALID_DATA, "Invalid UTF-8 in close reason") from None
    return code, reason


class FrameReader:
    """Turns the bytes a client sends into whole messages: ``(opcode, payload)`` pairs.

    Data messages come out reassembled and unmasked, text ones checked to be UTF-8 (RFC 6455
    8.1: 1007 otherwise); control frames come out as they arrive, even between the fragments
    of a data message, through ``_control``, which ``rfc6455.ServerProtocol`` overrides to
    apply the RFC's rules to them in order. ``max_size`` bounds a message before its bytes
    are buffered, so a client cannot make the server hold more than that per socket.
    """

    __slots__ = (
        "_buffer",
        "_fragments",
        "_opcode",
        "_overhead",
        "_size",
        "_utf8",
        "error",
        "max_size",
    )

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.error: FrameError | None = None
        self._buffer = b""
        self._fragments: list[bytes] | None = None
        self._size = 0  # payload bytes of the fragments so far
        self._overhead = 0  # FRAME_COST per fragment so far
        self._opcode = 0
        # While a text message comes in fragments: its incremental decoder, so invalid UTF-8
        # fails at the fragment that holds it (Autobahn 6.x "fail fast", as websockets does).
        self._utf8: codecs.BufferedIncrementalDecoder | None = None

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """The messages completed by ``data``. After a broken frame, ``error`` is set and the
        messages before it are still returned: what the server accepted is not lost."""
        if self.error is not None:
            return []
        messages: list[tuple[int, bytes]] = []
        try:
            self._parse(data, messages)
        except FrameError as exc:
            self._broken(exc)
        return messages

    def _broken(self, error: FrameError) -> None:
        """Nothing more is read: what is buffered is dropped."""
        self.error = error
        self._buffer = b""
        self._fragments = None
        self._utf8 = None
        self._size = self._overhead = 0

    def _parse(self, data: bytes, messages: list[tuple[int, bytes]]) -> None:
        """Append the messages ``data`` completes; raise ``FrameError`` at a broken frame."""
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        end = len(data)
        pos = 0
        while end - pos >= 2:
            first = data[pos]
            second = data[pos + 1]
            if first & 0x70:
                raise FrameError(CloseCode.PROTOCOL_ERROR, "Reserved bits set")
            if not second & 0x80:
                raise FrameError(CloseCode.PROTOCOL_ERROR, "Client frames must be masked")
            opcode = first & 0x0F
            length = second & 0x7F
            start = pos + 6
            if length == 126:
                if end - pos < 4:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
                start = pos + 8
            elif length == 127:
                if end - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                start = pos + 14
            if opcode >= 0x8:
                if opcode > 0xA:
                    raise FrameError(CloseCode.PROTOCOL_ERROR, f"Unknown opcode {opcode}")
                if not first & 0x80 or length > 125:
                    raise FrameError(CloseCode.PROTOCOL_ERROR, "Invalid control frame")
            elif opcode > 0x2:
                raise FrameError(CloseCode.PROTOCOL_ERROR, f"Unknown opcode {opcode}")
            elif length + self._size > self.max_size:
                raise FrameError(CloseCode.MESSAGE_TOO_BIG, "Maximum message size exceeded")
            if end - start < length:
                break
            payload = unmask(data[start - 4 : start], data[start : start + length])
            pos = start + length
            if opcode >= 0x8:
                if not self._control(opcode, payload, messages):
                    return  # nothing after this frame is read
            elif opcode == 0x0:
                if self._fragments is None:
                    raise FrameError(CloseCode.PROTOCOL_ERROR, "Unexpected continuation frame")
                self._overhead += FRAME_COST
                if self._overhead > max(self.max_size, MIN_FRAGMENTS * FRAME_COST):
                    raise FrameError(CloseCode.MESSAGE_TOO_BIG, "Too many fragments")
                self._fragments.append(payload)
                self._size += length
                if self._utf8 is not None:
                    _check_utf8_fragment(self._utf8, payload, bool(first & 0x80))
                if first & 0x80:
                    messages.append((self._opcode, b"".join(self._fragments)))
                    self._fragments = None
                    self._utf8 = None
                    self._size = self._overhead = 0
            elif self._fragments is not None:
                raise FrameError(CloseCode.PROTOCOL_ERROR, "Expected a continuation frame")
            elif first & 0x80:
                if opcode == 0x1 and not payload.isascii():
                    _check_utf8(payload)
                messages.append((opcode, payload))
            else:
                self._opcode = opcode
                self._fragments = [payload]
                self._size = length
                self._overhead = FRAME_COST
                if opcode == 0x1:
                    self._utf8 = _UTF8()
                    _check_utf8_fragment(self._utf8, payload, False)
        if pos < end:
            self._buffer = data[pos:]

    def _control(self, opcode: int, payload: bytes, messages: list[tuple[int, bytes]]) -> bool:
        """A ping, pong or close frame, in the order it came; ``False`` stops reading."""
        messages.append((opcode, payload))
        return True


_UTF8 = codecs.getincrementaldecoder("utf-8")


def _check_utf8_fragment(
    decoder: codecs.BufferedIncrementalDecoder, payload: bytes, final: bool
) -> None:
    try:
        decoder.decode(payload, final)
    except UnicodeDecodeError:
        raise FrameError(CloseCode.INVALID_DATA, "Invalid UTF-8") from None


def _check_utf8(payload: bytes) -> None:
    try:
        payload.decode()
    except UnicodeDecodeError:
        raise FrameError(CloseCode.INVALID_DATA, "Invalid UTF-8") from None
