"""Every accepted TCP connection starts here; triggers are answered here, the rest by aiohttp.

A ``FrontDoor`` answers signed ``POST .../events`` and ``.../batch_events`` requests itself
(``protocol.http1`` reads their heads; the routes are those of ``protocol.api.ROUTES`` marked
``fast``) with the very rules, answers and metrics of the aiohttp routes: the app lookup of
``HttpApi``, then ``protocol.api.handle_trigger``. The first request of any other kind, valid
or not, hands the connection to aiohttp for good, with every byte from that request's first
one: WebSocket upgrades, queries, the health route, oversized or compressed bodies (aiohttp
answers 413, or decodes them), anything unusual.

Measured with the bench's 0-subscriber trigger scenario (``bench/RESULTS.md``): aiohttp's
request machinery alone (routing, a request object and a task per request, middlewares, a
response object) costs more than verifying and publishing the event.

Every request's head is complete here before anyone reads it, whichever way it goes: a head
must arrive within ``head_timeout`` (the first one from the connection's accept, later ones
from their first byte), may not pass ``HEAD_LIMIT`` (431), and at most ``max_pending_heads``
connections may be waiting for theirs (past it, each new connection closes the oldest waiting
one, once it has waited a second: a slowloris client holds old half-heads, a storm of real
ones is young). ``AiohttpHandler`` answers what llhttp then refuses with a JSON 400 and one
debug line, counted in ``reverbpy_bad_requests``, not a logged traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from email.utils import formatdate
from typing import Any, cast

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from reverbpy.http_api.errors import error_response
from reverbpy.http_api.events import info_answer
from reverbpy.http_api.service import UNKNOWN, HttpApi, ServedApp
from reverbpy.protocol.api import (
    BATCH_EVENTS,
    INTERNAL_ERROR,
    OK,
    Answer,
    ApiError,
    Event,
    Route,
    fast_paths,
    handle_trigger,
    signed_paths,
)
from reverbpy.protocol.http1 import (
    HEAD_LIMIT,
    Head,
    Upgrade,
    head_complete,
    read_head,
    read_upgrade,
)
from reverbpy.wire import WIRE

log = logging.getLogger("reverbpy.http_api")

# aiohttp's own keep-alive default (also given to its runner): longer than the idle timeout of
# any proxy in front, so the proxy, not the server, closes an idle upstream connection.
KEEPALIVE_TIMEOUT = 3630.0
REQUEST_TIMEOUT = 60.0  # from a request's first byte to its last (a trickled body)
IDLE_SWEEP_EVERY = 10.0  # seconds between checks of idle and trickling connections, at most
EVICT_AFTER = 1.0  # seconds a head may be pending before a new connection can close it
_REASONS = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden",
            404: b"Not Found", 413: b"Payload Too Large", 429: b"Too Many Requests",
            431: b"Request Header Fields Too Large", 500: b"Internal Server Error"}  # fmt: skip
HEAD_TOO_LARGE: Answer = (431, b'{"error":"Request head too large"}')


def response(status: int, body: bytes, keep_alive: bool, date: bytes) -> bytes:
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Error")),
            b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body),
            b"Date: " + date + b"\r\nServer: reverbpy\r\n",
            b"" if keep_alive else b"Connection: close\r\n",
            b"\r\n",
            body,
        )
    )


Upgrader = Callable[[asyncio.Transport, Upgrade, bytes, str | None], None]
"""Takes a connection whose head is a plain WebSocket upgrade (``websocket.accept``): the
transport, the head read, the bytes after it, the client's address."""


