"""Every accepted TCP connection starts here; triggers are answered here, the rest by aiohttp.

A ``FrontDoor`` answers signed ``POST .../events`` and ``.../batch_events`` requests itself
(``protocol.http1`` reads their heads) with the same checks, answers and metrics as the
aiohttp routes: the app, the signature (``check_signature``), validation and publishing
(``events.publish``). The first request of any other kind, valid or not, hands the connection
to aiohttp for good, with every byte from that request's first one: WebSocket upgrades,
queries, the health route, oversized bodies (aiohttp answers 413), anything unusual.

Measured with the bench's 0-subscriber trigger scenario (``bench/RESULTS.md``): aiohttp's
request machinery alone (routing, a request object and a task per request, middlewares, a
response object) costs more than verifying and publishing the event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from email.utils import formatdate
from typing import Any, cast

import orjson
from aiohttp import web

from reverbpy.config import ServerConfig
from reverbpy.http_api.errors import ApiError
from reverbpy.http_api.events import Event, answer, publish, wants_info
from reverbpy.http_api.middleware import check_signature
from reverbpy.hub import Hub
from reverbpy.protocol.http1 import Head, NotOurs, read_head
from reverbpy.registry import AppState
from reverbpy.wire import WIRE

log = logging.getLogger("reverbpy.http_api")

# aiohttp's own keep-alive default (also given to its runner): longer than the idle timeout of
# any proxy in front, so the proxy, not the server, closes an idle upstream connection.
KEEPALIVE_TIMEOUT = 3630.0
REQUEST_TIMEOUT = 60.0  # from a request's first byte to its last (a trickled head or body)
Answer = tuple[int, bytes]
INTERNAL_ERROR: Answer = (500, b'{"error":"Internal Server Error"}')
_REASONS = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden",
            404: b"Not Found", 413: b"Payload Too Large", 429: b"Too Many Requests",
            500: b"Internal Server Error"}  # fmt: skip
_date: tuple[int, bytes] = (0, b"")
_waiting: set[asyncio.Task[Answer]] = set()


def _http_date() -> bytes:
    """The ``Date`` header value, formatted once a second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, formatdate(now, usegmt=True).encode())
    return _date[1]


def response(status: int, body: bytes, keep_alive: bool) -> bytes:
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Error")),
            b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body),
            b"Date: " + _http_date() + b"\r\nServer: reverbpy\r\n",
            b"" if keep_alive else b"Connection: close\r\n",
            b"\r\n",
            body,
        )
    )


class Triggers:
    """The trigger routes without aiohttp, and the connections currently using them."""

    def __init__(self, hub: Hub, config: ServerConfig) -> None:
        self.hub = hub
        self.prefix = config.path
        self.max_request_size = config.max_request_size
        self.doors: set[FrontDoor] = set()
        self.stopping = False
        self._routes: dict[str, tuple[str, bool]] = {}
        self._app_ids: frozenset[str] = frozenset()
        self.paths: frozenset[bytes] = frozenset()
        self.refresh()

    def refresh(self) -> None:
        """Follow the registry's app ids (a reload can add or remove apps)."""
        ids = frozenset(self.hub.registry.apps)
        if ids == self._app_ids:
            return
        self._app_ids = ids
        self._routes = {
            f"{self.prefix}/apps/{app_id}/{name}": (app_id, name == "batch_events")
            for app_id in ids
            for name in ("events", "batch_events")
        }
        self.paths = frozenset(p.encode() for p in self._routes)

    def handle(self, head: Head, body: bytes) -> Answer | Coroutine[Any, Any, Answer]:
        app_id, batch = self._routes[head.path]
        endpoint = "/apps/{app_id}/batch_events" if batch else "/apps/{app_id}/events"
        start = time.perf_counter()
        state = self.hub.registry.by_id(app_id)
        try:
            if state is None:  # removed by a reload since ``refresh``
                raise ApiError(404, f"No matching application for ID [{app_id}].")
            check_signature(state.app, self.prefix, "POST", head.path, head.query, body)
            events = publish(self.hub, state, body, batch=batch)
            if wants_info(events):
                return self._with_info(state, events, batch, endpoint, start)
            result: Answer = (200, b"{}")
        except ApiError as exc:
            result = (exc.status, orjson.dumps({"error": exc.message}))
        except Exception:
            log.exception("error handling %s", endpoint)
            result = INTERNAL_ERROR
        WIRE.http(endpoint, app_id if state is not None else "unknown", result[0],
                  time.perf_counter() - start)  # fmt: skip
        return result

    async def _with_info(
        self, state: AppState, events: list[Event], batch: bool, endpoint: str, start: float
    ) -> Answer:
        status, body = INTERNAL_ERROR
        try:
            status, body = 200, orjson.dumps(await answer(self.hub, state, events, batch=batch))
        finally:
            WIRE.http(endpoint, state.app.id, status, time.perf_counter() - start)
        return status, body

    def sweep(self, now: float) -> None:
        """Close connections idle past ``KEEPALIVE_TIMEOUT``, or that take longer than
        ``REQUEST_TIMEOUT`` to send a request (bytes trickled in do not extend it)."""
        for door in [d for d in self.doors if d.expired(now)]:
            door.close()

    def shut_down(self) -> None:
        """Stop: idle connections close now; a request in progress gets its answer, with
        ``Connection: close`` (see ``drained``)."""
        self.stopping = True
        for door in list(self.doors):
            if door.idle:
                door.close()

    async def drained(self, within: float) -> None:
        """Wait, bounded, for the answers still awaiting the cluster."""
        if _waiting:
            await asyncio.wait(list(_waiting), timeout=within)


