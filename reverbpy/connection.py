"""One client socket: the only object that writes to a transport."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiohttp import web

from reverbpy.config import AppConfig
from reverbpy.metrics import WIRE
from reverbpy.protocol import messages
from reverbpy.protocol.frames import text_frame

if TYPE_CHECKING:
    from reverbpy.dispatch import Outbox
    from reverbpy.protocol.session import Session

log = logging.getLogger("reverbpy.connection")

_closing_tasks: set[asyncio.Task[None]] = set()


async def wait_closed(within: float) -> None:
    """Wait for the closing handshakes in flight (bounded: a dead peer must not hold us)."""
    if _closing_tasks:
        await asyncio.wait(list(_closing_tasks), timeout=within)


class Connection:
    """A socket with its session; frames are queued and flushed by the ``Outbox``."""

    __slots__ = (
        "_outbox",
        "_pending",
        "_transport",
        "_ws",
        "app",
        "closed",
        "connected_at",
        "last_seen",
        "pinged_at",
        "session",
        "socket_id",
        "uses_control_frames",
    )

    def __init__(
        self,
        socket_id: str,
        app: AppConfig,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport,
        outbox: Outbox,
        session: Session,
        now: float,
    ) -> None:
        self.socket_id = socket_id
        self.app = app
        self.session = session
        self._ws = ws
        self._transport = transport
        self._outbox = outbox
        self._pending: list[bytes] = []
        self.closed = False
        self.last_seen = now
        self.connected_at = now
        self.pinged_at: float | None = None
        self.uses_control_frames = False

    def queue(self, frame: bytes) -> None:
        """Queue a complete WebSocket frame (see ``dispatch.broadcast``)."""
        if self.closed:
            return
        if not self._pending:
            self._outbox.mark(self)
        self._pending.append(frame)

    def send(self, payload: bytes) -> None:
        """Queue one JSON message for this socket only."""
        WIRE.count_out(self.app.id, 1, len(payload))
        self.queue(text_frame(payload))

    def flush(self) -> int:
        """Write what is queued; returns the bytes the transport still holds."""
        pending = self._pending
        if not pending:
            return 0
        self._pending = []
        transport = self._transport
        if transport.is_closing():
            return 0
        if WIRE.debug:
            WIRE.sent(self, pending)
        transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        return transport.get_write_buffer_size()

    def touch(self, now: float) -> None:
        self.last_seen = now
        self.pinged_at = None

    def ping(self, now: float, payload: bytes) -> None:
        """Ask an idle client whether it is alive: a control frame if it uses them (Reverb #224)."""
        self.pinged_at = now
        if self.uses_control_frames:
            self.flush()
            task = asyncio.ensure_future(self._ws.ping())
            _closing_tasks.add(task)
            task.add_done_callback(_closing_tasks.discard)
        else:
            self.send(payload)

    def fail(self, code: int, reason: str) -> None:
        """A fatal error: ``pusher:error`` tells the client why, the close code what to do."""
        self.send(messages.error(code, reason))
        self.close(code, reason)

    def close(self, code: int, reason: str) -> None:
        """Flush what is queued, then close with ``code``; safe to call more than once."""
        if self.closed:
            return
        self.flush()
        self.closed = True
        task = asyncio.ensure_future(self._close(code, reason))
        _closing_tasks.add(task)
        task.add_done_callback(_closing_tasks.discard)

    def abort(self) -> None:
        """Drop the TCP connection now, unsent data included (a slow consumer's buffer is
        full, so no close frame could reach it anyway)."""
        self.closed = True
        self._pending = []
        self._transport.abort()

    async def _close(self, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(self._ws.close(code=code, message=reason.encode()[:123]), 5)
        except (TimeoutError, ConnectionError):
            self._transport.abort()
        except Exception:  # pragma: no cover - aiohttp internals
            log.exception("error while closing %s", self.socket_id)
            self._transport.abort()

    def __repr__(self) -> str:
        return f"Connection({self.socket_id!r}, app={self.app.id!r})"