class Triggers:
    """The front door of one server: its routes, its connections and their pending answers."""

    def __init__(
        self,
        api: HttpApi,
        *,
        head_timeout: float = 20.0,
        max_pending_heads: int = 1000,
        upgrade: Upgrader | None = None,
    ) -> None:
        self.api = api
        self.upgrade = upgrade
        self.upgrade_prefix = api.prefix.encode()
        self.max_request_size = api.max_request_size
        self.head_timeout = head_timeout
        self.max_pending_heads = max_pending_heads
        self.doors: set[FrontDoor] = set()
        # Doors waiting for a complete head, oldest first (a dict is an ordered set).
        self.pending: dict[FrontDoor, None] = {}
        self.stopping = False
        self._waiting: set[asyncio.Task[Answer]] = set()
        self._routes: dict[str, tuple[Route, str, tuple[str, ...]]] = {}
        self._app_ids: frozenset[str] = frozenset()
        self.paths: frozenset[bytes] = frozenset()
        self._second = -1  # the ``Date`` header and the plain ``{}`` answer, made once a second
        self._date = b""
        self._ok = b""
        self.refresh()

    def refresh(self) -> None:
        """Follow the registry's app ids (a reload can add or remove apps)."""
        self.api.refresh()
        ids = frozenset(self.api.hub.registry.apps)
        if ids == self._app_ids:
            return
        self._app_ids = ids
        prefix = self.api.prefix
        self._routes = {
            path: (route, app_id, signed_paths(prefix, path))
            for path, (route, app_id) in fast_paths(prefix, ids).items()
        }
        self.paths = frozenset(p.encode() for p in self._routes)

    def handle(
        self, head: Head, body: bytes, now: float, tick: float
    ) -> Answer | Coroutine[Any, Any, Answer]:
        """Answer a whole request that arrived at ``tick`` (``time.monotonic``); ``now`` is
        the wall clock."""
        route, app_id, paths = self._routes[head.path]
        api = self.api
        try:
            app = api.lookup(app_id)  # 404 if a reload removed it since ``refresh``
            result = handle_trigger(
                app, batch=route is BATCH_EVENTS, paths=paths, query=head.query, body=body,
                now=now, tick=tick,
            )  # fmt: skip
        except ApiError as exc:
            api.record(route, UNKNOWN, exc.status, tick)
            return exc.answer()
        except Exception:
            log.exception("error handling %s", route.pattern)
            result = INTERNAL_ERROR
        if isinstance(result, list):
            return self._with_info(app, route, result, tick)
        api.record(route, app_id, result[0], tick)
        return result

    async def _with_info(
        self, app: ServedApp, route: Route, events: list[Event], start: float
    ) -> Answer:
        status, body = INTERNAL_ERROR
        try:
            answer = await info_answer(self.api.hub, app.state, events, batch=route is BATCH_EVENTS)
            status, body = 200, orjson.dumps(answer)
        finally:
            self.api.record(route, app.app.id, status, start)
        return status, body

    def response(self, answer: Answer, keep_alive: bool, now: float) -> bytes:
        """The bytes of an answer at ``now`` (``time.time``); the plain ``{}`` of a kept-alive
        trigger is made once a second."""
        second = int(now)
        if second != self._second:
            self._second = second
            self._date = formatdate(second, usegmt=True).encode()
            self._ok = response(*OK, True, self._date)
        if answer is OK and keep_alive:
            return self._ok
        return response(answer[0], answer[1], keep_alive, self._date)

    @property
    def sweep_every(self) -> float:
        """Often enough that a half-sent head is closed within a quarter past its timeout."""
        return min(IDLE_SWEEP_EVERY, self.head_timeout / 4)

    def sweep(self, now: float) -> None:
        """Close connections idle past ``KEEPALIVE_TIMEOUT``, or that take longer than
        ``head_timeout`` to send a head or ``REQUEST_TIMEOUT`` a whole request (bytes trickled
        in do not extend either)."""
        for door in [d for d in self.doors if d.expired(now)]:
            if self.pending.pop(door, False) is None:
                WIRE.refuse("head_timeout")
            door.close()

    def admit(self, door: FrontDoor, now: float) -> None:
        """A new connection waits for its first head; past ``max_pending_heads`` the oldest
        waiting one goes, if it has waited ``EVICT_AFTER`` (a burst of real clients has not)."""
        pending = self.pending
        pending[door] = None
        if len(pending) > self.max_pending_heads:
            oldest = next(iter(pending))
            if now - oldest.request_started > EVICT_AFTER:
                del pending[oldest]
                WIRE.refuse("too_many_pending_heads")
                oldest.close()

    def shut_down(self) -> None:
        """Stop: idle connections close now; a request in progress gets its answer, with
        ``Connection: close`` (see ``drained``)."""
        self.stopping = True
        for door in list(self.doors):
            if door.idle:
                door.close()

    def wait_for(self, pending: Coroutine[Any, Any, Answer]) -> asyncio.Task[Answer]:
        """Run an answer that awaits the cluster; ``drained`` waits for it."""
        task = asyncio.ensure_future(pending)
        self._waiting.add(task)
        task.add_done_callback(self._waiting.discard)
        return task

    async def drained(self, within: float) -> None:
        """Wait, bounded, for the answers still awaiting the cluster."""
        if self._waiting:
            await asyncio.wait(list(self._waiting), timeout=within)