TRIGGERS = web.AppKey("triggers", Triggers)


class FrontDoor(asyncio.Protocol):
    """One TCP connection until it is handed to aiohttp (or closed)."""

    __slots__ = (
        "_aiohttp",
        "_blocked",
        "_buffer",
        "_busy",
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
        self.last_active = self.request_started = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's does not subclass it
        self._triggers.doors.add(self)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if self._buffer:
            self._buffer += data
        else:
            self._buffer = data
            self.request_started = now
        self.last_active = now
        if not self._busy and not self._blocked:
            self._serve()

    @property
    def idle(self) -> bool:
        return not self._busy and not self._buffer

    def expired(self, now: float) -> bool:
        if self._busy:
            return False
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
            self._serve()

    def connection_lost(self, exc: Exception | None) -> None:
        self._triggers.doors.discard(self)
        self._buffer = b""

    def close(self) -> None:
        self._transport.close()

    def _serve(self) -> None:
        triggers = self._triggers
        while self._buffer and not self._blocked and not self._transport.is_closing():
            buffer = self._buffer
            head = read_head(buffer, triggers.paths)
            if head is None:
                return
            if isinstance(head, NotOurs):
                self._hand_off()
                return
            end = head.body_start + head.content_length
            if head.content_length > triggers.max_request_size:
                self._hand_off()  # aiohttp answers 413 without reading it all
                return
            if len(buffer) < end:
                return
            self._buffer = buffer[end:]
            self.request_started = time.monotonic()
            result = triggers.handle(head, buffer[head.body_start : end])
            keep_alive = head.keep_alive and not triggers.stopping
            if isinstance(result, tuple):
                self._reply(result, keep_alive)
            else:
                self._wait(result, keep_alive)
                return

    def _reply(self, result: Answer, keep_alive: bool) -> None:
        if self._transport.is_closing():  # the client left while its answer was awaited
            return
        keep_alive = keep_alive and result[0] < 500
        self._transport.write(response(result[0], result[1], keep_alive))
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
                self._reply(INTERNAL_ERROR, False)
                return
            self._reply(task.result(), keep_alive)
            if not self._transport.is_closing() and not self._blocked:
                self._transport.resume_reading()
                self._serve()

        task = asyncio.ensure_future(pending)
        _waiting.add(task)
        task.add_done_callback(_waiting.discard)
        task.add_done_callback(done)

    def _hand_off(self) -> None:
        """From this request on, the connection is aiohttp's."""
        self._triggers.doors.discard(self)
        handler = self._aiohttp()
        data, self._buffer = self._buffer, b""
        self._transport.set_protocol(handler)
        handler.connection_made(self._transport)
        handler.data_received(data)
