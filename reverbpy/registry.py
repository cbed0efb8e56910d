"""What this node knows: per app, its channels, their subscribers and presence members.

Plain data structures with no I/O; ``Hub`` combines them with the dispatcher.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reverbpy.config import AppConfig
from reverbpy.dispatch import Peer
from reverbpy.protocol.channels import ChannelKind, ChannelType, channel_kind
from reverbpy.protocol.errors import SubscriptionError
from reverbpy.protocol.presence import Member, PresenceState
from reverbpy.protocol.ratelimit import PerSecond


class Channel:
    __slots__ = ("kind", "name", "presence", "subscribers")

    def __init__(self, name: str) -> None:
        self.name = name
        self.kind: ChannelKind = channel_kind(name)
        self.subscribers: dict[str, Peer] = {}
        self.presence: PresenceState | None = (
            PresenceState() if self.kind.type is ChannelType.PRESENCE else None
        )

    @property
    def subscription_count(self) -> int:
        return len(self.subscribers)

    def __repr__(self) -> str:
        return f"Channel({self.name!r}, subscribers={len(self.subscribers)})"


def presence_full(app: AppConfig, channel: str) -> SubscriptionError:
    return SubscriptionError(
        channel,
        f"Presence channel is full ({app.max_presence_members} members)",
        status=403,
        kind="LimitReached",
    )


@dataclass(frozen=True, slots=True)
class CachedEvent:
    """The last API event of a cache channel, as subscribers receive it."""

    payload: bytes
    data: Any
    event: str
    expires_at: float


@dataclass(slots=True)
class AppState:
    app: AppConfig
    channels: dict[str, Channel] = field(default_factory=dict)
    connections: dict[str, Peer] = field(default_factory=dict)
    users: dict[str, set[Peer]] = field(default_factory=dict)
    """Signed-in users (``pusher:signin``) to their sockets."""
    watchers: dict[str, set[Peer]] = field(default_factory=dict)
    """Watched user id to the signed-in sockets whose watchlist names it."""
    cache: dict[str, CachedEvent] = field(default_factory=dict)
    """Cache channels' last events, kept with no subscribers too (until their TTL)."""
    cache_miss_reported: set[str] = field(default_factory=set)
    subscription_count_dirty: set[str] = field(default_factory=set)
    subscription_count_sent: float = 0.0
    backend_events: PerSecond = field(init=False)
    read_requests: PerSecond = field(init=False)

    def __post_init__(self) -> None:
        self.backend_events = PerSecond(self.app.backend_event_rate)
        self.read_requests = PerSecond(self.app.read_request_rate)

    def subscribe(
        self, conn: Peer, name: str, member: Member | None, *, check_cap: bool = True
    ) -> tuple[Channel, bool]:
        """Add ``conn`` to the channel; returns it and whether ``member`` is new to it here.

        ``check_cap=False`` when the cluster already enforced the presence member cap.
        """
        channel = self.channels.get(name)
        if channel is None:
            channel = self.channels[name] = Channel(name)
        first = False
        if channel.presence is not None and member is not None:
            if (
                check_cap
                and not channel.presence.has_user(member.key)
                and channel.presence.count >= self.app.max_presence_members
            ):
                if not channel.subscribers:
                    del self.channels[name]
                raise presence_full(self.app, name)
            first = channel.presence.add(conn.socket_id, member)
        channel.subscribers[conn.socket_id] = conn
        return channel, first

    def unsubscribe(
        self, conn: Peer, name: str, member: Member | None
    ) -> tuple[Channel | None, bool]:
        """Remove ``conn``; returns the channel and whether ``member`` left it entirely."""
        channel = self.channels.get(name)
        if channel is None or channel.subscribers.pop(conn.socket_id, None) is None:
            return None, False
        last = False
        if channel.presence is not None and member is not None:
            last = channel.presence.remove(conn.socket_id, member)
        if not channel.subscribers:
            del self.channels[name]
        return channel, last

    def sign_in(self, conn: Peer, user_id: str, watchlist: tuple[str, ...] = ()) -> bool:
        """Record a signed-in socket; True when it is the user's first (they come online)."""
        sockets = self.users.setdefault(user_id, set())
        first = not sockets
        sockets.add(conn)
        for watched in watchlist:
            self.watchers.setdefault(watched, set()).add(conn)
        return first

    def sign_out(self, conn: Peer, user_id: str) -> bool:
        """Forget a signed-in socket; True when it was the user's last (they go offline)."""
        for watched in conn.session.watchlist:
            watchers = self.watchers.get(watched)
            if watchers is not None:
                watchers.discard(conn)
                if not watchers:
                    del self.watchers[watched]
        sockets = self.users.get(user_id)
        if sockets is None or conn not in sockets:
            return False
        sockets.discard(conn)
        if sockets:
            return False
        del self.users[user_id]
        return True

    def cached(self, name: str, now: float) -> CachedEvent | None:
        entry = self.cache.get(name)
        if entry is not None and entry.expires_at <= now:
            del self.cache[name]
            return None
        return entry

    def expire_cache(self, now: float) -> None:
        for name in [n for n, e in self.cache.items() if e.expires_at <= now]:
            del self.cache[name]


class Registry:
    """All apps' state on this node, looked up by app id."""

    def __init__(self, apps: tuple[AppConfig, ...]) -> None:
        self.apps: dict[str, AppState] = {a.id: AppState(a) for a in apps}
        self._by_key: dict[str, AppState] = {a.key: self.apps[a.id] for a in apps}

    def by_key(self, key: str) -> AppState | None:
        return self._by_key.get(key)

    def by_id(self, app_id: str) -> AppState | None:
        return self.apps.get(app_id)

    def reload(self, apps: tuple[AppConfig, ...]) -> list[AppState]:
        """Serve ``apps`` from now on; returns the states of the apps that are gone.

        An app id still present keeps its state (sockets, channels, presence, cache) with the
        new config, and its HTTP API rate limiters start afresh with the new limits. The caller
        closes the returned states' sockets (``lifecycle.reload_apps``: 4003).
        """
        new: dict[str, AppState] = {}
        for app in apps:
            state = self.apps.get(app.id)
            if state is None:
                state = AppState(app)
            elif state.app != app:
                state.app = app
                state.backend_events = PerSecond(app.backend_event_rate)
                state.read_requests = PerSecond(app.read_request_rate)
            new[app.id] = state
        removed = [s for app_id, s in self.apps.items() if app_id not in new]
        self.apps = new
        self._by_key = {s.app.key: s for s in new.values()}
        return removed