class FrontDoor(asyncio.Protocol):
    """One TCP connection until it is handed to aiohttp (or closed)."""

    __slots__ = (
        "_aiohttp",
        "_blocked",
        "_buffer",
        "_busy",
        "_scanned",
        "_transport",
        "_triggers",
        "last_active",
        "request_started",
    )

    def __init__(self, triggers: Triggers, aiohttp: Callable[[], asyncio.Protocol]) -> None:
        self._triggers = triggers
        self._aiohttp = aiohttp
        self._buffer = b""
        self._busy = False  # an answer is awaiting the cluster
        self._blocked = False  # the client does not read its answers
        self._scanned = 0  # bytes of the buffered head searched for its end
        self.last_active = self.request_started = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's does not subclass it
        self._triggers.doors.add(self)
        self._triggers.admit(self, self.request_started)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if self._buffer:
            self._buffer += data
        else:
            self._buffer = data
            pending = self._triggers.pending
            if self not in pending:  # a new request on a kept-alive connection
                self.request_started = now
                pending[self] = None
        self.last_active = now
        if not self._busy and not self._blocked:
            self._serve(now)

    @property
    def idle(self) -> bool:
        return not self._busy and not self._buffer

    def expired(self, now: float) -> bool:
        if self._busy:
            return False
        if self in self._triggers.pending:
            return now - self.request_started > self._triggers.head_timeout
        if self._buffer:
            return now - self.request_started > REQUEST_TIMEOUT
        return now - self.last_active > KEEPALIVE_TIMEOUT

    def pause_writing(self) -> None:
        """Answers pile up unread (a pipelining client that does not read): stop reading."""
        self._blocked = True
        self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._blocked = False
        if not self._busy:
            self._transport.resume_reading()
            self._serve(time.monotonic())

    def connection_lost(self, exc: Exception | None) -> None:
        self._triggers.doors.discard(self)
        self._triggers.pending.pop(self, None)
        self._buffer = b""

    def close(self) -> None:
        self._transport.close()

    def _serve(self, tick: float) -> None:
        """Answer the whole requests buffered, received at ``tick`` (``time.monotonic``)."""
        triggers = self._triggers
        while self._buffer and not self._blocked and not self._transport.is_closing():
            buffer = self._buffer
            if self in triggers.pending:
                if not head_complete(buffer, self._scanned):
                    self._scanned = len(buffer)
                    if len(buffer) > HEAD_LIMIT:
                        WIRE.refuse("head_too_large")
                        self._reply(HEAD_TOO_LARGE, False, time.time())
                    return
                del triggers.pending[self]
                self._scanned = 0
            if buffer[:4] == b"GET ":  # a WebSocket upgrade, or a query: never a trigger
                if triggers.upgrade and not triggers.stopping:
                    upgrade = read_upgrade(buffer, triggers.upgrade_prefix)
                    if isinstance(upgrade, Upgrade):
                        self._upgrade(triggers.upgrade, upgrade)
                        return
                self._hand_off()  # while stopping, aiohttp answers upgrades 503
                return
            head = read_head(buffer, triggers.paths)
            if not isinstance(head, Head):  # another route, another shape, or malformed
                self._hand_off()
                return
            end = head.body_start + head.content_length
            if head.content_length > triggers.max_request_size:
                self._hand_off()  # aiohttp answers 413 without reading it all
                return
            if len(buffer) < end:
                return
            self._buffer = buffer[end:]
            if self._buffer:  # pipelined: the next head is pending from now
                self.request_started = tick
                triggers.pending[self] = None
            now = time.time()
            result = triggers.handle(head, buffer[head.body_start : end], now, tick)
            keep_alive = head.keep_alive and not triggers.stopping
            if isinstance(result, tuple):
                self._reply(result, keep_alive, now)
            else:
                self._wait(result, keep_alive)
                return

    def _reply(self, result: Answer, keep_alive: bool, now: float) -> None:
        if self._transport.is_closing():  # the client left while its answer was awaited
            return
        keep_alive = keep_alive and result[0] < 500
        self._transport.write(self._triggers.response(result, keep_alive, now))
        if not keep_alive:
            self._transport.close()

    def _wait(self, pending: Coroutine[Any, Any, Answer], keep_alive: bool) -> None:
        """An answer that awaits the cluster: later requests wait, so answers keep order."""
        self._busy = True
        self._transport.pause_reading()

        def done(task: asyncio.Task[Answer]) -> None:
            self._busy = False
            if task.cancelled() or task.exception() is not None:
                log.error("trigger failed", exc_info=None if task.cancelled() else task.exception())
                self._reply(INTERNAL_ERROR, False, time.time())
                return
            self._reply(task.result(), keep_alive, time.time())
            if not self._transport.is_closing() and not self._blocked:
                self._transport.resume_reading()
                self._serve(time.monotonic())

        self._triggers.wait_for(pending).add_done_callback(done)

    def _upgrade(self, accept: Upgrader, upgrade: Upgrade) -> None:
        """From this request on, the connection is a WebSocket's, without aiohttp."""
        self._triggers.doors.discard(self)
        tail, self._buffer = self._buffer[upgrade.head_size :], b""
        remote = None
        if WIRE.debug:  # only the debug log line names the client
            peer = self._transport.get_extra_info("peername")
            remote = peer[0] if isinstance(peer, tuple) else peer
        accept(self._transport, upgrade, tail, remote)

    def _hand_off(self) -> None:
        """From this request on, the connection is aiohttp's."""
        self._triggers.doors.discard(self)
        handler = self._aiohttp()
        data, self._buffer = self._buffer, b""
        self._transport.set_protocol(handler)
        handler.connection_made(self._transport)
        handler.data_received(data)


