"""Channel operations of one node: joining, leaving, publishing, terminating.

Both the WebSocket side and the HTTP API come through here, so the rules that tie state to
outbound events hold whoever asks: ``member_added`` only on a user's first socket (in the
whole cluster), the sender excluded from its own client event, the cache replayed right after
``subscription_succeeded``, webhooks on occupancy changes. All fan-out goes through
``dispatch.broadcast``; what other nodes must see goes to the adapter as one envelope
(``protocol.cluster``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Iterable
from typing import Any

from reverbpy.console.feed import Feed
from reverbpy.dispatch import Peer, broadcast
from reverbpy.protocol import messages
from reverbpy.protocol.channels import channel_kind
from reverbpy.protocol.cluster import (
    CHANNEL,
    USER,
    WATCH,
    ApiEvent,
    ClientEvent,
    Envelope,
    MemberAdded,
    MemberRemoved,
    Message,
    Terminate,
    UserOffline,
    UserOnline,
)
from reverbpy.protocol.errors import ErrorCode
from reverbpy.protocol.presence import Member, snapshot
from reverbpy.registry import AppState, CachedEvent, Channel, Registry, presence_full
from reverbpy.scaling.base import Adapter, PresenceFull, PresenceJoin
from reverbpy.webhooks import Webhooks

log = logging.getLogger("reverbpy.hub")

# Pusher sends subscription_count on every change up to 100 subscribers, then every 5 s.
SUBSCRIPTION_COUNT_EVERY_CHANGE = 100
SUBSCRIPTION_COUNT_THROTTLE = 5.0


class Hub:
    def __init__(self, registry: Registry, webhooks: Webhooks, adapter: Adapter) -> None:
        self.registry = registry
        self.webhooks = webhooks
        self.adapter = adapter
        self.node_id = ""
        """Set by a clustering adapter; envelopes from this node are not delivered twice."""
        self.observer: Feed | None = None
        """The console's log while a console stream is open, else None: the hot paths test
        this one attribute and build nothing more (``console.feed``)."""

    def _hook(self, state: AppState, event: dict[str, Any]) -> None:
        if state.app.webhooks:
            self.webhooks.emit(state.app, event)

    # --- WebSocket side -------------------------------------------------------------------

    async def join(self, state: AppState, conn: Peer, name: str, member: Member | None) -> None:
        """Subscribe; raises ``SubscriptionError`` when a channel limit refuses the socket.

        The cluster is told first and the socket is added to the local channel last: no
        channel event reaches the client before its ``subscription_succeeded``, and once the
        client has it, every node's HTTP API counts the subscription and this node receives
        the channel's envelopes (the adapter follows its topic from the start of the join;
        ``leave``, or a join that fails, lets go).
        """
        topic = (state.app.id, CHANNEL, name)
        interest = self.adapter.follow(topic)
        try:
            joined = await self._join(state, conn, name, member, interest)
        except BaseException:
            self.adapter.unfollow(topic)
            raise
        if not joined:
            self.adapter.unfollow(topic)

    async def _join(
        self,
        state: AppState,
        conn: Peer,
        name: str,
        member: Member | None,
        interest: Awaitable[None] | None,
    ) -> bool:
        cluster_count = await self.adapter.subscriptions_changed(state, name, +1)
        if channel_kind(name).cache and state.cached(name, time.monotonic()) is None:
            shared = await self.adapter.cache_get(state, name)
            if shared is not None:
                event, data, left = shared
                payload = messages.channel_event(event, name, data)
                state.cache[name] = CachedEvent(payload, data, event, time.monotonic() + left)
        if interest is not None:  # before presence: a member_added from then on reaches us
            await interest
        # The presence answer must be the last await before the socket joins the local
        # channel: a member_added relayed from another node in between would be lost to it.
        cluster = None
        if member is not None:
            try:
                cluster = await self.adapter.presence_join(state, name, conn.socket_id, member)
            except PresenceFull:
                await self.adapter.subscriptions_changed(state, name, -1)
                raise presence_full(state.app, name) from None
        if conn.closed:  # it went away while the cluster was asked: undo
            if cluster is not None and member is not None:
                await self.adapter.presence_leave(state, name, conn.socket_id, member)
            await self.adapter.subscriptions_changed(state, name, -1)
            return False
        self._joined(state, conn, name, member, cluster_count, cluster)
        return True

    def join_here(self, state: AppState, conn: Peer, name: str, member: Member | None) -> None:
        """``join`` on a node without a cluster (the in-memory adapter, whose answers are all
        ``None``): nothing to ask, so nothing to await and no coroutine. A reconnect storm is
        made of joins, and their coroutines were a tenth of a subscribe's cost."""
        self._joined(state, conn, name, member, None, None)

    def _joined(
        self,
        state: AppState,
        conn: Peer,
        name: str,
        member: Member | None,
        cluster_count: int | None,
        cluster: PresenceJoin | None,
    ) -> None:
        """The socket joins the local channel, once the cluster (if any) has answered: its
        subscriber count after the join, and the presence state for a member."""
        occupied_before = name in state.channels
        channel, first = state.subscribe(conn, name, member, check_cap=cluster is None)
        members = None
        if channel.presence is not None:
            members = cluster.members if cluster is not None else channel.presence.members()
            first = cluster.first if cluster is not None else first
        conn.send(
            messages.subscription_succeeded(
                name, snapshot(members) if members is not None else None
            )
        )
        if cluster_count == 1 if cluster_count is not None else not occupied_before:
            self._hook(state, {"name": "channel_occupied", "channel": name})
        if first and member is not None:
            payload = messages.member_added(name, member.user_id, member.user_info)
            broadcast((c for c in channel.subscribers.values() if c is not conn), payload)
            self._publish(state, MemberAdded(name, member.user_id, member.user_info))
            self._hook(state, {"name": "member_added", "channel": name, "user_id": member.key})
        if channel.kind.cache:
            self._replay_cache(state, conn, name)
        self._subscription_count_changed(state, channel)
        if (observer := self.observer) is not None:
            who = None if member is None else f"user {member.user_id}"
            observer.record(
                "subscribed", state.app.id, socket_id=conn.socket_id, channels=(name,), detail=who
            )

    def _replay_cache(self, state: AppState, conn: Peer, name: str) -> None:
        cached = state.cached(name, time.monotonic())
        if cached is not None:
            conn.send(cached.payload)
            return
        conn.send(messages.cache_miss(name))
        if name not in state.cache_miss_reported:
            state.cache_miss_reported.add(name)
            self._hook(state, {"name": "cache_miss", "channel": name})

    async def leave(self, state: AppState, conn: Peer, name: str, member: Member | None) -> None:
        channel, last = state.unsubscribe(conn, name, member)
        if channel is None:
            return
        if (observer := self.observer) is not None:
            observer.record(
                "unsubscribed", state.app.id, socket_id=conn.socket_id, channels=(name,)
            )
        self.adapter.unfollow((state.app.id, CHANNEL, name))
        if member is not None:
            cluster_last = await self.adapter.presence_leave(state, name, conn.socket_id, member)
            if cluster_last is not None:
                last = cluster_last
        if last and member is not None:
            self._member_removed(state, channel, member.user_id)
            self._publish(state, MemberRemoved(name, member.user_id))
        cluster_count = await self.adapter.subscriptions_changed(state, name, -1)
        if cluster_count == 0 if cluster_count is not None else not channel.subscribers:
            self._hook(state, {"name": "channel_vacated", "channel": name})
        if channel.subscribers:
            self._subscription_count_changed(state, channel)

    def _member_removed(self, state: AppState, channel: Channel, user_id: Any) -> None:
        broadcast(channel.subscribers.values(), messages.member_removed(channel.name, user_id))
        self._hook(
            state, {"name": "member_removed", "channel": channel.name, "user_id": str(user_id)}
        )

    def _subscription_count_changed(self, state: AppState, channel: Channel) -> None:
        # Pusher's subscription_count (events and webhook) is an opt-in feature of the app.
        if channel.presence is not None or not state.app.subscription_count_events:
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
        self, state: AppState, conn: Peer, name: str, event: str, data: Any, user_id: Any
    ) -> None:
        self._deliver_client_event(state, name, event, data, user_id, conn.socket_id)
        if (observer := self.observer) is not None:
            observer.record(
                "client_event",
                state.app.id,
                socket_id=conn.socket_id,
                channels=(name,),
                event=event,
                detail=None if user_id is None else f"user {user_id}",
                data=data,
            )
        if self.node_id:  # (``_publish``'s test, before the envelope is made)
            self._publish(state, ClientEvent(name, event, data, user_id, conn.socket_id))
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

    def _deliver_client_event(
        self, state: AppState, name: str, event: str, data: Any, user_id: Any, sender: str
    ) -> None:
        channel = state.channels.get(name)
        if channel is not None:
            payload = messages.channel_event(event, name, data, user_id)
            broadcast(channel.subscribers.values(), payload, except_socket_id=sender)

    def connect(self, state: AppState, conn: Peer) -> None:
        state.connections[conn.socket_id] = conn

    async def disconnect(self, state: AppState, conn: Peer) -> None:
        """Forget a closed socket: leave every channel (presence members leave too)."""
        if state.connections.pop(conn.socket_id, None) is None:
            return
        session = conn.session
        subscriptions = list(session.subscriptions.items())
        session.subscriptions.clear()
        if session.user is not None:
            await self.sign_out(state, conn, session.user.id)
        for name, member in subscriptions:
            await self.leave(state, conn, name, member)

    # --- users (pusher:signin) -------------------------------------------------------------

    async def sign_in(
        self,
        state: AppState,
        conn: Peer,
        user_id: str,
        watchlist: tuple[str, ...],
        confirmation: bytes,
    ) -> None:
        """Record a signed-in socket; the user comes online (for watchers) on their first
        socket in the whole cluster, and the new socket learns who of its watchlist is online.
        ``confirmation`` is sent once the cluster has recorded the user, before the
        watchlist (Pusher's order)."""
        app_id = state.app.id
        watched = [(app_id, WATCH, u) for u in dict.fromkeys(watchlist) if u not in state.watchers]
        first = state.sign_in(conn, user_id, watchlist)
        topics = [(app_id, USER, user_id), *watched] if first else watched
        for interest in [self.adapter.follow(topic) for topic in topics]:
            if interest is not None:  # a terminate or an online sent from now on reaches us
                await interest
        if first:
            cluster_first = await self.adapter.user_signed_in(state, user_id)
            if cluster_first if cluster_first is not None else True:
                self._tell_watchers(state, user_id, "online")
                self._publish(state, UserOnline(user_id))
        conn.send(confirmation)
        if watchlist:
            online = await self.adapter.users_online(state, watchlist)
            if online is None:
                online = [u for u in watchlist if u in state.users]
            online = [u for u in online if u not in conn.session.watch_online]
            if online:
                conn.session.watch_online.update(online)
                conn.send(messages.watchlist_events([{"name": "online", "user_ids": online}]))

    async def sign_out(self, state: AppState, conn: Peer, user_id: str) -> None:
        app_id = state.app.id
        watching = [u for u in dict.fromkeys(conn.session.watchlist) if u in state.watchers]
        last = state.sign_out(conn, user_id)
        for u in watching:
            if u not in state.watchers:
                self.adapter.unfollow((app_id, WATCH, u))
        if last:
            self.adapter.unfollow((app_id, USER, user_id))
            cluster_last = await self.adapter.user_signed_out(state, user_id)
            if cluster_last if cluster_last is not None else True:
                self._tell_watchers(state, user_id, "offline")
                self._publish(state, UserOffline(user_id))

    def user_gone(self, app_id: str, user_id: str) -> None:
        """A dead node's signed-in user is gone from the cluster (found by the adapter)."""
        state = self.registry.by_id(app_id)
        if state is not None:
            self._tell_watchers(state, user_id, "offline")
            self._publish(state, UserOffline(user_id))

    def _tell_watchers(self, state: AppState, user_id: str, name: str) -> None:
        watchers = state.watchers.get(user_id)
        if not watchers:
            return
        coming = name == "online"
        targets = [c for c in watchers if (user_id in c.session.watch_online) != coming]
        for conn in targets:
            if coming:
                conn.session.watch_online.add(user_id)
            else:
                conn.session.watch_online.discard(user_id)
        broadcast(targets, messages.watchlist_events([{"name": name, "user_ids": [user_id]}]))

    def terminate_user(self, state: AppState, user_id: str) -> int:
        self._publish(state, Terminate(user_id))
        return self._terminate_local(state, user_id)

    def _terminate_local(self, state: AppState, user_id: str) -> int:
        sockets = list(state.users.get(user_id, ()))
        for conn in sockets:
            conn.fail(ErrorCode.UNAUTHORIZED, "You got disconnected by the app.")
        return len(sockets)

    # --- HTTP API side --------------------------------------------------------------------

    def trigger(
        self,
        state: AppState,
        channels: list[str],
        event: str,
        data: Any,
        except_socket_id: str | None = None,
    ) -> int:
        """Publish an event to channels here and on every other node; returns local frames queued."""
        if self.node_id:  # built only in a cluster: a lone node pays nothing per trigger
            self._publish(state, ApiEvent(channels, event, data, except_socket_id))
        if (observer := self.observer) is not None:
            observer.record(
                "api_event",
                state.app.id,
                channels=tuple(channels),
                event=event,
                detail=None if except_socket_id is None else f"except {except_socket_id}",
                data=data,
            )
        return self._deliver_event(state, channels, event, data, except_socket_id, share=True)

    def _deliver_event(
        self,
        state: AppState,
        channels: Iterable[str],
        event: str,
        data: Any,
        except_socket_id: str | None,
        *,
        share: bool = False,
    ) -> int:
        """``share``: this node published the event, so it also keeps the last event of each
        cache channel in the adapter, for nodes started later."""
        sent = 0
        for name in channels:
            channel = state.channels.get(name)
            payload = None
            if channel is not None:
                payload = messages.channel_event(event, name, data)
                sent += broadcast(channel.subscribers.values(), payload, except_socket_id)
            if channel.kind.cache if channel is not None else channel_kind(name).cache:
                ttl = state.app.cache_ttl
                if share:
                    self.adapter.cache_set(state, name, event, data, ttl)
                payload = payload or messages.channel_event(event, name, data)
                state.cache[name] = CachedEvent(payload, data, event, time.monotonic() + ttl)
                state.cache_miss_reported.discard(name)
        return sent

    # --- the cluster ----------------------------------------------------------------------

    def _publish(self, state: AppState, message: Message) -> None:
        if self.node_id:
            self.adapter.publish(Envelope(state.app.id, self.node_id, message))

    def receive(self, envelope: Envelope) -> None:
        """An envelope from another node: deliver to the sockets of this node only."""
        if envelope.node_id == self.node_id:
            return
        state = self.registry.by_id(envelope.app_id)
        if state is None:
            return
        match envelope.message:
            case ApiEvent(channels, event, data, except_socket_id):
                self._deliver_event(state, channels, event, data, except_socket_id)
            case ClientEvent(name, event, data, user_id, sender):
                self._deliver_client_event(state, name, event, data, user_id, sender)
            case MemberAdded(name, user_id, user_info):
                if (channel := state.channels.get(name)) is not None:
                    broadcast(
                        channel.subscribers.values(),
                        messages.member_added(name, user_id, user_info),
                    )
            case MemberRemoved(name, user_id):
                if (channel := state.channels.get(name)) is not None:
                    broadcast(channel.subscribers.values(), messages.member_removed(name, user_id))
            case Terminate(user_id):
                self._terminate_local(state, user_id)
            case UserOnline(user_id):
                self._tell_watchers(state, user_id, "online")
            case UserOffline(user_id):
                self._tell_watchers(state, user_id, "offline")

    def member_gone(self, app_id: str, channel_name: str, user_id: Any) -> None:
        """A dead node's member left the cluster (found by the adapter): tell everyone once."""
        state = self.registry.by_id(app_id)
        if state is None:
            return
        channel = state.channels.get(channel_name)
        if channel is not None:
            broadcast(channel.subscribers.values(), messages.member_removed(channel_name, user_id))
        self._hook(
            state, {"name": "member_removed", "channel": channel_name, "user_id": str(user_id)}
        )
        self._publish(state, MemberRemoved(channel_name, user_id))

    def channel_gone(self, app_id: str, channel_name: str) -> None:
        state = self.registry.by_id(app_id)
        if state is not None:
            self._hook(state, {"name": "channel_vacated", "channel": channel_name})

    # --- HTTP API queries (cluster-wide through the adapter) -------------------------------

    async def channel_counts(self, state: AppState) -> dict[str, int]:
        counts = await self.adapter.channel_counts(state)
        if counts is None:
            counts = {
                name: ch.subscription_count for name, ch in state.channels.items() if ch.subscribers
            }
        return counts

    async def channel_count(self, state: AppState, name: str) -> int:
        count = await self.adapter.channel_count(state, name)
        if count is None:
            channel = state.channels.get(name)
            count = channel.subscription_count if channel is not None else 0
        return count

    async def presence_members(self, state: AppState, name: str) -> list[Member]:
        members = await self.adapter.presence_members(state, name)
        if members is None:
            channel = state.channels.get(name)
            members = (
                channel.presence.members()
                if channel is not None and channel.presence is not None
                else []
            )
        return members

    async def connection_count(self, state: AppState) -> int:
        count = await self.adapter.connection_count(state)
        return len(state.connections) if count is None else count

    # --- timers ---------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Send throttled subscription counts and expire cache channels' last events."""
        for state in self.registry.apps.values():
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
