"""The RFC 6455 side of one client socket, without I/O: bytes in, events and bytes out.

``ServerProtocol`` holds all of a socket's WebSocket state, as python-websockets' sans-I/O
``protocol.py`` does. ``connection.Connection`` feeds it what the transport read
(``receive_data``), writes what it asks for (``data_to_send``), and tells it when the server
closes (``send_close``) and when the link is gone (``connection_lost``). It knows nothing of
asyncio, transports or Pusher: the ``pusher:error`` sent before a 1009 close, for one, is the
``Connection``'s business.

It is the socket's ``FrameReader`` too: a subclass rather than a second object, because
memory per socket is counted in bytes. ``receive_data`` runs the reader's loop (the inherited
``feed`` would bypass the states), which hands control frames back in the order they came
(``_control``), between the fragments of a message included.

Events are the reader's ``(opcode, payload)`` pairs, so a data message costs no object beyond
its tuple:

- ``TEXT`` or ``BINARY``: a whole data message, unmasked; text is valid UTF-8.
- ``PING``: already answered (the pong is in ``data_to_send()``). ``PONG``: only reported.
- ``CLOSE``: the client's close frame, payload as sent; the closing handshake is over.

A broken frame is not an event: ``error`` is set, and our close frame is in ``data_to_send()``.

Every transition (there is no CONNECTING state: the upgrade is answered before this object
exists, and CLOSED means there is nothing left to read or send, TCP still open or not)::

    what happens             OPEN                          CLOSING           CLOSED
    data, ping, pong frame   reported (a ping answered)    ignored           ignored
    the client's close       echoed (1005 as 1000),        -> CLOSED         ignored
                             -> CLOSED
    a broken frame or an     our close frame with the      -> CLOSED         ignored
    invalid close payload    code (1002, 1007, 1009),      (no 2nd frame)
                             -> CLOSED
    send_close(code)         our close frame, -> CLOSING   nothing           nothing
    connection_lost()        -> CLOSED (1006)              -> CLOSED         nothing

``close_code`` is recorded once, by the first of: our close, the client's (1005 when it gave
no code), the error's, 1006 for a link lost before any of those.
"""

from __future__ import annotations

from enum import Enum
from typing import TypeAlias

from reverbpy.protocol.frames import (
    CloseCode,
    FrameError,
    FrameReader,
    Opcode,
    close_frame,
    control_frame,
    parse_close,
)

Event: TypeAlias = tuple[int, bytes]


class State(Enum):
    OPEN = 1
    CLOSING = 2  # our close frame is sent; the client's answer is awaited
    CLOSED = 3


# The states as module names too, used everywhere: on Python 3.11 each ``State.X`` is a slow
# lookup (``EnumType`` has a ``__getattr__``), some 150 ns, and the state is read on every
# read from the socket.
OPEN, CLOSING, CLOSED = State.OPEN, State.CLOSING, State.CLOSED


class ServerProtocol(FrameReader):
    """One socket's WebSocket state: see the module docstring for its events and transitions."""

    __slots__ = ("_out", "close_code", "state")

    def __init__(self, max_size: int) -> None:
        super().__init__(max_size)
        self.state = OPEN
        self.close_code: int | None = None
        self._out = b""

    def receive_data(self, data: bytes) -> list[Event]:
        """The events ``data`` completes, in order. After a broken frame, the events before it
        are still returned (what the server accepted is not lost) and ``error`` is set."""
        state = self.state
        if state is CLOSED:
            return []
        events: list[Event] = []
        try:
            self._parse(data, events)  # FrameReader's loop, not ``feed``: one call per read
        except FrameError as error:
            self._fail(error)
        if state is CLOSING:  # after our close frame, only the client's answer counts
            return [event for event in events if event[0] == Opcode.CLOSE]
        return events

    def data_to_send(self) -> bytes:
        """What to write now (pongs, close frames), in order; empty when there is nothing."""
        out, self._out = self._out, b""
        return out

    def send_close(self, code: int, reason: str = "") -> None:
        """Start the closing handshake, unless a close frame was sent or received already."""
        if self.state is not OPEN:
            return
        self._out += close_frame(code, reason)
        self._leave(CLOSING, code)

    def connection_lost(self) -> None:
        """The TCP connection is gone, closed by either side or dropped."""
        self._out = b""
        self._leave(CLOSED, CloseCode.ABNORMAL)

    # --- called by FrameReader's parse loop and by receive_data ----------------------------

    def _control(self, opcode: int, payload: bytes, messages: list[Event]) -> bool:
        if opcode == Opcode.CLOSE:
            self._receive_close(payload)
            messages.append((opcode, payload))
            return False  # nothing the client sends after its close frame is read
        if self.state is OPEN:  # after our close frame, pings are not answered
            if opcode == Opcode.PING:
                self._out += control_frame(Opcode.PONG, payload)
            messages.append((opcode, payload))
        return True

    def _receive_close(self, payload: bytes) -> None:
        code, reason = parse_close(payload)  # a FrameError fails the connection: 1002 or 1007
        if self.state is OPEN:  # the client started the closing handshake: answer it
            echo = CloseCode.NORMAL if code == CloseCode.NO_STATUS else code
            self._out += close_frame(echo, reason)
        self._leave(CLOSED, code)

    def _fail(self, error: FrameError) -> None:
        """RFC 6455 7.1.7: close with the error's code, unless our close frame is sent."""
        self._broken(error)
        if self.state is OPEN:
            self._out += close_frame(error.code, error.reason)
        self._leave(CLOSED, error.code)

    def _leave(self, state: State, code: int) -> None:
        """Every state change ends here; the first code is the one recorded."""
        if self.close_code is None:
            self.close_code = code
        self.state = state
        if state is CLOSED:
            self._fragments = None  # a message cut short by a close frame is dropped
