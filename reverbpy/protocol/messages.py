"""The wire codec: the only module that knows how Pusher messages look as JSON.

Outbound ``pusher:*`` and ``pusher_internal:*`` events carry ``data`` as a JSON *string*
(Pusher's double encoding, byte-compatible with Reverb); channel events carry the publisher's
``data`` string unchanged. Inbound client messages are decoded once into frozen dataclasses;
anything malformed raises a non-fatal 4200 ``PusherError``.

Encoders return ``bytes`` (UTF-8 JSON) because the transport writes bytes: a broadcast is
encoded once and framed once, whatever the number of subscribers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from reverbpy.protocol.errors import invalid_message

# --- outbound -----------------------------------------------------------------------------


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def json_text(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _internal(event: str, data: Any, channel: str | None = None) -> bytes:
    message: dict[str, Any] = {"event": event, "data": _dumps(data).decode()}
    if channel is not None:
        message["channel"] = channel
    return _dumps(message)


_ESTABLISHED = (
    b'{"event":"pusher:connection_established",'
    b'"data":"{\\"socket_id\\":\\"%s\\",\\"activity_timeout\\":%d}"}'
)


def connection_established(socket_id: str, activity_timeout: int) -> bytes:
    """The first message of every socket, from a template: a socket id is digits and a dot
    (``websocket.new_socket_id``), which JSON needs no escape for, twice encoded or not."""
    return _ESTABLISHED % (socket_id.encode(), activity_timeout)


def error(code: int | None, message: str) -> bytes:
    return _internal("pusher:error", {"code": code, "message": message})


# Reverb's exact bytes: empty ``data`` is omitted for ``pusher:`` events.
PING = b'{"event":"pusher:ping"}'
PONG = b'{"event":"pusher:pong"}'


def subscription_succeeded(channel: str, presence: dict[str, Any] | None = None) -> bytes:
    data: dict[str, Any] = {} if presence is None else {"presence": presence}
    return _internal("pusher_internal:subscription_succeeded", data, channel)


def subscription_error(channel: str, kind: str, error: str, status: int) -> bytes:
    return _internal(
        "pusher:subscription_error", {"type": kind, "error": error, "status": status}, channel
    )


def member_added(channel: str, user_id: Any, user_info: Any) -> bytes:
    data: dict[str, Any] = {"user_id": user_id}
    if user_info is not None:
        data["user_info"] = user_info
    return _internal("pusher_internal:member_added", data, channel)


def member_removed(channel: str, user_id: Any) -> bytes:
    return _internal("pusher_internal:member_removed", {"user_id": user_id}, channel)


def subscription_count(channel: str, count: int) -> bytes:
    return _internal("pusher_internal:subscription_count", {"subscription_count": count}, channel)


def cache_miss(channel: str) -> bytes:
    return _dumps({"event": "pusher:cache_miss", "channel": channel})


def signin_success(user_data: str) -> bytes:
    return _internal("pusher:signin_success", {"user_data": user_data})


def watchlist_events(events: list[dict[str, Any]]) -> bytes:
    return _internal("pusher_internal:watchlist_events", {"events": events})


def channel_event(event: str, channel: str, data: Any, user_id: Any = None) -> bytes:
    """A channel event as subscribers receive it; ``data`` passes through as given."""
    message: dict[str, Any] = {"event": event, "channel": channel, "data": data}
    if user_id is not None:
        message["user_id"] = user_id
    return _dumps(message)


# --- inbound ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Pong:
    pass


@dataclass(slots=True)  # not frozen: see ``ClientEvent``; one is made per subscribe
class Subscribe:
    channel: str
    auth: str | None
    channel_data: str | None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    channel: str


@dataclass(frozen=True, slots=True)
class Signin:
    auth: str
    user_data: str


@dataclass(slots=True)  # not frozen: a frozen __init__ costs a setattr call per field, per event
class ClientEvent:
    event: str
    channel: str
    data: Any
    """Whatever JSON value the client sent; forwarded without re-interpretation."""


ClientMessage = Ping | Pong | Subscribe | Unsubscribe | Signin | ClientEvent


def _pusher_data(message: dict[str, Any]) -> dict[str, Any]:
    """``data`` of a ``pusher:*`` message: an object, or a string holding one."""
    data = message.get("data")
    if data is None:
        return {}
    if isinstance(data, str):
        try:
            data = orjson.loads(data) if data else {}
        except orjson.JSONDecodeError:
            raise invalid_message() from None
    if not isinstance(data, dict):
        raise invalid_message()
    return data


def _optional_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None or isinstance(value, str):
        return value
    raise invalid_message(f"Invalid message format: '{key}' must be a string")


def _required_str(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if isinstance(value, str):
        return value
    raise invalid_message(f"Invalid message format: '{key}' must be a string")


def decode(text: str | bytes) -> ClientMessage:
    """Parse one client frame. Raises a non-fatal 4200 ``PusherError`` on malformed input."""
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise invalid_message() from None
    if not isinstance(message, dict):
        raise invalid_message()
    event = message.get("event")
    if not isinstance(event, str):
        raise invalid_message("Invalid message format: 'event' must be a string")
    match event:
        case "pusher:ping":
            return Ping()
        case "pusher:pong":
            return Pong()
        case "pusher:subscribe":
            data = _pusher_data(message)
            return Subscribe(
                _required_str(data, "channel"),
                _optional_str(data, "auth"),
                _optional_str(data, "channel_data"),
            )
        case "pusher:unsubscribe":
            return Unsubscribe(_required_str(_pusher_data(message), "channel"))
        case "pusher:signin":
            data = _pusher_data(message)
            return Signin(_required_str(data, "auth"), _required_str(data, "user_data"))
    if event.startswith(("pusher:", "pusher_internal:")):
        raise invalid_message(f"Unsupported event: {event[:64]}")
    channel = message.get("channel")
    if not isinstance(channel, str):
        raise invalid_message("Invalid message format: 'channel' must be a string")
    return ClientEvent(event, channel, message.get("data"))
