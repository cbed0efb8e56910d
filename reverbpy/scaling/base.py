"""The adapter seam between one node's hub and the rest of the cluster.

The hub always keeps its own sockets' state; an adapter adds what only the cluster knows:
presence members on other nodes, subscription and connection counts, and the relay of
events to other nodes. Methods that return ``None`` mean "this node's state is the whole
truth", which is what the in-memory adapter answers, so a single node pays nothing for the seam.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

from reverbpy.protocol.cluster import Envelope, Topic
from reverbpy.protocol.presence import Member
from reverbpy.registry import AppState, Registry


@dataclass(frozen=True, slots=True)
class PresenceJoin:
    """The cluster's answer to a presence subscription."""

    first: bool
    """This is the user's first socket in the whole cluster: ``member_added`` fires."""
    members: list[Member]
    """One entry per socket, so a user may repeat; ``presence.snapshot`` counts users."""


class PresenceFull(Exception):
    """The presence channel already has the maximum number of members cluster-wide."""


class ClusterListener(Protocol):
    """What an adapter tells this node (``hub.Hub`` is the one listener).

    The adapter sits below the hub: it holds this interface, never the hub itself.
    """

    node_id: str
    """Set by a clustering adapter; envelopes from this node are not delivered twice."""

    @property
    def registry(self) -> Registry:
        """This node's state, which an adapter records again in the cluster after an outage."""

    def receive(self, envelope: Envelope) -> None:
        """An envelope from another node: deliver to this node's sockets."""

    def member_gone(self, app_id: str, channel_name: str, user_id: Any) -> None:
        """A dead node's member left the cluster."""

    def user_gone(self, app_id: str, user_id: str) -> None:
        """A dead node's signed-in user is gone from the cluster."""

    def channel_gone(self, app_id: str, channel_name: str) -> None:
        """A dead node's subscribers were the channel's last."""


class Adapter(Protocol):
    name: str
    local: bool
    """True when this node's state is the whole truth: every answer below is ``None`` at
    once, so a join, a leave or a sign-in never waits on it (the in-memory adapter)."""

    @property
    def healthy(self) -> bool:
        """False while the link to the other nodes is down (the node serves its own clients)."""

    async def start(self, listener: ClusterListener) -> None: ...

    async def close(self) -> None: ...

    def publish(self, envelope: Envelope) -> None:
        """Relay to the other nodes, in order, without waiting; this node has already delivered."""

    def follow(self, topic: Topic) -> Awaitable[None] | None:
        """One more local interest in ``topic`` (a join in progress, a signed-in user, a
        watcher): from the first, this node receives the topic's envelopes. Counted, so each
        call is matched by one ``unfollow``, and a join that has begun keeps the topic
        followed whatever leaves meanwhile. Returns what to await until the subscription is
        in place (so nothing published after ``subscription_succeeded`` misses this node),
        or ``None`` when it already is."""

    def unfollow(self, topic: Topic) -> None:
        """One interest less; at none the node stops receiving the topic (batched)."""

    async def presence_join(
        self, state: AppState, channel: str, socket_id: str, member: Member
    ) -> PresenceJoin | None:
        """Record the member cluster-wide; raises ``PresenceFull``."""

    async def presence_leave(
        self, state: AppState, channel: str, socket_id: str, member: Member
    ) -> bool | None:
        """Forget the socket's membership; True when the user left the channel cluster-wide."""

    async def subscriptions_changed(self, state: AppState, channel: str, delta: int) -> int | None:
        """Apply a subscribe (+1) or unsubscribe (-1); returns the cluster-wide count after it."""

    async def user_signed_in(self, state: AppState, user_id: str) -> bool | None:
        """This node's first socket of a signed-in user; True when it is the cluster's first."""

    async def user_signed_out(self, state: AppState, user_id: str) -> bool | None:
        """This node's last socket of the user left; True when it was the cluster's last."""

    async def users_online(self, state: AppState, user_ids: tuple[str, ...]) -> list[str] | None:
        """Which of these users have a signed-in socket anywhere in the cluster."""

    def other_connections(self, state: AppState) -> int:
        """Sockets of this app on the other nodes, as last heard (for ``max_connections``)."""

    def cache_set(self, state: AppState, channel: str, event: str, data: Any, ttl: float) -> None:
        """Share a cache channel's last event with the other nodes (fire and forget)."""

    async def cache_get(self, state: AppState, channel: str) -> tuple[str, Any, float] | None:
        """The cluster's cached ``(event, data, seconds left)`` for a channel this node lacks."""

    async def connection_count(self, state: AppState) -> int | None: ...

    async def channel_counts(self, state: AppState) -> dict[str, int] | None:
        """Occupied channels and their subscription counts, cluster-wide."""

    async def channel_count(self, state: AppState, channel: str) -> int | None:
        """One channel's subscription count, cluster-wide: a trigger asking for its
        channels' info reads only those, not every channel of the app."""

    async def presence_members(self, state: AppState, channel: str) -> list[Member] | None: ...
