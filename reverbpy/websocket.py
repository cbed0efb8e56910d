"""The aiohttp handler for ``{path}/app/{key}``: checks at the door, then session actions.

Errors found before the connection is established (unknown app, protocol version, origin,
quota) are rendered as ``pusher:error`` followed by a close with the same 4xxx code, so
pusher-js applies the right reconnect policy.
"""

from __future__ import annotations

import logging
import secrets
import time
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from aiohttp import WSCloseCode, WSMsgType, web

from reverbpy.config import AppConfig
from reverbpy.connection import Connection
from reverbpy.dispatch import Outbox
from reverbpy.hub import Hub
from reverbpy.metrics import WIRE
from reverbpy.protocol import messages
from reverbpy.protocol.errors import ErrorCode, PusherError, SubscriptionError, invalid_message
from reverbpy.protocol.frames import text_frame
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

log = logging.getLogger("reverbpy.websocket")

SUPPORTED_PROTOCOLS = range(4, 8)
_END = frozenset({WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR})
MAX_MESSAGE_SIZE_REASON = "Maximum message size exceeded"


class PusherWebSocketResponse(web.WebSocketResponse):
    """Tells the client why before aiohttp closes an oversized message with 1009."""

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and not self.closed:
            transport = self._req.transport if self._req is not None else None
            if transport is not None and not transport.is_closing():
                transport.write(
                    text_frame(messages.error(ErrorCode.GENERIC_RECONNECT, MAX_MESSAGE_SIZE_REASON))
                )
            message = message or MAX_MESSAGE_SIZE_REASON.encode()
        return await super().close(code=code, message=message, drain=drain)


def _waits(actions: list[Action]) -> bool:
    """Actions that need the cluster's answer: joining, leaving, signing in."""
    return any(isinstance(a, Join | Leave | SignIn) for a in actions)


def new_socket_id() -> str:
    return f"{secrets.randbelow(10**9) + 1}.{secrets.randbelow(10**9) + 1}"


def origin_allowed(app: AppConfig, origin: str | None) -> bool:
    """Match the Origin's host against the app's allow-list (``*.example.com`` wildcards)."""
    if "*" in app.allowed_origins:
        return True
    if not origin:
        return False
    host = urlsplit(origin).hostname or origin
    return any(fnmatchcase(host, pattern) for pattern in app.allowed_origins)


def _door_check(
    request: web.Request, state: AppState | None, key: str, others: int = 0
) -> PusherError | None:
    if state is None:
        return PusherError(ErrorCode.APP_NOT_FOUND, f"App key {key} does not exist.", fatal=True)
    app = state.app
    if not app.enabled:
        return PusherError(ErrorCode.APP_DISABLED, "Application disabled", fatal=True)
    protocol = request.query.get("protocol")
    if protocol is None:
        return PusherError(ErrorCode.NO_PROTOCOL, "No protocol version supplied", fatal=True)
    if not protocol.isdigit():
        return PusherError(ErrorCode.INVALID_VERSION, "Invalid version string format", fatal=True)
    if int(protocol) not in SUPPORTED_PROTOCOLS:
        return PusherError(
            ErrorCode.UNSUPPORTED_PROTOCOL, f"Unsupported protocol version {protocol}", fatal=True
        )
    if not origin_allowed(app, request.headers.get("Origin")):
        return PusherError(ErrorCode.UNAUTHORIZED, "Origin not allowed", fatal=True)
    # Cluster-wide with Redis: the other nodes' counts are refreshed by the adapter's heartbeat.
    if app.max_connections is not None and len(state.connections) + others >= app.max_connections:
        return PusherError(
            ErrorCode.OVER_CONNECTION_QUOTA, "Application is over connection quota", fatal=True
        )
    return None


class WebSocketHandler:
    def __init__(self, hub: Hub, outbox: Outbox) -> None:
        self.hub = hub
        self.outbox = outbox

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """One socket, from the upgrade to the close.

        Written as a single coroutine reading with ``receive()``: every extra frame on this
        path (an ``async for``, a helper coroutine) lives as long as the socket, and that
        adds up over tens of thousands of sockets.
        """
        key = request.match_info["key"]
        state = self.hub.registry.by_key(key)
        max_size = state.app.max_message_size if state is not None else 10_000
        ws = PusherWebSocketResponse(autoping=False, max_msg_size=max_size, compress=False)
        await ws.prepare(request)
        others = self.hub.adapter.other_connections(state) if state is not None else 0
        refused = _door_check(request, state, key, others)
        if refused is not None or state is None:
            assert refused is not None  # state is None implies a refusal
            await ws.send_str(messages.error(refused.code, refused.message).decode())
            await ws.close(code=refused.code, message=refused.message.encode()[:123])
            return ws
        transport = request.transport
        assert transport is not None
        socket_id = new_socket_id()
        now = time.monotonic()
        session = Session(state.app, socket_id, time.monotonic)
        conn = Connection(socket_id, state.app, ws, transport, self.outbox, session, now)
        self.hub.connect(state, conn)
        conn.send(messages.connection_established(socket_id, state.app.activity_timeout))
        WIRE.connected(conn, request)
        session = conn.session
        try:
            while True:
                msg = await ws.receive()
                if msg.type in _END:
                    break
                conn.touch(time.monotonic())
                WIRE.received(conn, msg)
                if msg.type is WSMsgType.TEXT:
                    actions = session.receive(msg.data)
                    # Only joining and leaving wait on the cluster; the rest runs without a
                    # coroutine per message (client events are the hot case here).
                    if actions and type(actions[0]) is not Whisper and _waits(actions):
                        await self._execute(state, conn, actions)
                    else:
                        self._apply(state, conn, actions)
                elif msg.type is WSMsgType.PING:
                    conn.uses_control_frames = True
                    conn.flush()
                    await ws.pong(msg.data)
                elif msg.type is WSMsgType.PONG:
                    conn.uses_control_frames = True
                elif msg.type is WSMsgType.BINARY:
                    self._apply(
                        state,
                        conn,
                        error_actions(invalid_message("Binary frames are not supported")),
                    )
                # After conn.close() the loop ends when the closing handshake does, so the
                # client receives our close code rather than aiohttp's default 1000.
        finally:
            conn.closed = True
            WIRE.disconnected(conn, ws.close_code)
            await self.hub.disconnect(state, conn)
        return ws

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
                case SignIn():
                    raise AssertionError("SignIn goes through _execute")  # pragma: no cover
                case Close(code, reason):
                    conn.close(code, reason)

    async def _execute(self, state: AppState, conn: Connection, actions: list[Action]) -> None:
        hub = self.hub
        for action in actions:
            match action:
                case Join(channel, member):
                    try:
                        await hub.join(state, conn, channel, member)
                    except SubscriptionError as exc:
                        conn.session.subscription_refused(channel)
                        conn.send(
                            messages.subscription_error(channel, exc.kind, exc.message, exc.status)
                        )
                case Leave(channel, member):
                    await hub.leave(state, conn, channel, member)
                case SignIn(user_id, _info, watchlist):
                    await hub.sign_in(state, conn, user_id, watchlist)
                case _:
                    self._apply(state, conn, [action])
