"""Every socket's way in (``accept``), and then its ``Listener``: checks at the door, session
actions.

Two roads lead to ``accept``: the front door (``http_api.front``) reads a plain upgrade head
itself (``protocol.http1.read_upgrade``); any other upgrade request goes through aiohttp, its
middlewares and ``handle``, which takes the socket over from it. After the handshake the socket
is a ``connection.Connection`` either way.

Errors found before the connection is established (unknown app, protocol version, origin,
quota) are rendered as ``pusher:error`` followed by a close with the same 4xxx code, so
pusher-js applies the right reconnect policy.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from reverbpy.config import AppConfig
from reverbpy.connection import Connection, Pending, Refused, Sockets
from reverbpy.console.feed import Feed
from reverbpy.dispatch import Outbox
from reverbpy.http_api.responses import json
from reverbpy.hub import Hub
from reverbpy.protocol import messages
from reverbpy.protocol.errors import ErrorCode, PusherError, SubscriptionError, invalid_message
from reverbpy.protocol.frames import Opcode, handshake_response, valid_key
from reverbpy.protocol.http1 import Upgrade
from reverbpy.protocol.session import (
    Action,
    Close,
    Join,
    Leave,
    Reply,
    Session,
    SignIn,
    Whisper,
    error_actions,
)
from reverbpy.registry import AppState
from reverbpy.wire import WIRE

SUPPORTED_PROTOCOLS = range(4, 8)


_WAITING: frozenset[type] = frozenset((Join, Leave, SignIn))


def _waits(actions: list[Action]) -> bool:
    """Actions that need the cluster's answer: joining, leaving, signing in. (A loop and a set
    of exact types: ``isinstance(a, Join | Leave | SignIn)`` builds the union at every call.)"""
    for action in actions:  # noqa: SIM110 (no generator per message)
        if type(action) in _WAITING:
            return True
    return False


_ids: list[str] = []


def new_socket_id() -> str:
    """Pusher's shape, two numbers from 1 to 10^9, each from 64 bits of the OS's CSPRNG (so
    the modulo's bias is below 10^-10). The bits are read 256 ids at a time: a ``getrandom``
    call per socket was 4 % of the server's CPU in a reconnect storm. (A failed read leaves
    the pool empty, and the next socket tries again.)"""
    if not _ids:
        _ids.extend(
            f"{high % 1_000_000_000 + 1}.{low % 1_000_000_000 + 1}"
            for high, low in struct.iter_unpack(">QQ", os.urandom(16 * 256))
        )
    return _ids.pop()


# A forked child draws its own bits, never ids its parent has drawn or will draw.
os.register_at_fork(after_in_child=_ids.clear)


def origin_allowed(app: AppConfig, origin: str | None) -> bool:
    """Match the Origin's host against the app's allow-list (``*.example.com`` wildcards)."""
    if "*" in app.allowed_origins:
        return True
    if not origin:
        return False
    host = urlsplit(origin).hostname or origin
    return any(fnmatchcase(host, pattern) for pattern in app.allowed_origins)


def _door_check(state: AppState | None, upgrade: Upgrade, others: int = 0) -> PusherError | None:
    key = upgrade.key
    if state is None:
        return PusherError(ErrorCode.APP_NOT_FOUND, f"App key {key} does not exist.", fatal=True)
    app = state.app
    if not app.enabled:
        return PusherError(ErrorCode.APP_DISABLED, "Application disabled", fatal=True)
    protocol = upgrade.protocol
    if protocol is None:
        return PusherError(ErrorCode.NO_PROTOCOL, "No protocol version supplied", fatal=True)
    if not protocol.isdigit():
        return PusherError(ErrorCode.INVALID_VERSION, "Invalid version string format", fatal=True)
    if int(protocol) not in SUPPORTED_PROTOCOLS:
        return PusherError(
            ErrorCode.UNSUPPORTED_PROTOCOL, f"Unsupported protocol version {protocol}", fatal=True
        )
    if not origin_allowed(app, upgrade.origin):
        return PusherError(ErrorCode.UNAUTHORIZED, "Origin not allowed", fatal=True)
    # Cluster-wide with Redis: the other nodes' counts are refreshed by the adapter's heartbeat.
    if app.max_connections is not None and len(state.connections) + others >= app.max_connections:
        return PusherError(
            ErrorCode.OVER_CONNECTION_QUOTA, "Application is over connection quota", fatal=True
        )
    return None


class _Detached(web.StreamResponse):
    """What aiohttp gets back for a socket it no longer owns: there is nothing to write."""

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


def _handshake_error(request: web.Request) -> web.Response | None:
    """The answer to an upgrade request we cannot accept (RFC 6455 4.2.1, 4.4), if any."""
    headers = request.headers
    # Exactly ``websocket``, as aiohttp's parser requires before it stops parsing HTTP.
    if headers.get("Upgrade", "").strip().lower() != "websocket":
        return json({"error": "Expected a WebSocket upgrade request"}, 400)
    if "upgrade" not in headers.get("Connection", "").lower():
        return json({"error": "Expected 'Connection: Upgrade'"}, 400)
    if headers.get("Sec-WebSocket-Version") != "13":
        refused = json({"error": "Unsupported Sec-WebSocket-Version: 13 is supported"}, 426)
        refused.headers["Sec-WebSocket-Version"] = "13"
        return refused
    if not valid_key(headers.get("Sec-WebSocket-Key")):
        return json({"error": "Invalid Sec-WebSocket-Key"}, 400)
    return None


def _take_over(request: web.Request) -> tuple[asyncio.Transport, bytes] | None:
    """Take the socket from aiohttp once it has parsed the upgrade request.

    aiohttp's ``WebSocketResponse`` keeps the request, its parser, a reader queue and a task
    per socket for as long as the socket lives: several KiB each, times tens of thousands of
    sockets. Here aiohttp is told the connection is gone (so its server forgets it and its
    keep-alive timer stops) without closing the transport, which then belongs to a
    ``Connection``. The bytes aiohttp read past the request (a pipelining client) come along:
    aiohttp keeps them for the parser of the upgraded protocol and hands them over in
    ``set_parser``, as it does to its own ``WebSocketResponse``; here that parser is a buffer.
    """
    from types import SimpleNamespace
    from typing import Any

    handler = request.protocol
    transport = request.transport
    if transport is None or transport.is_closing():
        return None  # the client left during the handshake
    tail = bytearray()
    parser: Any = SimpleNamespace(feed_data=tail.extend, feed_eof=lambda: None)
    handler.set_parser(parser)
    handler.transport = None  # so that aiohttp's clean-up cannot close it
    handler.connection_lost(None)
    return transport, bytes(tail)


def _observe_reply(observer: Feed, conn: Connection, frame: bytes) -> None:
    """Refusals the session answered by itself (a bad signature, a bad channel name, an
    error), for the console's log; other replies (pongs) are not logged."""
    if b'"pusher:subscription_error"' not in frame and b'"pusher:error"' not in frame:
        return
    message = orjson.loads(frame)
    name = message.get("event")
    data = message.get("data")
    if isinstance(data, str):
        data = orjson.loads(data)
    channel = message.get("channel")
    observer.record(
        "subscription_error" if name == "pusher:subscription_error" else "error",
        conn.state.app.id,
        socket_id=conn.socket_id,
        channels=(channel,) if isinstance(channel, str) else (),
        event=name,
        detail=str(data.get("error") or data.get("message")) if isinstance(data, dict) else None,
    )


