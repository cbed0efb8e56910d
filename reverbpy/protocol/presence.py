"""Presence membership of one channel, with one reference per socket.

A user with two tabs open is one member: ``member_added`` fires on their first socket and
``member_removed`` on their last (Reverb #213). Users are told apart by their stringified
``user_id``; the id keeps the JSON type the auth endpoint gave it (Laravel sends integers).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Member:
    user_id: Any
    """str or int, exactly as in ``channel_data``."""
    user_info: Any = None

    @property
    def key(self) -> str:
        return str(self.user_id)


@dataclass(slots=True)
class PresenceState:
    _members: dict[str, Member] = field(default_factory=dict)
    _sockets: dict[str, set[str]] = field(default_factory=dict)

    def add(self, socket_id: str, member: Member) -> bool:
        """Record the socket; True when this is the user's first socket (``member_added``)."""
        sockets = self._sockets.setdefault(member.key, set())
        first = not sockets
        sockets.add(socket_id)
        if first:
            self._members[member.key] = member
        return first

    def remove(self, socket_id: str, member: Member) -> bool:
        """Forget the socket; True when it was the user's last one (``member_removed``)."""
        sockets = self._sockets.get(member.key)
        if sockets is None or socket_id not in sockets:
            return False
        sockets.discard(socket_id)
        if sockets:
            return False
        del self._sockets[member.key]
        del self._members[member.key]
        return True

    def has_user(self, user_key: str) -> bool:
        return user_key in self._members

    @property
    def count(self) -> int:
        return len(self._members)

    def members(self) -> list[Member]:
        return list(self._members.values())


def snapshot(members: Iterable[Member]) -> dict[str, Any]:
    """The ``presence`` object of ``pusher_internal:subscription_succeeded``: unique users."""
    unique = {m.key: m for m in members}
    return {
        "count": len(unique),
        "ids": [m.user_id for m in unique.values()],
        "hash": {k: m.user_info for k, m in unique.items()},
    }
