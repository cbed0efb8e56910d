"""The default adapter: one node, whose own state is the whole truth."""

from __future__ import annotations

from typing import Any

from reverbpy.config import ServerConfig
from reverbpy.protocol.cluster import Envelope, Topic
from reverbpy.protocol.presence import Member
from reverbpy.registry import AppState
from reverbpy.scaling.base import ClusterListener, PresenceJoin


class MemoryAdapter:
    name = "memory"
    local = True
    healthy = True

    def __init__(self, config: ServerConfig | None = None) -> None:
        pass

    async def start(self, listener: ClusterListener) -> None:
        pass

    async def close(self) -> None:
        pass

    def publish(self, envelope: Envelope) -> None:
        pass

    def follow(self, topic: Topic) -> None:
        return None

    def unfollow(self, topic: Topic) -> None:
        pass

    async def presence_join(
        self, state: AppState, channel: str, socket_id: str, member: Member
    ) -> PresenceJoin | None:
        return None

    async def presence_leave(
        self, state: AppState, channel: str, socket_id: str, member: Member
    ) -> bool | None:
        return None

    async def subscriptions_changed(self, state: AppState, channel: str, delta: int) -> int | None:
        return None

    async def user_signed_in(self, state: AppState, user_id: str) -> bool | None:
        return None

    async def user_signed_out(self, state: AppState, user_id: str) -> bool | None:
        return None

    async def users_online(self, state: AppState, user_ids: tuple[str, ...]) -> list[str] | None:
        return None

    def other_connections(self, state: AppState) -> int:
        return 0

    def cache_set(self, state: AppState, channel: str, event: str, data: Any, ttl: float) -> None:
        pass

    async def cache_get(self, state: AppState, channel: str) -> tuple[str, Any, float] | None:
        return None

    async def connection_count(self, state: AppState) -> int | None:
        return None

    async def channel_counts(self, state: AppState) -> dict[str, int] | None:
        return None

    async def channel_count(self, state: AppState, channel: str) -> int | None:
        return None

    async def presence_members(self, state: AppState, channel: str) -> list[Member] | None:
        return None
