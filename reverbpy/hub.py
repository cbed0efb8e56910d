"""Channel operations of one node: joining, leaving, publishing, terminating.

Both the WebSocket side and the HTTP API come through here, so the rules that tie state to
outbound events (``member_added`` only on a user's first socket, the sender excluded from its
own client event...) hold whoever asks. All fan-out goes through ``dispatch.broadcast``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from reverbpy.connection import Connection
from reverbpy.dispatch import broadcast
from reverbpy.protocol import messages
from reverbpy.protocol.errors import ErrorCode
from reverbpy.protocol.presence import Member
from reverbpy.registry import AppState, Registry

log = logging.getLogger("reverbpy.hub")


class Hub:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    # --- WebSocket side -------------------------------------------------------------------

    def join(self, state: AppState, conn: Connection, name: str, member: Member | None) -> None:
        """Subscribe; raises ``SubscriptionError`` when a channel limit refuses the socket."""
        channel, first = state.subscribe(conn, name, member)
        presence = channel.presence.snapshot() if channel.presence is not None else None
        conn.send(messages.subscription_succeeded(name, presence))
        if first and member is not None:
            others = (c for c in channel.subscribers.values() if c is not conn)
            broadcast(others, messages.member_added(name, member.user_id, member.user_info))

    def leave(self, state: AppState, conn: Connection, name: str, member: Member | None) -> None:
        channel, last = state.unsubscribe(conn, name, member)
        if channel is not None and last and member is not None:
            broadcast(channel.subscribers.values(), messages.member_removed(name, member.user_id))

    def whisper(
        self, state: AppState, conn: Connection, name: str, event: str, data: Any, user_id: Any
    ) -> None:
        channel = state.channels.get(name)
        if channel is None:
            return
        payload = messages.channel_event(event, name, data, user_id)
        broadcast(channel.subscribers.values(), payload, except_socket_id=conn.socket_id)

    def connect(self, state: AppState, conn: Connection) -> None:
        state.connections[conn.socket_id] = conn

    def disconnect(self, state: AppState, conn: Connection) -> None:
        """Forget a closed socket: leave every channel (presence members leave too)."""
        if state.connections.pop(conn.socket_id, None) is None:
            return
        session = conn.session
        for name, member in list(session.subscriptions.items()):
            self.leave(state, conn, name, member)
        session.subscriptions.clear()
        if session.user is not None:
            state.sign_out(conn, session.user.id)

    # --- HTTP API side --------------------------------------------------------------------

    def trigger(
        self,
        state: AppState,
        channels: Iterable[str],
        event: str,
        data: Any,
        except_socket_id: str | None = None,
    ) -> int:
        """Publish an event to channels; returns the number of frames queued."""
        sent = 0
        for name in channels:
            channel = state.channels.get(name)
            if channel is not None:
                payload = messages.channel_event(event, name, data)
                sent += broadcast(channel.subscribers.values(), payload, except_socket_id)
        return sent

    def terminate_user(self, state: AppState, user_id: str) -> int:
        sockets = list(state.users.get(user_id, ()))
        for conn in sockets:
            conn.send(messages.error(ErrorCode.UNAUTHORIZED, "You got disconnected by the app."))
            conn.close(ErrorCode.UNAUTHORIZED, "You got disconnected by the app.")
        return len(sockets)

    # --- heartbeat ------------------------------------------------------------------------

    def sweep(self, now: float | None = None) -> None:
        """Ping idle sockets, close those that did not answer in time (4201).

        Every socket is checked, subscribed or not (Reverb #375 never reaps idle sockets).
        """
        now = time.monotonic() if now is None else now
        for state in self.registry.apps.values():
            app = state.app
            for conn in list(state.connections.values()):
                if conn.closed:
                    continue
                if conn.pinged_at is not None:
                    if now - conn.pinged_at >= app.pong_timeout:
                        reason = "Pong reply not received in time"
                        conn.send(messages.error(ErrorCode.PONG_NOT_RECEIVED, reason))
                        conn.close(ErrorCode.PONG_NOT_RECEIVED, reason)
                elif now - conn.last_seen >= app.ping_interval:
                    conn.ping(now, messages.PING)
