"""Channel operations of one node: joining, leaving, publishing, terminating.

Both the WebSocket side and the HTTP API come through here, so the rules that tie state to
outbound events hold whoever asks: ``member_added`` only on a user's first socket, the sender
excluded from its own client event, the cache replayed right after ``subscription_succeeded``,
webhooks on occupancy changes. All fan-out goes through ``dispatch.broadcast``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from reverbpy.connection import Connection
from reverbpy.dispatch import broadcast
from reverbpy.protocol import messages
from reverbpy.protocol.channels import channel_kind
from reverbpy.protocol.errors import ErrorCode
from reverbpy.protocol.presence import Member
from reverbpy.registry import AppState, CachedEvent, Channel, Registry
from reverbpy.webhooks import Webhooks

log = logging.getLogger("reverbpy.hub")

# Pusher sends subscription_count on every change up to 100 subscribers, then every 5 s.
SUBSCRIPTION_COUNT_EVERY_CHANGE = 100
SUBSCRIPTION_COUNT_THROTTLE = 5.0


class Hub:
    def __init__(self, registry: Registry, webhooks: Webhooks | None = None) -> None:
        self.registry = registry
        self.webhooks = webhooks or Webhooks()

    def _hook(self, state: AppState, event: dict[str, Any]) -> None:
        if state.app.webhooks:
            self.webhooks.emit(state.app, event)

    # --- WebSocket side -------------------------------------------------------------------

    def join(self, state: AppState, conn: Connection, name: str, member: Member | None) -> None:
        """Subscribe; raises ``SubscriptionError`` when a channel limit refuses the socket."""
        occupied_before = name in state.channels
        channel, first = state.subscribe(conn, name, member)
        presence = channel.presence.snapshot() if channel.presence is not None else None
        conn.send(messages.subscription_succeeded(name, presence))
        if not occupied_before:
            self._hook(state, {"name": "channel_occupied", "channel": name})
        if first and member is not None:
            others = (c for c in channel.subscribers.values() if c is not conn)
            broadcast(others, messages.member_added(name, member.user_id, member.user_info))
            self._hook(state, {"name": "member_added", "channel": name, "user_id": member.key})
        if channel.kind.cache:
            self._replay_cache(state, conn, name)
        self._subscription_count_changed(state, channel)

    def _replay_cache(self, state: AppState, conn: Connection, name: str) -> None:
        cached = state.cached(name, time.monotonic())
        if cached is not None:
            conn.send(cached.payload)
            return
        conn.send(messages.cache_miss(name))
        if name not in state.cache_miss_reported:
            state.cache_miss_reported.add(name)
            self._hook(state, {"name": "cache_miss", "channel": name})

    def leave(self, state: AppState, conn: Connection, name: str, member: Member | None) -> None:
        channel, last = state.unsubscribe(conn, name, member)
        if channel is None:
            return
        if last and member is not None:
            broadcast(channel.subscribers.values(), messages.member_removed(name, member.user_id))
            self._hook(state, {"name": "member_removed", "channel": name, "user_id": member.key})
        if not channel.subscribers:
            self._hook(state, {"name": "channel_vacated", "channel": name})
        else:
            self._subscription_count_changed(state, channel)

    def _subscription_count_changed(self, state: AppState, channel: Channel) -> None:
        if channel.presence is not None or (
            not state.app.subscription_count_events and not state.app.webhooks
        ):
            return
        if channel.subscription_count > SUBSCRIPTION_COUNT_EVERY_CHANGE:
            state.subscription_count_dirty.add(channel.name)
            return
        self._send_subscription_count(state, channel)

    def _send_subscription_count(self, state: AppState, channel: Channel) -> None:
        count = channel.subscription_count
        if state.app.subscription_count_events:
            broadcast(
                channel.subscribers.values(), messages.subscription_count(channel.name, count)
            )
        self._hook(
            state,
            {"name": "subscription_count", "channel": channel.name, "subscription_count": count},
        )

    def whisper(
        self, state: AppState, conn: Connection, name: str, event: str, data: Any, user_id: Any
    ) -> None:
        channel = state.channels.get(name)
        if channel is None:
            return
        payload = messages.channel_event(event, name, data, user_id)
        broadcast(channel.subscribers.values(), payload, except_socket_id=conn.socket_id)
        if state.app.webhooks:
            hook: dict[str, Any] = {
                "name": "client_event",
                "channel": name,
                "event": event,
                "data": data if isinstance(data, str) else messages.json_text(data),
                "socket_id": conn.socket_id,
            }
            if user_id is not None:
                hook["user_id"] = str(user_id)
            self._hook(state, hook)

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
            self.sign_out(state, conn, session.user.id)

    # --- users (pusher:signin) -------------------------------------------------------------

    def sign_in(
        self, state: AppState, conn: Connection, user_id: str, watchlist: tuple[str, ...]
    ) -> None:
        first = state.sign_in(conn, user_id, watchlist)
        if watchlist:
            online = [u for u in watchlist if u in state.users]
            if online:
                conn.send(messages.watchlist_events([{"name": "online", "user_ids": online}]))
        if first:
            self._tell_watchers(state, user_id, "online")

    def sign_out(self, state: AppState, conn: Connection, user_id: str) -> None:
        if state.sign_out(conn, user_id):
            self._tell_watchers(state, user_id, "offline")

    def _tell_watchers(self, state: AppState, user_id: str, name: str) -> None:
        watchers = state.watchers.get(user_id)
        if watchers:
            broadcast(
                list(watchers), messages.watchlist_events([{"name": name, "user_ids": [user_id]}])
            )

    def terminate_user(self, state: AppState, user_id: str) -> int:
        sockets = list(state.users.get(user_id, ()))
        for conn in sockets:
            conn.send(messages.error(ErrorCode.UNAUTHORIZED, "You got disconnected by the app."))
            conn.close(ErrorCode.UNAUTHORIZED, "You got disconnected by the app.")
        return len(sockets)

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
        now = time.monotonic()
        for name in channels:
            channel = state.channels.get(name)
            payload = None
            if channel is not None:
                payload = messages.channel_event(event, name, data)
                sent += broadcast(channel.subscribers.values(), payload, except_socket_id)
            if (channel is not None and channel.kind.cache) or (
                channel is None and channel_kind(name).cache
            ):
                payload = payload or messages.channel_event(event, name, data)
                state.cache[name] = CachedEvent(payload, data, event, now + state.app.cache_ttl)
                state.cache_miss_reported.discard(name)
        return sent

    def shutdown(self, reason: str = "Server shutting down") -> int:
        """Tell every client to reconnect (4200: pusher-js retries at once, ideally elsewhere)."""
        count = 0
        for state in self.registry.apps.values():
            for conn in list(state.connections.values()):
                if not conn.closed:
                    conn.send(messages.error(ErrorCode.GENERIC_RECONNECT, reason))
                    conn.close(ErrorCode.GENERIC_RECONNECT, reason)
                    count += 1
        return count

    # --- timers ---------------------------------------------------------------------------

    def sweep(self, now: float | None = None) -> None:
        """Ping idle sockets, close those that did not answer in time (4201), enforce the
        authorized-connections timeout, send throttled subscription counts, expire caches.

        Every socket is checked, subscribed or not (Reverb #375 never reaps idle sockets).
        """
        now = time.monotonic() if now is None else now
        for state in self.registry.apps.values():
            app = state.app
            auth_timeout = app.authorized_connections_timeout
            for conn in list(state.connections.values()):
                if conn.closed:
                    continue
                if (
                    auth_timeout is not None
                    and now - conn.connected_at >= auth_timeout
                    and not _authorized(conn)
                ):
                    reason = "Connection not authorized within timeout."
                    conn.send(messages.error(ErrorCode.UNAUTHORIZED, reason))
                    conn.close(ErrorCode.UNAUTHORIZED, reason)
                elif conn.pinged_at is not None:
                    if now - conn.pinged_at >= app.pong_timeout:
                        reason = "Pong reply not received in time"
                        conn.send(messages.error(ErrorCode.PONG_NOT_RECEIVED, reason))
                        conn.close(ErrorCode.PONG_NOT_RECEIVED, reason)
                elif now - conn.last_seen >= app.ping_interval:
                    conn.ping(now, messages.PING)
            if (
                state.subscription_count_dirty
                and now - state.subscription_count_sent >= SUBSCRIPTION_COUNT_THROTTLE
            ):
                state.subscription_count_sent = now
                for name in state.subscription_count_dirty:
                    channel = state.channels.get(name)
                    if channel is not None:
                        self._send_subscription_count(state, channel)
                state.subscription_count_dirty.clear()
            state.expire_cache(now)


def _authorized(conn: Connection) -> bool:
    session = conn.session
    if session.user is not None:
        return True
    return any(
        m is not None or name.startswith("private-") for name, m in session.subscriptions.items()
    )
