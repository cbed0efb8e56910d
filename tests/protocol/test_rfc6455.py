"""The RFC 6455 state machine with no socket and no event loop: bytes in, events and bytes out."""

from __future__ import annotations

import pytest

from reverbpy.protocol.frames import Opcode, close_frame, control_frame
from reverbpy.protocol.rfc6455 import ServerProtocol, State
from tests.protocol.test_frames import client_frame

TEXT, BINARY, CLOSE, PING, PONG = Opcode.TEXT, Opcode.BINARY, Opcode.CLOSE, Opcode.PING, Opcode.PONG


def close_payload(code: int | None, reason: bytes = b"") -> bytes:
    return b"" if code is None else code.to_bytes(2, "big") + reason


def client_close(code: int | None, reason: bytes = b"") -> bytes:
    """A client's close frame; one with no code at all when ``code`` is None."""
    return client_frame(CLOSE, close_payload(code, reason))


def text(payload: bytes) -> bytes:
    return client_frame(TEXT, payload)


# --- OPEN -------------------------------------------------------------------------------------


def test_data_messages_are_events_and_nothing_is_sent() -> None:
    ws = ServerProtocol(100)
    data = text(b'{"a":1}') + client_frame(BINARY, b"\x00\xff") + text("é".encode())
    assert ws.receive_data(data) == [(TEXT, b'{"a":1}'), (BINARY, b"\x00\xff"), (TEXT, "é".encode())]
    assert ws.data_to_send() == b""
    assert (ws.state, ws.close_code, ws.error) == (State.OPEN, None, None)


def test_a_frame_in_pieces_is_an_event_once_whole() -> None:
    ws = ServerProtocol(100)
    data = text(b"hello")
    assert [ws.receive_data(data[i : i + 1]) for i in range(len(data))][-1] == [(TEXT, b"hello")]
    assert sum(len(ws.receive_data(data[i : i + 3])) for i in range(0, len(data), 3)) == 1


def test_a_ping_is_answered_and_reported() -> None:
    ws = ServerProtocol(100)
    assert ws.receive_data(client_frame(PING, b"abc")) == [(PING, b"abc")]
    assert ws.data_to_send() == control_frame(PONG, b"abc")
    assert ws.data_to_send() == b""  # handed over once


def test_a_pong_is_reported_and_not_answered() -> None:
    ws = ServerProtocol(100)
    assert ws.receive_data(client_frame(PONG, b"x")) == [(PONG, b"x")]
    assert ws.data_to_send() == b""


def test_a_ping_between_fragments_is_reported_first_and_answered() -> None:
    ws = ServerProtocol(1000)
    data = (
        client_frame(TEXT, b'{"ev', fin=False)
        + client_frame(PING, b"between")
        + client_frame(Opcode.CONTINUATION, b'ent":', fin=False)
        + client_frame(PING, b"again")
        + client_frame(Opcode.CONTINUATION, b'"x"}')
    )
    assert ws.receive_data(data) == [
        (PING, b"between"),
        (PING, b"again"),
        (TEXT, b'{"event":"x"}'),
    ]
    assert ws.data_to_send() == control_frame(PONG, b"between") + control_frame(PONG, b"again")
    assert ws.state is State.OPEN


# --- the client closes ------------------------------------------------------------------------


def test_the_clients_close_is_echoed_and_ends_the_handshake() -> None:
    ws = ServerProtocol(100)
    events = ws.receive_data(text(b"before") + client_close(4001, b"bye"))
    assert events == [(TEXT, b"before"), (CLOSE, close_payload(4001, b"bye"))]
    assert ws.data_to_send() == close_frame(4001, "bye")
    assert (ws.state, ws.close_code) == (State.CLOSED, 4001)


def test_a_close_without_a_code_is_recorded_as_1005_and_answered_with_1000() -> None:
    ws = ServerProtocol(100)
    assert ws.receive_data(client_close(None)) == [(CLOSE, b"")]
    assert ws.data_to_send() == close_frame(1000)  # 1005 must not be sent (RFC 6455 7.4.1)
    assert (ws.state, ws.close_code) == (State.CLOSED, 1005)


@pytest.mark.parametrize("code", [1000, 1001, 1011, 1012, 1013, 1014, 3000, 4999])
def test_registered_close_codes_are_echoed(code: int) -> None:
    # 1012-1014 (issue 13) were answered 1002; they are registered, and websockets accepts them.
    ws = ServerProtocol(100)
    assert ws.receive_data(client_close(code)) == [(CLOSE, close_payload(code))]
    assert ws.data_to_send() == close_frame(code)
    assert (ws.state, ws.close_code, ws.error) == (State.CLOSED, code, None)


def test_a_close_during_a_fragmented_message_drops_the_message() -> None:
    ws = ServerProtocol(100)
    data = client_frame(TEXT, b"half", fin=False) + client_close(1000)
    assert ws.receive_data(data) == [(CLOSE, close_payload(1000))]
    assert ws.data_to_send() == close_frame(1000)
    # The rest of the message never comes out, nor does anything else.
    assert ws.receive_data(client_frame(Opcode.CONTINUATION, b" more")) == []
    assert ws.state is State.CLOSED


