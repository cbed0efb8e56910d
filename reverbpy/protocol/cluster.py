"""The cluster envelope: what one node tells the others, and the one codec for it.

A node delivers to its own sockets first and then relays one envelope, so the other nodes
deliver to theirs. The hub builds the typed messages below; an adapter carries their encoded
form (``encode``/``decode``) and never looks inside. On the wire an envelope is a JSON object
with short keys, since every event crosses the broker once per node::

    {"t": kind, "n": origin node id, "a": app id, ...}

=================  =========================================================================
``t``              fields
=================  =========================================================================
``event``          API trigger: ``c`` channels, ``e`` event, ``d`` data, ``x`` excluded socket
``client``         client event: ``c`` channel, ``e``, ``d``, ``u`` user id, ``x`` sender
``member_added``   ``c`` channel, ``u`` user id, ``i`` user info
``member_removed`` ``c`` channel, ``u`` user id
``terminate``      ``u`` user id: close the user's sockets (4009)
``online``         ``u``: a signed-in user came (watchlists)
``offline``        ``u``: a signed-in user went
=================  =========================================================================

``decode`` refuses anything else with ``EnvelopeError``: a node never half-applies a message
from a newer or broken peer.

Envelopes are routed by interest (``route``): each goes to one ``Topic``, and a node follows
only the topics it serves, so it never receives, let alone parses, traffic for channels
without a local subscriber. An API event to several channels becomes one envelope per
channel. The topics:

- ``CHANNEL``, the channel's name: events, client events, ``member_added``/``removed``. A node
  follows it from its first local subscriber (a join in progress included) to its last.
- ``USER``, a user id: ``terminate``. Followed while the user has a signed-in socket here.
- ``WATCH``, a user id: ``online``/``offline``. Followed while a local socket's watchlist
  names the user.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class EnvelopeError(ValueError):
    """A malformed envelope from another node (the adapter logs it and goes on)."""


@dataclass(frozen=True, slots=True)
class ApiEvent:
    channels: list[str]
    event: str
    data: Any
    except_socket_id: str | None = None


@dataclass(frozen=True, slots=True)
class ClientEvent:
    channel: str
    event: str
    data: Any
    user_id: Any
    sender: str


@dataclass(frozen=True, slots=True)
class MemberAdded:
    channel: str
    user_id: Any
    user_info: Any = None


@dataclass(frozen=True, slots=True)
class MemberRemoved:
    channel: str
    user_id: Any


@dataclass(frozen=True, slots=True)
class Terminate:
    user_id: str


@dataclass(frozen=True, slots=True)
class UserOnline:
    user_id: str


@dataclass(frozen=True, slots=True)
class UserOffline:
    user_id: str


Message = (
    ApiEvent | ClientEvent | MemberAdded | MemberRemoved | Terminate | UserOnline | UserOffline
)


@dataclass(frozen=True, slots=True)
class Envelope:
    app_id: str
    node_id: str
    message: Message


CHANNEL, USER, WATCH = "c", "u", "w"

Topic = tuple[str, str, str]
"""``(app id, kind, name)``: what a node follows to receive a part of the cluster's traffic;
``kind`` is ``CHANNEL``, ``USER`` or ``WATCH``."""


def route(envelope: Envelope) -> list[tuple[Topic, Envelope]]:
    """Where an envelope goes: the topic of each part, in order."""
    app_id, message = envelope.app_id, envelope.message
    match message:
        case ApiEvent(channels, event, data, except_socket_id):
            if len(channels) == 1:
                return [((app_id, CHANNEL, channels[0]), envelope)]
            return [
                (
                    (app_id, CHANNEL, name),
                    Envelope(
                        app_id, envelope.node_id, ApiEvent([name], event, data, except_socket_id)
                    ),
                )
                for name in channels
            ]
        case ClientEvent(channel) | MemberAdded(channel) | MemberRemoved(channel):
            return [((app_id, CHANNEL, channel), envelope)]
        case Terminate(user_id):
            return [((app_id, USER, user_id), envelope)]
        case UserOnline(user_id) | UserOffline(user_id):
            return [((app_id, WATCH, user_id), envelope)]


def encode(envelope: Envelope) -> dict[str, Any]:
    """The JSON-ready form of an envelope."""
    out: dict[str, Any]
    match envelope.message:
        case ApiEvent(channels, event, data, except_socket_id):
            out = {"t": "event", "c": channels, "e": event, "d": data, "x": except_socket_id}
        case ClientEvent(channel, event, data, user_id, sender):
            out = {"t": "client", "c": channel, "e": event, "d": data, "u": user_id, "x": sender}
        case MemberAdded(channel, user_id, user_info):
            out = {"t": "member_added", "c": channel, "u": user_id, "i": user_info}
        case MemberRemoved(channel, user_id):
            out = {"t": "member_removed", "c": channel, "u": user_id}
        case Terminate(user_id):
            out = {"t": "terminate", "u": user_id}
        case UserOnline(user_id):
            out = {"t": "online", "u": user_id}
        case UserOffline(user_id):
            out = {"t": "offline", "u": user_id}
    out["a"] = envelope.app_id
    out["n"] = envelope.node_id
    return out


def decode(raw: object) -> Envelope:
    """An envelope from its JSON-decoded form; raises ``EnvelopeError``."""
    if not isinstance(raw, dict):
        raise EnvelopeError("an envelope is a JSON object")
    try:
        message = _decode_message(raw)
        return Envelope(str(raw["a"]), str(raw["n"]), message)
    except (KeyError, TypeError) as exc:
        raise EnvelopeError(f"missing or wrong field {exc}") from None


def _decode_message(raw: dict[str, Any]) -> Message:
    match raw.get("t"):
        case "event":
            channels = raw["c"]
            if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
                raise EnvelopeError("'c' must be a list of channel names")
            return ApiEvent(channels, _str(raw, "e"), raw.get("d"), raw.get("x"))
        case "client":
            return ClientEvent(
                _str(raw, "c"), _str(raw, "e"), raw.get("d"), raw.get("u"), _str(raw, "x")
            )
        case "member_added":
            return MemberAdded(_str(raw, "c"), raw["u"], raw.get("i"))
        case "member_removed":
            return MemberRemoved(_str(raw, "c"), raw["u"])
        case "terminate":
            return Terminate(str(raw["u"]))
        case "online":
            return UserOnline(str(raw["u"]))
        case "offline":
            return UserOffline(str(raw["u"]))
        case kind:
            raise EnvelopeError(f"unknown envelope kind {kind!r}")


def _str(raw: dict[str, Any], key: str) -> str:
    value = raw[key]
    if not isinstance(value, str):
        raise EnvelopeError(f"{key!r} must be a string")
    return value
