"""The single path every outbound frame takes: per-socket queues flushed once per loop turn.

A broadcast encodes its JSON once and frames it once; per subscriber it costs a list append.
Frames queued for one socket during a loop iteration go out in a single ``transport.write``
(what uWebSockets calls corking), so a burst of events costs one syscall per socket, not one
per event. A socket whose kernel and transport buffers already hold more than
``max_write_buffer`` bytes is a slow consumer: its TCP connection is dropped rather than
buffered without bound (no close frame could get through a full buffer; pusher-js sees an
abnormal closure and reconnects), and nobody else waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from reverbpy.metrics import WIRE
from reverbpy.protocol.frames import text_frame

if TYPE_CHECKING:
    from reverbpy.connection import Connection

log = logging.getLogger("reverbpy.dispatch")


class Outbox:
    __slots__ = ("_dirty", "_scheduled", "max_write_buffer", "slow_consumers")

    def __init__(self, max_write_buffer: int) -> None:
        self._dirty: list[Connection] = []
        self._scheduled = False
        self.max_write_buffer = max_write_buffer
        self.slow_consumers = 0

    def mark(self, conn: Connection) -> None:
        """``conn`` has queued frames; flush it at the end of this loop iteration."""
        self._dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        limit = self.max_write_buffer
        for conn in dirty:
            if conn.flush() > limit:
                self.slow_consumers += 1
                log.warning("dropping slow consumer %s (%s)", conn.socket_id, conn.app.id)
                conn.abort()


def broadcast(
    subscribers: Iterable[Connection], payload: bytes, except_socket_id: str | None = None
) -> int:
    """Send one encoded event to many sockets; returns how many got it.

    The per-subscriber work is a list append (``Connection.queue`` inlined): the frame is
    built once, metrics are counted once, and the write happens in ``Outbox.flush``.
    """
    frame = text_frame(payload)
    sent = 0
    last: Connection | None = None
    for conn in subscribers:
        if conn.closed or conn.socket_id == except_socket_id:
            continue
        pending = conn._pending
        if not pending:
            conn._outbox.mark(conn)
        pending.append(frame)
        sent += 1
        last = conn
    if last is not None:
        WIRE.count_out(last.app.id, sent, sent * len(payload))
    WIRE.broadcast(sent)
    return sent
