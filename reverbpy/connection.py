"""One client socket after the upgrade: the asyncio protocol of its transport.

A ``Connection`` is the socket's only reader and only writer, and a thin pump: the bytes its
transport reads go through a sans-I/O ``protocol.rfc6455.ServerProtocol``, which holds the
RFC 6455 state (frames, pings, the closing handshake, protocol errors, the close code); what
that asks to write is written, and each data message goes to the ``Listener``
(``websocket.WebSocketHandler``), which applies the Pusher rules. What is left here is the
transport's side: writes, pausing reads, the timers that end a closing handshake the client
does not finish, and telling the listener once that the socket is done for.

There is no task per socket: messages are handled in ``data_received``. When the listener
needs to wait (joining a channel through Redis, say), the socket stops reading until that is
done, so one client's messages are still handled in the order it sent them.

With the in-memory adapter (``Adapter.local``), what the listener returns to wait on is
started at once (``Sockets(eager=True)``): a leave or a disconnection never really waits there,
so it finishes in that first step without a task or a loop turn (a join, a reconnect storm's
every message, is not even a coroutine there: ``Hub.join_here``). Not with Redis: its client
uses ``asyncio.timeout``, which needs to run inside a task, and every join waits on the
network anyway. (Python 3.12's eager tasks would
cover both; this works on 3.11.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Generator
from typing import TYPE_CHECKING, Any, Protocol

from reverbpy.dispatch import Outbox, Peer
from reverbpy.protocol import messages
from reverbpy.protocol.errors import ErrorCode
from reverbpy.protocol.frames import (
    CloseCode,
    FrameError,
    Opcode,
    close_frame,
    control_frame,
    text_frame,
)
from reverbpy.protocol.rfc6455 import CLOSED, OPEN, ServerProtocol
from reverbpy.protocol.session import Session
from reverbpy.wire import WIRE

if TYPE_CHECKING:
    from reverbpy.registry import AppState

log = logging.getLogger("reverbpy.connection")

CLOSE_TIMEOUT = 5.0  # for the client's answer to our close frame, then the TCP link is dropped
HANDSHAKE_WAIT = 1.0  # at shutdown, for the clients' answers to our close frames
LINGER = 1.0  # after a protocol error: read and discard, so the client sees our close frame
_PING = control_frame(Opcode.PING)
# Plain ints for the per-message test: on Python 3.11 ``Opcode.X`` is a slow lookup.
_DATA = int(Opcode.BINARY)  # TEXT and BINARY are the opcodes up to this one
_CLOSE = int(Opcode.CLOSE)

Pending = Coroutine[Any, Any, None]


class _Started(Coroutine[Any, Any, None]):
    """``coro`` after the first step ``Sockets.run`` gave it, which yielded ``waiting_on``: a
    task steps this as it would have stepped ``coro`` (a task takes any ``Coroutine``). Its
    first step hands the task that future; a cancellation, even before that, goes to ``coro``
    at the point where it waits."""

    __slots__ = ("_coro", "_waiting_on")

    def __init__(self, coro: Pending, waiting_on: Any) -> None:
        self._coro = coro
        self._waiting_on: Any = waiting_on

    def send(self, value: Any) -> Any:
        waiting_on = self._waiting_on
        if waiting_on is not _STEPPED:
            self._waiting_on = _STEPPED
            return waiting_on
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        self._waiting_on = _STEPPED
        return self._coro.throw(typ if val is None else val)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, None]:
        raise TypeError("run by a task only")  # pragma: no cover


_STEPPED: Any = object()


class _Closing:
    """The sockets waiting for the client's answer to our close frame."""

    def __init__(self) -> None:
        self.sockets: set[Connection] = set()
        self._none_left: asyncio.Event | None = None

    def add(self, conn: Connection) -> None:
        self.sockets.add(conn)

    def discard(self, conn: Connection) -> None:
        self.sockets.discard(conn)
        if not self.sockets and self._none_left is not None:
            self._none_left.set()

    async def wait(self, within: float) -> None:
        if self.sockets:
            self._none_left = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._none_left.wait(), within)
            self._none_left = None


class Sockets:
    """One server's sockets that outlive the call that started something: listener
    coroutines still running and closing handshakes still awaiting the client's answer.
    Shutdown waits for them (``wait_closed``); several servers in one process (tests) each
    have their own."""

    __slots__ = ("closing", "eager", "tasks")

    def __init__(self, *, eager: bool = False) -> None:
        self.tasks: set[asyncio.Task[None]] = set()
        self.closing = _Closing()
        self.eager = eager

    def run(self, coro: Pending) -> asyncio.Task[None] | None:
        """Run ``coro`` in a task; when ``eager``, start it now, and return ``None`` if it
        finished in that step (it raises, if it failed there)."""
        if self.eager:
            try:
                waiting_on = coro.send(None)
            except StopIteration:
                return None
            task = asyncio.ensure_future(_Started(coro, waiting_on))
        else:
            task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def wait_closed(self, within: float) -> None:
        """At shutdown: wait, bounded, for the clean-up of closed sockets and for the
        clients' answers to our close frames; then close the links of those that did not
        answer."""
        start = time.monotonic()
        await self.closing.wait(min(within, HANDSHAKE_WAIT))
        for conn in list(self.closing.sockets):
            conn._transport.abort()
        while self.tasks and (remaining := within - (time.monotonic() - start)) > 0:
            await asyncio.wait(list(self.tasks), timeout=remaining)


