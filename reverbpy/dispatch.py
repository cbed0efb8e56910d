"""The single path every outbound frame takes: per-socket queues flushed as the loop turns.

A broadcast encodes its JSON once and frames it once; per subscriber it costs a list append.
Frames queued for one socket before its turn to be written go out in a single
``transport.write`` (what uWebSockets calls corking), so a burst of events costs one syscall
per socket, not one per event; the flush is sliced (``Outbox.flush``), so a busy server
corks more, not less. A socket whose kernel and transport buffers already hold more than
``max_write_buffer`` bytes is a slow consumer: its TCP connection is dropped rather than
buffered without bound (no close frame could get through a full buffer; pusher-js sees an
abnormal closure and reconnects), and nobody else waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from reverbpy.config import AppConfig, AppSource
from reverbpy.protocol import messages
from reverbpy.protocol.frames import text_frame
from reverbpy.protocol.session import Session
from reverbpy.wire import WIRE

log = logging.getLogger("reverbpy.dispatch")


class Peer:
    """The outbound half of a socket: what fan-out, the registry and the hub know of it.

    Frames are queued here and written by the transport (``connection.Connection``, which is
    a ``Peer``) when the ``Outbox`` flushes. Everything above the transport layer holds
    sockets as ``Peer``s, so the Pusher rules never see a transport, and a test can stand in
    for a socket with a recording subclass.
    """

    __slots__ = (
        "_outbox",
        "_pending",
        "_source",
        "app_id",
        "closed",
        "connected_at",
        "last_seen",
        "pinged_at",
        "session",
        "socket_id",
    )

    def __init__(
        self, socket_id: str, source: AppSource, session: Session, outbox: Outbox, now: float
    ) -> None:
        self.socket_id = socket_id
        self._source = source
        self.app_id = source.app.id
        """An app's id never changes (a reload keeps the state of the ids that stay)."""
        self.session = session
        self._outbox = outbox
        self._pending: list[bytes] = []
        self.closed = False
        self.last_seen = now
        self.connected_at = now
        self.pinged_at: float | None = None

    @property
    def app(self) -> AppConfig:
        """The app's current settings (read through its source: a reload applies at once)."""
        return self._source.app

    def queue(self, frame: bytes) -> None:
        """Queue a complete WebSocket frame (see ``broadcast``)."""
        if self.closed:
            return
        if not self._pending:
            self._outbox.mark(self)
        self._pending.append(frame)

    def send(self, payload: bytes) -> None:
        """Queue one JSON message for this socket only."""
        WIRE.count_out(self.app_id, 1, len(payload))
        self.queue(text_frame(payload))

    def fail(self, code: int, reason: str) -> None:
        """A fatal error: ``pusher:error`` tells the client why, the close code what to do."""
        self.send(messages.error(code, reason))
        self.close(code, reason)

    # --- what the transport does -----------------------------------------------------------

    def flush(self) -> int:
        """Write what is queued; returns the bytes the transport still holds."""
        raise NotImplementedError

    def close(self, code: int, reason: str) -> None:
        """Flush what is queued, then start the closing handshake; safe to call twice."""
        raise NotImplementedError

    def abort(self) -> None:
        """Drop the link now, unsent data included."""
        raise NotImplementedError

    def ping(self, now: float, payload: bytes) -> None:
        """Ask an idle client whether it is alive."""
        raise NotImplementedError


FLUSH_SLICE = 256
"""Sockets written per loop turn. A write costs about 10 µs, mostly in the kernel, so a slice
holds the loop for about 2.5 ms; smaller slices measured no faster (bench/RESULTS.md)."""


class Outbox:
    __slots__ = ("_dirty", "_next", "_scheduled", "max_write_buffer", "slow_consumers")

    def __init__(self, max_write_buffer: int) -> None:
        self._dirty: list[Peer] = []
        self._next = 0  # where in ``_dirty`` the next slice starts
        self._scheduled = False
        self.max_write_buffer = max_write_buffer
        self.slow_consumers = 0

    def mark(self, conn: Peer) -> None:
        """``conn`` has queued frames; flush it at the end of this loop iteration."""
        self._dirty.append(conn)
        if not self._scheduled:
            self.schedule()

    def schedule(self) -> None:
        """Flush at the end of this loop iteration: the one call to the loop, whether a
        socket was marked by ``mark`` or inline by ``broadcast``."""
        self._scheduled = True
        asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write up to ``FLUSH_SLICE`` dirty sockets, then let the loop turn before the rest.

        A broadcast to thousands of sockets is thousands of ``write`` calls, most of their
        cost in the kernel; written in one go they would hold the loop for tens of
        milliseconds, with API requests, handshakes and pings waiting behind them. Between
        slices the loop reads what arrived, and an event that lands meanwhile joins the
        frames still queued for the sockets not yet written: under load each write carries
        more events, without a timer and without delaying a socket that is next in line.
        A socket stays in the queue once, from its first queued frame to its write, so its
        frames keep their order.
        """
        dirty, start = self._dirty, self._next
        end = start + FLUSH_SLICE
        if len(dirty) > end:  # the rest next turn; sockets marked meanwhile join its tail
            self._next = end
            asyncio.get_running_loop().call_soon(self.flush)  # still scheduled
        else:
            self._dirty, self._next = [], 0
            self._scheduled = False
        limit = self.max_write_buffer
        for conn in dirty[start:end]:
            if conn.flush() > limit:
                self.slow_consumers += 1
                log.warning("dropping slow consumer %s (%s)", conn.socket_id, conn.app_id)
                conn.abort()


def broadcast(
    subscribers: Iterable[Peer], payload: bytes, except_socket_id: str | None = None
) -> int:
    """Send one encoded event to many sockets; returns how many got it.

    The per-subscriber work is a list append (``Peer.queue`` and ``Outbox.mark`` inlined):
    the frame is built once, metrics are counted once, and the write happens in
    ``Outbox.flush``. Without a socket to leave out (an API trigger's usual case), the loop
    compares no socket id.
    """
    frame = text_frame(payload)
    sent = 0
    last: Peer | None = None
    if except_socket_id is None:
        for conn in subscribers:
            if conn.closed:
                continue
            pending = conn._pending
            if not pending:
                outbox = conn._outbox
                outbox._dirty.append(conn)
                if not outbox._scheduled:
                    outbox.schedule()
            pending.append(frame)
            sent += 1
            last = conn
    else:
        for conn in subscribers:
            if conn.closed or conn.socket_id == except_socket_id:
                continue
            pending = conn._pending
            if not pending:
                outbox = conn._outbox
                outbox._dirty.append(conn)
                if not outbox._scheduled:
                    outbox.schedule()
            pending.append(frame)
            sent += 1
            last = conn
    if last is not None:
        WIRE.count_out(last.app_id, sent, sent * len(payload))
    WIRE.broadcast(sent)
    return sent