class WebSocketHandler:
    """The Pusher side of every socket: checks at the door, then session actions."""

    def __init__(self, hub: Hub, outbox: Outbox, sockets: Sockets) -> None:
        self.hub = hub
        self.outbox = outbox
        self.sockets = sockets

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """aiohttp's road: answer the upgrade and hand the socket to a ``Connection``."""
        not_accepted = _handshake_error(request)
        if not_accepted is not None:
            return not_accepted
        taken = _take_over(request)
        if taken is None:
            return _Detached(status=499)  # nothing to answer: the client is gone
        transport, tail = taken
        headers = request.headers
        upgrade = Upgrade(
            key=request.match_info["key"],
            protocol=request.query.get("protocol"),
            origin=headers.get("Origin"),
            ws_key=headers["Sec-WebSocket-Key"],
            head_size=0,
        )
        self.accept(transport, upgrade, tail, request.remote)
        return _Detached(status=101)

    def accept(
        self, transport: asyncio.Transport, upgrade: Upgrade, tail: bytes, remote: str | None
    ) -> None:
        """The 101, then a ``Connection`` with ``connection_established`` or, refused at the
        door, ``pusher:error`` and a close with its code. ``tail``: bytes the client sent
        after its head (a pipelining client's first frames)."""
        state = self.hub.registry.by_key(upgrade.key)
        others = self.hub.adapter.other_connections(state) if state is not None else 0
        refused = _door_check(state, upgrade, others)
        if refused is not None or state is None:
            assert refused is not None  # state is None implies a refusal
            transport.write(handshake_response(upgrade.ws_key))
            Refused(transport, refused.code, refused.message)
            return
        socket_id = new_socket_id()
        now = time.monotonic()
        session = Session(state, socket_id, time.monotonic)
        conn = Connection(
            socket_id, state, transport, self.outbox, session, self, now, sockets=self.sockets
        )
        self.hub.connect(state, conn)
        WIRE.connected(conn, remote)
        if (observer := self.hub.observer) is not None:
            observer.record("connected", state.app.id, socket_id=socket_id, detail=remote)
        conn.establish(
            handshake_response(upgrade.ws_key),
            messages.connection_established(socket_id, state.app.activity_timeout),
            tail,
        )

    # --- Listener --------------------------------------------------------------------------

    def message(self, conn: Connection, opcode: int, payload: bytes) -> Pending | None:
        """One data message; a coroutine when it must wait on the cluster (join, leave)."""
        WIRE.received(conn, payload)
        if opcode != Opcode.TEXT:
            actions = error_actions(invalid_message("Binary frames are not supported"))
        else:
            actions = conn.session.receive(payload)
            # Client events, the hot case, are applied without a coroutine; so is a join
            # when there is no cluster to wait for (a reconnect storm's every message).
            if actions and type(actions[0]) is not Whisper and _waits(actions):
                if (
                    len(actions) == 1
                    and type(join := actions[0]) is Join
                    and self.hub.adapter.local
                ):
                    self._join_here(conn.state, conn, join)
                    return None
                return self._execute(conn.state, conn, actions)
        self._apply(conn.state, conn, actions)
        return None

    def disconnected(self, conn: Connection) -> Pending:
        WIRE.disconnected(conn, conn.close_code)
        if (observer := self.hub.observer) is not None:
            code = conn.close_code
            observer.record(
                "disconnected",
                conn.state.app.id,
                socket_id=conn.socket_id,
                detail=f"close {code if code is not None else 1006}",
            )
        return self.hub.disconnect(conn.state, conn)

    def _apply(self, state: AppState, conn: Connection, actions: list[Action]) -> None:
        """Carry out actions that need no waiting (everything but ``Join`` and ``Leave``)."""
        hub = self.hub
        for action in actions:
            if type(action) is Whisper:  # the hot case, without pattern matching
                hub.whisper(state, conn, action.channel, action.event, action.data, action.user_id)
                continue
            match action:
                case Reply(frame):
                    conn.send(frame)
                    WIRE.replied(conn, frame)
                    if (observer := hub.observer) is not None:
                        _observe_reply(observer, conn, frame)
                case SignIn():
                    raise AssertionError("SignIn goes through _execute")  # pragma: no cover
                case Close(code, reason):
                    conn.close(code, reason)

    def _join_here(self, state: AppState, conn: Connection, join: Join) -> None:
        try:
            self.hub.join_here(state, conn, join.channel, join.member)
        except SubscriptionError as exc:
            self._refused(state, conn, join.channel, exc)

    def _refused(
        self, state: AppState, conn: Connection, channel: str, exc: SubscriptionError
    ) -> None:
        """A limit refused the join (a full presence channel): the client is told why."""
        conn.session.subscription_refused(channel)
        if (observer := self.hub.observer) is not None:
            observer.record(
                "subscription_error",
                state.app.id,
                socket_id=conn.socket_id,
                channels=(channel,),
                detail=f"{exc.kind}: {exc.message}",
            )
        conn.send(messages.subscription_error(channel, exc.kind, exc.message, exc.status))

    async def _execute(self, state: AppState, conn: Connection, actions: list[Action]) -> None:
        hub = self.hub
        for action in actions:
            match action:
                case Join(channel, member):
                    try:
                        await hub.join(state, conn, channel, member)
                    except SubscriptionError as exc:
                        self._refused(state, conn, channel, exc)
                case Leave(channel, member):
                    await hub.leave(state, conn, channel, member)
                case SignIn(user_id, _info, watchlist, confirmation):
                    await hub.sign_in(state, conn, user_id, watchlist, confirmation)
                case _:
                    self._apply(state, conn, [action])