class Listener(Protocol):
    """What a ``Connection`` tells the Pusher layer; a coroutine returned is run in order.

    ``disconnected`` comes once, as soon as the socket is done for: when either side starts
    the closing handshake or the link drops, so it leaves its channels at once.
    """

    def message(self, conn: Connection, opcode: int, payload: bytes) -> Pending | None: ...

    def disconnected(self, conn: Connection) -> Pending | None: ...


class Connection(Peer, asyncio.Protocol):
    """A socket's transport side: pumps bytes through its ``ServerProtocol``, writes what its
    ``Peer`` half queued."""

    __slots__ = (
        "_backlog",
        "_close_timer",
        "_finished",
        "_listener",
        "_sockets",
        "_transport",
        "_ws",
        "state",
        "uses_control_frames",
    )

    def __init__(
        self,
        socket_id: str,
        state: AppState,
        transport: asyncio.Transport,
        outbox: Outbox,
        session: Session,
        listener: Listener,
        now: float,
        *,
        sockets: Sockets,
    ) -> None:
        Peer.__init__(self, socket_id, state, session, outbox, now)
        self.state = state
        self._sockets = sockets
        self._transport = transport
        self._listener = listener
        self._ws = ServerProtocol(self.app.max_message_size)
        # Messages read while the listener is waiting; ``None`` when it is not.
        self._backlog: list[tuple[int, bytes]] | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        # The listener has been told the socket is done for (or will be, once it stops waiting).
        self._finished = False
        self.uses_control_frames = False

    @property
    def close_code(self) -> int | None:
        """How the socket ended, once it has: see ``ServerProtocol.close_code``."""
        return self._ws.close_code

    # --- outbound -------------------------------------------------------------------------

    def flush(self) -> int:
        """Write what is queued; returns the bytes the transport still holds."""
        pending = self._pending
        if not pending:
            return 0
        transport = self._transport
        if transport.is_closing():
            pending.clear()
            return 0
        if WIRE.debug:
            WIRE.sent(self, pending)
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()  # the same list, emptied before the write: a frame queued from inside
        transport.write(data)  # it (``pause_writing``) is marked and flushed on the next turn
        return transport.get_write_buffer_size()

    def touch(self, now: float) -> None:
        """The client sent something: it is alive (``connected_at`` stays: see the sweep)."""
        self.last_seen = now
        self.pinged_at = None

    def ping(self, now: float, payload: bytes) -> None:
        """Ask an idle client whether it is alive: a control frame if it uses them (Reverb #224)."""
        self.pinged_at = now
        if self.uses_control_frames:
            self.queue(_PING)
        else:
            self.send(payload)

    def close(self, code: int, reason: str) -> None:
        """Flush what is queued, then start the closing handshake; safe to call twice."""
        if self.closed:
            return
        self.flush()
        self.closed = True
        self._ws.send_close(code, reason)
        self._write_close()
        self._finish()

    def abort(self) -> None:
        """Drop the TCP connection now, unsent data included (a slow consumer's buffer is
        full, so no close frame could reach it anyway)."""
        self.closed = True
        self._pending = []
        self._transport.abort()

    def _write_close(self) -> None:
        """Write our close frame (what the protocol has to send), then await the answer."""
        data = self._ws.data_to_send()
        if not data or self._transport.is_closing():
            return
        self._transport.write(data)
        self._abort_later()
        self._sockets.closing.add(self)

    def _abort_later(self) -> None:
        """A graceful close waits for the write buffer to drain, which a peer that stopped
        reading never lets happen: past ``CLOSE_TIMEOUT`` the link is dropped."""
        if self._close_timer is None:
            self._close_timer = asyncio.get_running_loop().call_later(
                CLOSE_TIMEOUT, self._transport.abort
            )

    # --- inbound (asyncio.Protocol) -------------------------------------------------------

    def establish(self, handshake: bytes, established: bytes, tail: bytes) -> None:
        """Take the transport over (from the front door or aiohttp) and start the socket: the
        101 and ``connection_established`` in one write, at once, then the frames in ``tail``
        (what a pipelining client sent after its head). Not at the outbox's end of the loop
        turn: in a reconnect storm a turn reads hundreds of upgrades, and each client would
        wait for the last of them; so the two frames are queued without the outbox, which
        would only find them written. They leave before ``tail`` is read: a close frame or a
        broken frame there ends the socket after its 101, not instead of it."""
        WIRE.count_out(self.app_id, 1, len(established))
        self._pending = [handshake, text_frame(established)]
        self.start()
        self.flush()
        if tail:
            self.data_received(tail)

    def start(self) -> None:
        """Take the transport over: this socket reads from it from now on."""
        self._transport.set_protocol(self)
        self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        ws = self._ws
        if ws.state is CLOSED:  # closed or failed: discard until the link closes
            return
        self.touch(time.monotonic())
        for opcode, payload in ws.receive_data(data):
            if opcode <= _DATA:
                if self.closed:  # the listener closed the socket on an earlier message
                    continue
                if self._backlog is not None:
                    self._backlog.append((opcode, payload))
                else:
                    self._deliver(opcode, payload)
            elif opcode == _CLOSE:
                self._close_received()
                return
            else:  # a ping or a pong: the client keeps itself alive with control frames
                self.uses_control_frames = True
                if ws.state is OPEN and ws.error is None and (pongs := ws.data_to_send()):
                    # Queued at once, before the replies to messages later in the same
                    # read, so the pong keeps the ping's place in the stream; queued like
                    # any frame, so a client that pings but never reads is a slow
                    # consumer like any other (dropped past max_write_buffer). After a
                    # broken frame or a close frame in the same read, ``_fail`` or
                    # ``_close_received`` writes them, ahead of the close frame.
                    self.queue(pongs)
        if ws.error is not None:  # after the messages that were whole before it
            self._fail(ws.error)

    def eof_received(self) -> bool | None:
        return None  # the client half-closed: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pending = []
        self._ws.connection_lost()
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self._sockets.closing.discard(self)
        self._finish()

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self._backlog is None:  # else once the listener's wait is over (``_resume``)
            self._disconnected()

    def _disconnected(self) -> None:
        pending = self._listener.disconnected(self)
        if pending is not None:
            try:
                self._sockets.run(pending)
            except Exception:
                log.exception("error forgetting %s", self.socket_id)

    def _deliver(self, opcode: int, payload: bytes) -> None:
        try:
            pending = self._listener.message(self, opcode, payload)
            task = None if pending is None else self._sockets.run(pending)
        except Exception as exc:
            self._internal_error(exc)
            return
        if task is not None:  # the listener waits (on Redis): read nothing more until then
            self._backlog = []
            self._transport.pause_reading()
            task.add_done_callback(self._resume)

    def _internal_error(self, exc: BaseException) -> None:
        """A bug or a lost backend (Redis) while handling a message: the client reconnects
        (4200) rather than stay half-subscribed."""
        log.error("error handling a message from %s", self.socket_id, exc_info=exc)
        self.fail(ErrorCode.GENERIC_RECONNECT, "Internal server error")

    def _resume(self, task: asyncio.Task[None]) -> None:
        backlog = self._backlog or []
        self._backlog = None
        if self._finished:  # done for while the listener waited: report it now
            self._disconnected()
            return
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._internal_error(exc)
            return
        for i, (opcode, payload) in enumerate(backlog):
            if self.closed:
                break
            self._deliver(opcode, payload)
            if self._backlog is not None:  # waiting again: keep the rest in order
                self._backlog.extend(backlog[i + 1 :])
                return
        self._transport.resume_reading()

    def _close_received(self) -> None:
        """The client's close frame ended the handshake; the protocol has echoed it if the
        client started it. What is still queued for a leaving client is dropped, not sent."""
        self.closed = True
        self._pending = []
        echo = self._ws.data_to_send()
        if echo and not self._transport.is_closing():
            self._transport.write(echo)
        self._transport.close()
        self._abort_later()
        self._finish()

    def _fail(self, error: FrameError) -> None:
        """The client broke RFC 6455 and the protocol closes with the error's code, after what
        was queued before. The socket then reads and discards for a moment, so the client
        gets our frames rather than a reset."""
        if error.code == CloseCode.MESSAGE_TOO_BIG:  # pusher-js is told first, to reconnect
            self.send(messages.error(ErrorCode.GENERIC_RECONNECT, error.reason))
        self.flush()
        self.closed = True
        self._write_close()
        self._abort_later()
        asyncio.get_running_loop().call_later(LINGER, self._transport.close)
        self._finish()

    def __repr__(self) -> str:
        return f"Connection({self.socket_id!r}, app={self.app_id!r})"


class Refused(asyncio.Protocol):
    """A socket turned away after the upgrade: it has been sent ``pusher:error`` and a close
    frame; what the client sends now is discarded until it closes, or the linger ends."""

    __slots__ = ("_timers", "_transport")

    def __init__(self, transport: asyncio.Transport, code: int, reason: str) -> None:
        self._transport = transport
        transport.write(text_frame(messages.error(code, reason)) + close_frame(code, reason))
        transport.set_protocol(self)
        transport.resume_reading()
        loop = asyncio.get_running_loop()
        self._timers = (
            loop.call_later(LINGER, transport.close),
            loop.call_later(CLOSE_TIMEOUT, transport.abort),
        )

    def data_received(self, data: bytes) -> None:
        if data[:1] and data[0] & 0x0F == Opcode.CLOSE:  # the client's answer: done
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in self._timers:
            timer.cancel()
