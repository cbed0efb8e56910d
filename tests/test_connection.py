"""The socket protocol with a recording transport: order, the closing handshake, failures."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from reverbpy.config import AppConfig, FixedApp, Secret
from reverbpy.connection import Connection, Pending, Sockets
from reverbpy.dispatch import Outbox
from reverbpy.protocol.frames import Opcode, close_frame, control_frame, parse_close
from reverbpy.protocol.session import Session
from reverbpy.registry import AppState
from tests.protocol.test_frames import client_frame

APP = AppConfig(id="1", key="k", secret=Secret("s"), max_message_size=100)


class Transport:
    """Records writes and the calls a protocol makes on its transport."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.reading = True
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    buffered = 0

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True


class Listener:
    """Records messages; a message ``wait`` makes the connection wait on ``gate``."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.gate = asyncio.Event()
        self.disconnected_calls = 0

    def message(self, conn: Connection, opcode: int, payload: bytes) -> Pending | None:
        self.seen.append(payload)
        if payload == b"wait":
            return self.gate.wait()  # type: ignore[return-value]
        if payload == b"raise":
            raise RuntimeError("a bug")
        if payload == b"close":
            conn.close(4009, "bye")
        if payload == b"wait-then-raise":
            return self._raise_later()
        return None

    async def _raise_later(self) -> None:
        await self.gate.wait()
        raise ConnectionError("Redis went away")

    def disconnected(self, conn: Connection) -> Pending | None:
        self.disconnected_calls += 1
        return None


def connect(outbox: Outbox | None = None) -> tuple[Connection, Transport, Listener]:
    transport, listener = Transport(), Listener()
    t: Any = transport
    session = Session(FixedApp(APP), "1.1", lambda: 0.0)
    conn = Connection(
        "1.1", AppState(APP), t, outbox or Outbox(1 << 20), session, listener, 0.0, sockets=Sockets()
    )
    conn.start()
    return conn, transport, listener


async def test_messages_wait_in_order_while_the_listener_waits() -> None:
    conn, transport, listener = connect()
    conn.data_received(client_frame(Opcode.TEXT, b"wait") + client_frame(Opcode.TEXT, b"a"))
    conn.data_received(client_frame(Opcode.TEXT, b"b"))
    assert listener.seen == [b"wait"]
    assert not transport.reading  # the client is held back, not buffered without bound
    listener.gate.set()
    for _ in range(3):
        await asyncio.sleep(0)
    assert listener.seen == [b"wait", b"a", b"b"]
    assert transport.reading


async def test_lost_while_waiting_is_reported_after_the_wait() -> None:
    conn, _transport, listener = connect()
    conn.data_received(client_frame(Opcode.TEXT, b"wait") + client_frame(Opcode.TEXT, b"a"))
    conn.connection_lost(None)
    assert listener.disconnected_calls == 0  # a join in flight must finish before the clean-up
    listener.gate.set()
    for _ in range(3):
        await asyncio.sleep(0)
    assert listener.disconnected_calls == 1 and listener.seen == [b"wait"]
    assert conn.close_code == 1006


async def test_ping_is_answered_and_marks_control_frame_clients() -> None:
    conn, transport, _listener = connect()
    conn.data_received(client_frame(Opcode.PING, b"abc"))
    await asyncio.sleep(0)
    assert transport.writes == [control_frame(Opcode.PONG, b"abc")]
    assert conn.uses_control_frames


async def test_a_client_that_pings_but_never_reads_is_a_slow_consumer() -> None:
    conn, transport, _listener = connect(Outbox(max_write_buffer=1000))
    transport.buffered = 5000  # what the kernel could not take
    conn.data_received(client_frame(Opcode.PING, b"x" * 100) * 20)
    await asyncio.sleep(0)
    assert transport.aborted and len(transport.writes) == 1  # 20 pongs, one write, then dropped


async def error_frames(transport: Transport) -> tuple[dict[str, Any], tuple[int, str]]:
    error, close = transport.writes[-2:]
    return orjson.loads(orjson.loads(error[2:])["data"]), parse_close(close[2:])


async def test_a_failing_handler_makes_the_client_reconnect() -> None:
    conn, transport, listener = connect()
    conn.data_received(client_frame(Opcode.TEXT, b"raise") + client_frame(Opcode.TEXT, b"after"))
    assert listener.seen == [b"raise"] and conn.closed
    assert await error_frames(transport) == (
        {"code": 4200, "message": "Internal server error"},
        (4200, "Internal server error"),
    )
    assert listener.disconnected_calls == 1


async def test_a_wait_that_fails_makes_the_client_reconnect() -> None:
    conn, transport, listener = connect()
    conn.data_received(
        client_frame(Opcode.TEXT, b"wait-then-raise") + client_frame(Opcode.TEXT, b"a")
    )
    listener.gate.set()
    for _ in range(3):
        await asyncio.sleep(0)
    assert listener.seen == [b"wait-then-raise"]  # what waited behind it is not handled
    assert (await error_frames(transport))[1][0] == 4200
    assert listener.disconnected_calls == 1


async def test_client_close_is_echoed_and_the_link_closed() -> None:
    conn, transport, _listener = connect()
    conn.send(b"{}")  # queued, not yet flushed: the leaving client does not get it
    conn.data_received(client_frame(Opcode.CLOSE, (4001).to_bytes(2, "big") + b"bye"))
    assert transport.writes == [close_frame(4001, "bye")]
    assert transport.closed and conn.closed and conn.close_code == 4001
    assert conn._close_timer is not None  # aborted later if the client never reads the answer


async def test_what_came_before_the_clients_close_in_one_read_is_handled() -> None:
    conn, transport, listener = connect()
    conn.data_received(
        client_frame(Opcode.TEXT, b"a")
        + client_frame(Opcode.PING, b"p")
        + client_frame(Opcode.CLOSE, (1001).to_bytes(2, "big"))
        + client_frame(Opcode.TEXT, b"after")  # past the close frame: not read
    )
    assert listener.seen == [b"a"] and listener.disconnected_calls == 1
    assert transport.writes == [control_frame(Opcode.PONG, b"p") + close_frame(1001)]
    assert transport.closed and conn.close_code == 1001


async def test_closing_on_a_message_read_with_the_clients_close_sends_one_close_frame() -> None:
    # A read is handled whole by the protocol (sans-I/O): the client's close at its end is
    # already answered when the listener closes on a message before it, as in websockets.
    conn, transport, listener = connect()
    conn.data_received(
        client_frame(Opcode.TEXT, b"close")
        + client_frame(Opcode.TEXT, b"a")
        + client_frame(Opcode.CLOSE, (1000).to_bytes(2, "big"))
    )
    assert listener.seen == [b"close"] and listener.disconnected_calls == 1
    assert transport.writes == [close_frame(1000)]
    assert transport.closed and conn.close_code == 1000


async def test_server_close_waits_for_the_answer_then_closes() -> None:
    conn, transport, listener = connect()
    conn.close(4201, "Pong reply not received in time")
    assert transport.writes[-1] == close_frame(4201, "Pong reply not received in time")
    assert not transport.closed
    assert listener.disconnected_calls == 1  # it leaves its channels without waiting
    conn.data_received(client_frame(Opcode.TEXT, b"late"))  # ignored after our close
    conn.data_received(client_frame(Opcode.CLOSE, (4201).to_bytes(2, "big")))
    assert transport.closed and listener.seen == []
    assert len(transport.writes) == 1  # no second close frame
    conn.connection_lost(None)
    assert conn.close_code == 4201 and listener.disconnected_calls == 1


async def test_oversized_message_gets_pusher_error_then_1009() -> None:
    conn, transport, listener = connect()
    conn.data_received(client_frame(Opcode.TEXT, b"ok") + client_frame(Opcode.TEXT, b"x" * 101))
    assert listener.seen == [b"ok"]  # what was whole before the bad frame still counts
    error, close = transport.writes
    message = orjson.loads(error[2:])
    assert message["event"] == "pusher:error"
    assert orjson.loads(message["data"]) == {
        "code": 4200,
        "message": "Maximum message size exceeded",
    }
    assert parse_close(close[2:]) == (1009, "Maximum message size exceeded")
    conn.data_received(client_frame(Opcode.TEXT, b"after"))  # discarded
    assert listener.seen == [b"ok"]


async def test_invalid_utf8_text_fails_with_1007() -> None:
    conn, transport, listener = connect()
    conn.data_received(client_frame(Opcode.TEXT, b"\xff\xfe"))
    assert listener.seen == []
    assert parse_close(transport.writes[-1][2:])[0] == 1007


async def test_eager_sockets_finish_what_does_not_wait_without_a_task() -> None:
    sockets = Sockets(eager=True)
    done: list[str] = []

    async def quick() -> None:
        done.append("quick")

    assert sockets.run(quick()) is None and done == ["quick"] and not sockets.tasks

    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def waits() -> None:
        done.append(f"got {await gate}")
        await asyncio.sleep(0)
        done.append("after")

    task = sockets.run(waits())
    assert task is not None and sockets.tasks == {task}
    gate.set_result(7)
    await task
    assert done == ["quick", "got 7", "after"] and not sockets.tasks

    async def fails() -> None:
        raise ValueError("bad")

    with pytest.raises(ValueError):
        sockets.run(fails())

    cancelled: list[bool] = []

    async def cancellable() -> None:
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    task = sockets.run(cancellable())
    assert task is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled == [True]