def test_nothing_after_the_clients_close_is_read() -> None:
    ws = ServerProtocol(100)
    data = client_close(1000) + text(b"late") + client_frame(PING, b"p") + client_close(1001)
    assert ws.receive_data(data) == [(CLOSE, close_payload(1000))]
    assert ws.data_to_send() == close_frame(1000)  # one echo, no pong
    # A second close, data, or a broken frame in a later read: all ignored.
    later = client_close(1001) + text(b"later") + bytes((0x81, 0x01)) + b"x"
    assert ws.receive_data(later) == []
    assert ws.data_to_send() == b""
    assert (ws.state, ws.close_code, ws.error) == (State.CLOSED, 1000, None)


# --- the server closes ------------------------------------------------------------------------


def test_the_servers_close_then_the_clients_answer() -> None:
    ws = ServerProtocol(100)
    ws.send_close(4201, "Pong reply not received in time")
    assert ws.data_to_send() == close_frame(4201, "Pong reply not received in time")
    assert (ws.state, ws.close_code) == (State.CLOSING, 4201)
    # While the answer is awaited: data is ignored, pings are not answered, pongs not reported.
    data = text(b"late") + client_frame(PING, b"p") + client_frame(PONG, b"q")
    assert ws.receive_data(data) == []
    assert ws.data_to_send() == b""
    ws.send_close(4000, "again")  # a close frame is sent once
    assert ws.data_to_send() == b""
    assert ws.receive_data(text(b"more") + client_close(4201)) == [(CLOSE, close_payload(4201))]
    assert ws.data_to_send() == b""  # no echo: the client answered ours
    assert (ws.state, ws.close_code) == (State.CLOSED, 4201)


def test_the_clients_answer_does_not_change_the_recorded_code() -> None:
    ws = ServerProtocol(100)
    ws.send_close(4009, "Origin not allowed")
    ws.data_to_send()
    assert ws.receive_data(client_close(1000)) == [(CLOSE, close_payload(1000))]
    assert (ws.state, ws.close_code) == (State.CLOSED, 4009)


def test_send_close_after_the_clients_close_sends_nothing_more() -> None:
    ws = ServerProtocol(100)
    ws.receive_data(client_close(1001))
    ws.send_close(4200, "too late")
    assert ws.data_to_send() == close_frame(1001)  # the echo only
    assert ws.close_code == 1001


# --- protocol errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "code", "reason"),
    [
        (b"\x03", 1002, "Invalid close frame"),
        (close_payload(1005), 1002, "Invalid close code 1005"),
        (close_payload(1015), 1002, "Invalid close code 1015"),
        (close_payload(999), 1002, "Invalid close code 999"),
        (close_payload(1000, b"\xff"), 1007, "Invalid UTF-8 in close reason"),
    ],
)
def test_an_invalid_close_payload_fails_the_connection(
    payload: bytes, code: int, reason: str
) -> None:
    ws = ServerProtocol(100)
    assert ws.receive_data(text(b"ok") + client_frame(CLOSE, payload)) == [(TEXT, b"ok")]
    assert ws.data_to_send() == close_frame(code, reason)
    assert ws.error is not None and ws.error.code == code
    assert (ws.state, ws.close_code) == (State.CLOSED, code)


@pytest.mark.parametrize(
    ("bad", "code", "reason"),
    [
        (bytes((0x81, 0x02)) + b"{}", 1002, "Client frames must be masked"),
        (client_frame(TEXT, b"{}", rsv=0x40), 1002, "Reserved bits set"),
        (text(b'{"event":"\xff"}'), 1007, "Invalid UTF-8"),
        (
            client_frame(TEXT, b"\xc3", fin=False) + client_frame(Opcode.CONTINUATION, b"x"),
            1007,
            "Invalid UTF-8",
        ),
        (text(b"x" * 101), 1009, "Maximum message size exceeded"),
    ],
)
def test_a_broken_frame_fails_the_connection(bad: bytes, code: int, reason: str) -> None:
    ws = ServerProtocol(100)
    assert ws.receive_data(client_frame(PING, b"p") + text(b"ok") + bad + text(b"after")) == [
        (PING, b"p"),
        (TEXT, b"ok"),  # what was whole before the broken frame still counts
    ]
    assert ws.data_to_send() == control_frame(PONG, b"p") + close_frame(code, reason)
    assert (ws.state, ws.close_code) == (State.CLOSED, code)
    assert ws.receive_data(text(b"later") + client_close(1000)) == []  # discarded for good
    assert ws.data_to_send() == b""


def test_a_broken_frame_after_our_close_sends_no_second_frame() -> None:
    ws = ServerProtocol(100)
    ws.send_close(4201, "bye")
    ws.data_to_send()
    assert ws.receive_data(bytes((0x81, 0x02)) + b"{}") == []
    assert ws.data_to_send() == b""
    assert ws.error is not None and ws.error.code == 1002
    assert (ws.state, ws.close_code) == (State.CLOSED, 4201)


# --- the link goes ----------------------------------------------------------------------------


def test_a_lost_link_is_recorded_as_1006_unless_a_code_came_first() -> None:
    ws = ServerProtocol(100)
    ws.connection_lost()
    assert (ws.state, ws.close_code) == (State.CLOSED, 1006)
    ws.send_close(1000)
    assert ws.data_to_send() == b"" and ws.receive_data(text(b"x")) == []

    closing = ServerProtocol(100)
    closing.send_close(4201, "bye")
    closing.connection_lost()  # the answer never came
    assert (closing.state, closing.close_code) == (State.CLOSED, 4201)
    assert closing.data_to_send() == b""  # nothing can be sent any more

    answered = ServerProtocol(100)
    answered.receive_data(client_close(1001))
    answered.connection_lost()
    assert answered.close_code == 1001
