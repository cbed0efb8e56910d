"""Channel types by name prefix, and channel-name validation.

One table decides the type (Pusher's prefixes, longest first), unlike Reverb which treats
``privatefoo`` as private and ``private-encrypted-cache-`` as a plain private channel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache


class ChannelType(Enum):
    PUBLIC = "public"
    PRIVATE = "private"
    ENCRYPTED = "encrypted"
    PRESENCE = "presence"
    SERVER_TO_USER = "server-to-user"


@dataclass(frozen=True, slots=True)
class ChannelKind:
    type: ChannelType
    cache: bool
    # Worked out once per kind (there are eight), not at every message: on Python 3.11 each
    # ``ChannelType.X`` is a slow look-up, and client events ask at each one.
    needs_auth: bool = field(init=False)
    accepts_client_events: bool = field(init=False)
    """Pusher allows client events on private and presence channels only; never encrypted."""

    def __post_init__(self) -> None:
        kind = self.type
        private = kind is ChannelType.PRIVATE or kind is ChannelType.PRESENCE
        object.__setattr__(self, "needs_auth", private or kind is ChannelType.ENCRYPTED)
        object.__setattr__(self, "accepts_client_events", private)


SERVER_TO_USER_PREFIX = "#server-to-user-"

# Longest prefix first: the first match wins.
_PREFIXES: tuple[tuple[str, ChannelKind], ...] = (
    ("private-encrypted-cache-", ChannelKind(ChannelType.ENCRYPTED, cache=True)),
    ("private-encrypted-", ChannelKind(ChannelType.ENCRYPTED, cache=False)),
    ("private-cache-", ChannelKind(ChannelType.PRIVATE, cache=True)),
    ("presence-cache-", ChannelKind(ChannelType.PRESENCE, cache=True)),
    ("private-", ChannelKind(ChannelType.PRIVATE, cache=False)),
    ("presence-", ChannelKind(ChannelType.PRESENCE, cache=False)),
    ("cache-", ChannelKind(ChannelType.PUBLIC, cache=True)),
    (SERVER_TO_USER_PREFIX, ChannelKind(ChannelType.SERVER_TO_USER, cache=False)),
)
_PUBLIC = ChannelKind(ChannelType.PUBLIC, cache=False)
# The prefixes by their first character, in the same order: most names (every trigger to a
# channel nobody is on asks for its kind) are told public by one look-up.
_BY_INITIAL: dict[str, tuple[tuple[str, ChannelKind], ...]] = {
    prefix[0]: tuple(p for p in _PREFIXES if p[0][0] == prefix[0]) for prefix, _ in _PREFIXES
}


def _kind(name: str) -> ChannelKind:
    for prefix, kind in _BY_INITIAL.get(name[:1], ()):
        if name.startswith(prefix):
            return kind
    return _PUBLIC


_remembered = lru_cache(maxsize=4096)(_kind)
_REMEMBERED_LENGTH = 200  # Pusher's longest channel name (``max_channel_name_length``'s default)


def channel_kind(name: str) -> ChannelKind:
    """The kind of the channel ``name``, remembered for the last 4,096 names of Pusher's length
    at most (names come from clients: a client event names any channel, of up to a message's
    size, before it is checked; 4,096 of 200 characters are under 1 MiB). A private channel's
    client events asked for it with five prefix tests each, a sixteenth of the relay's Python."""
    return _remembered(name) if len(name) <= _REMEMBERED_LENGTH else _kind(name)


def is_presence(name: str) -> bool:
    return name.startswith("presence-")


def is_encrypted(name: str) -> bool:
    return name.startswith("private-encrypted-")


# Pusher's charset; a leading '#' only for the reserved server-to-user channels.
_NAME = re.compile(r"[-a-zA-Z0-9_=@,.;]+")


def channel_name_error(name: object, max_length: int = 200) -> str | None:
    """Why ``name`` is not an acceptable channel name, or None when it is."""
    if not isinstance(name, str) or not name:
        return "Channel name must be a non-empty string"
    if len(name) > max_length:
        return f"Channel name longer than {max_length} characters"
    body = name
    if name.startswith("#"):
        if not name.startswith(SERVER_TO_USER_PREFIX) or len(name) == len(SERVER_TO_USER_PREFIX):
            return "Channel names starting with # are reserved"
        body = name[1:]
    if not _NAME.fullmatch(body):
        return "Channel name contains invalid characters (allowed: a-z A-Z 0-9 - _ = @ , . ;)"
    return None