class AiohttpHandler(RequestHandler):
    """aiohttp's connection handler, with one change: a request llhttp refuses (a malformed
    head: Content-Length with Transfer-Encoding, obs-fold, a NUL byte...) gets a JSON 4xx and a
    debug line, counted in ``reverbpy_bad_requests``. aiohttp logs each one as an error with a
    traceback, so any unauthenticated client could fill the log and page an operator."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500 or not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        reason = (exc.message or type(exc).__name__).splitlines()[0][:200]
        WIRE.refuse("malformed")
        log.debug("bad request from %s: %s", request.remote, reason)
        answer = web.json_response({"error": f"Bad request: {reason}"}, status=status)
        answer.force_close()
        return answer


def aiohttp_handlers(server: web.Server) -> Callable[[], asyncio.Protocol]:
    """What the front door hands connections to: ``AiohttpHandler``s of ``server``, made as
    ``server()`` makes its own (``web.Server.__call__``), with the runner's keyword arguments."""
    loop = asyncio.get_running_loop()
    kwargs = server._kwargs  # the arguments the runner gave its handlers

    def handler() -> asyncio.Protocol:
        return AiohttpHandler(server, loop=loop, **kwargs)

    return handler


@web.middleware
async def one_request(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A request aiohttp serves (a query, the health route, an odd-shaped trigger) is its
    connection's last: answered with ``Connection: close``, within ``REQUEST_TIMEOUT`` (408
    past it). The client's next request then starts at a new ``FrontDoor``, under the head
    timeout and the pending-heads bound (aiohttp would wait an hour, its keep-alive timeout,
    for a head trickled on a kept-alive connection), and on the trigger fast path. WebSocket
    upgrades return at once (``websocket._take_over``), before either applies."""
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            response = await handler(request)
    except TimeoutError:
        response = error_response(408, "Request took too long")
    if isinstance(response, web.Response):  # not a socket taken over (``websocket._Detached``)
        response.force_close()
    return response
