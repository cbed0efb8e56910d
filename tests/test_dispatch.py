"""The outbound path with recording transports: one frame per broadcast, one write per socket."""

from __future__ import annotations

import asyncio
from typing import Any

from reverbpy.config import AppConfig, FixedApp, Secret
from reverbpy.connection import Connection, Sockets
from reverbpy.dispatch import FLUSH_SLICE, Outbox, broadcast
from reverbpy.protocol.frames import text_frame
from reverbpy.protocol.ratelimit import PerSecond
from reverbpy.protocol.session import Session
from reverbpy.registry import AppState

APP = AppConfig(id="1", key="k", secret=Secret("s"))


class RecordingTransport:
    """Records writes; ``buffered`` plays the bytes the kernel could not take."""

    def __init__(self, buffered: int = 0) -> None:
        self.writes: list[bytes] = []
        self.buffered = buffered
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.aborted

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def abort(self) -> None:
        self.aborted = True


def make_conn(outbox: Outbox, socket_id: str, transport: RecordingTransport) -> Connection:
    session = Session(FixedApp(APP), socket_id, lambda: 0.0)
    listener: Any = None
    t: Any = transport
    return Connection(socket_id, AppState(APP), t, outbox, session, listener, 0.0, sockets=Sockets())


async def test_frames_queued_in_one_iteration_go_out_in_one_write() -> None:
    outbox = Outbox(max_write_buffer=1 << 20)
    transports = [RecordingTransport() for _ in range(3)]
    conns = [make_conn(outbox, f"1.{i}", t) for i, t in enumerate(transports)]
    for n in range(5):
        assert broadcast(conns, f'{{"n":{n}}}'.encode(), except_socket_id="1.0") == 2
    assert all(t.writes == [] for t in transports)  # nothing before the loop turns
    await asyncio.sleep(0)
    assert transports[0].writes == []
    expected = b"".join(text_frame(f'{{"n":{n}}}'.encode()) for n in range(5))
    assert transports[1].writes == [expected]
    assert transports[2].writes == [expected]


async def test_broadcast_builds_the_frame_once() -> None:
    outbox = Outbox(max_write_buffer=1 << 20)
    conns = [make_conn(outbox, f"1.{i}", RecordingTransport()) for i in range(3)]
    broadcast(conns, b'{"x":1}')
    frames = [c._pending[0] for c in conns]
    assert all(f is frames[0] for f in frames)  # the same bytes object for everyone


async def test_slow_consumer_is_aborted_others_unaffected() -> None:
    outbox = Outbox(max_write_buffer=1000)
    slow_t, fast_t = RecordingTransport(buffered=5000), RecordingTransport()
    slow, fast = make_conn(outbox, "1.1", slow_t), make_conn(outbox, "1.2", fast_t)
    broadcast([slow, fast], b"{}")
    await asyncio.sleep(0)
    assert slow_t.aborted and slow.closed
    assert not fast_t.aborted and fast_t.writes == [text_frame(b"{}")]
    assert outbox.slow_consumers == 1
    broadcast([slow, fast], b"{}")  # a dropped socket gets nothing more
    await asyncio.sleep(0)
    assert len(fast_t.writes) == 2 and slow_t.writes == [text_frame(b"{}")]


async def test_a_large_flush_lets_the_loop_turn_between_slices() -> None:
    """A broadcast to more sockets than a slice is written over several loop turns, and what
    the loop does meanwhile (here, a callback standing for a read) runs before the last one."""
    outbox = Outbox(max_write_buffer=1 << 20)
    transports = [RecordingTransport() for _ in range(2 * FLUSH_SLICE + 1)]
    conns = [make_conn(outbox, f"1.{i}", t) for i, t in enumerate(transports)]
    broadcast(conns, b'{"n":0}')
    written_when_the_loop_turned: list[int] = []
    asyncio.get_running_loop().call_soon(
        lambda: written_when_the_loop_turned.append(sum(1 for t in transports if t.writes))
    )
    for _ in range(3):
        await asyncio.sleep(0)
    assert all(t.writes == [text_frame(b'{"n":0}')] for t in transports)
    assert 0 < written_when_the_loop_turned[0] < len(transports)


async def test_an_event_arriving_between_slices_joins_the_queued_frames_in_order() -> None:
    """A socket not yet written when a second event arrives gets both in one write; a socket
    already written gets the second in a write of its own. Every socket sees 0 then 1."""
    outbox = Outbox(max_write_buffer=1 << 20)
    transports = [RecordingTransport() for _ in range(FLUSH_SLICE + 10)]
    conns = [make_conn(outbox, f"1.{i}", t) for i, t in enumerate(transports)]
    broadcast(conns, b'{"n":0}')
    await asyncio.sleep(0)  # the first slice is written
    broadcast(conns, b'{"n":1}')
    for _ in range(3):
        await asyncio.sleep(0)
    first, second = text_frame(b'{"n":0}'), text_frame(b'{"n":1}')
    assert all(t.writes == [first, second] for t in transports[:FLUSH_SLICE])
    assert all(t.writes == [first + second] for t in transports[FLUSH_SLICE:])


def test_per_second_window() -> None:
    limit = PerSecond(3)
    assert [limit.allow(10.0) for _ in range(4)] == [True, True, True, False]
    assert not limit.allow(10.5, 1)
    assert limit.allow(11.0)
    assert not limit.allow(11.1, 3)  # a batch over the remainder is refused whole
    assert PerSecond(None).allow(0.0, 10**9)
