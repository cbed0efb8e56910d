"""The Pusher HTTP API's rules, without I/O: the route table, authentication, validation.

Both transports answer from here: the front door (``http_api.front``), which reads plain
signed triggers off the socket itself, and the aiohttp routes (``http_api.routes``) for the
rest. A rule is written once, here; the transports move bytes, read bodies and await the hub.

A signed request is refused by the first check it fails, in this order:

1. the app: by the ``{app_id}`` of the path (404, ``unknown_app``), or by ``auth_key`` on the
   one route without it (401);
2. the declared body size (413, ``too_large``), before a byte of the body is read;
3. the signature of method, path and query (401, ``AppRules.authenticate``), compared in
   constant time. The query carries ``body_md5``, so the body it names is signed too;
4. the body: read by the transport (413 past the limit, 400 when it cannot be decoded), then
   its MD5 against the signed ``body_md5`` (401, ``AppRules.check_body``);
5. the read-request rate, for ``GET`` (429);
6. the route's own checks: parameters, payload (400, 413) and the event rate (429).

The signature comes before any body work that can fail or cost: an unsigned request never has
its body decompressed or parsed.

Every refusal is an ``ApiError(status, message)``, rendered by ``error_body`` as
``{"error": message}`` at the transport boundary, and only there (the PHP SDK chokes on bodies
that are not JSON objects).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from reverbpy.config import AppConfig
from reverbpy.protocol.auth import (
    ApiVerifier,
    RequestAuthError,
    check_body_md5,
)
from reverbpy.protocol.channels import channel_kind, channel_name_error, is_encrypted, is_presence
from reverbpy.protocol.ratelimit import PerSecond

Answer = tuple[int, bytes]
"""An HTTP status and a JSON body."""


# --- errors ---------------------------------------------------------------------------------


class ApiError(Exception):
    """A refused request: its HTTP status and the message of its ``{"error": ...}`` body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def answer(self) -> Answer:
        return self.status, error_body(self.message)


def error_body(message: str) -> bytes:
    """The one rendering of a refusal, for every route and both transports."""
    return orjson.dumps({"error": message})


OK: Final[Answer] = (200, b"{}")
INTERNAL_ERROR: Final[Answer] = (500, error_body("Internal Server Error"))


def unknown_app(app_id: str) -> ApiError:
    return ApiError(404, f"No matching application for ID [{app_id}].")


UNKNOWN_KEY: Final = "Unknown auth_key"


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"Request body larger than {limit} bytes")


def unreadable_body() -> ApiError:
    """The body's framing or ``Content-Encoding`` does not decode (gzip that is not gzip)."""
    return ApiError(400, "Request body could not be decoded")


# --- routes ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    method: Literal["GET", "POST"]
    pattern: str
    """Under the server's path prefix. Also the ``endpoint`` label of the HTTP metrics."""
    auth: Literal["app_id", "auth_key"] | None = "app_id"
    """How the signing app is found: the path's ``{app_id}``, the ``auth_key`` parameter, or
    not at all (an unsigned route)."""
    fast: bool = False
    """Answered by the front door when its head is plain enough (``protocol.http1``)."""


HEALTH: Final = Route("health", "GET", "/up", auth=None)
EVENTS: Final = Route("events", "POST", "/apps/{app_id}/events", fast=True)
BATCH_EVENTS: Final = Route("batch_events", "POST", "/apps/{app_id}/batch_events", fast=True)
CHANNELS: Final = Route("channels", "GET", "/apps/{app_id}/channels")
CHANNEL: Final = Route("channel", "GET", "/apps/{app_id}/channels/{channel}")
USERS: Final = Route("users", "GET", "/apps/{app_id}/channels/{channel}/users")
CONNECTIONS: Final = Route("connections", "GET", "/apps/{app_id}/connections")
TERMINATE: Final = Route(
    "terminate_connections", "POST", "/apps/{app_id}/users/{user_id}/terminate_connections"
)
# pusher-http-python 3.x signs and sends this one without /apps/{id}: the app is found by its
# auth_key, then the signature is checked as for every other route.
TERMINATE_BY_KEY: Final = Route(
    "terminate_connections_by_key",
    "POST",
    "/users/{user_id}/terminate_connections",
    auth="auth_key",
)

ROUTES: Final = (
    HEALTH,
    EVENTS,
    BATCH_EVENTS,
    CHANNELS,
    CHANNEL,
    USERS,
    CONNECTIONS,
    TERMINATE,
    TERMINATE_BY_KEY,
)
"""Every HTTP API route (the WebSocket route is ``http_api.routes``' own)."""


def fast_paths(prefix: str, app_ids: frozenset[str]) -> dict[str, tuple[Route, str]]:
    """The exact paths the front door answers: each fast route for each app id."""
    return {
        prefix + route.pattern.replace("{app_id}", app_id): (route, app_id)
        for route in ROUTES
        if route.fast
        for app_id in app_ids
    }


def signed_paths(prefix: str, path: str) -> tuple[str, ...]:
    """The paths a request's signature may cover: the SDKs sign without the server's path
    prefix (Reverb #356), other clients with it; both are accepted."""
    return (path[len(prefix) :], path) if prefix and path.startswith(prefix) else (path,)


# --- one app --------------------------------------------------------------------------------

Publish = Callable[[list[str], str, str, str | None], object]
"""Publish one event: channels, event name, data, the socket to leave out."""


class AppRules:
    """One app's HTTP API: its signature, limits, validation and publishing.

    Holds the secret (in its verifier), so it has no repr of its own.
    """

    __slots__ = ("_verifier", "app", "backend_events", "publish", "read_requests")

    def __init__(
        self,
        app: AppConfig,
        *,
        backend_events: PerSecond,
        read_requests: PerSecond,
        publish: Publish,
    ) -> None:
        self.app = app
        self.backend_events = backend_events
        self.read_requests = read_requests
        self.publish = publish
        self._verifier = ApiVerifier(app.key, app.secret.reveal())

    def authenticate(
        self, method: str, paths: Sequence[str], query: str, now: float
    ) -> Mapping[str, str]:
        """401 unless method, path and query are signed with the app's secret, recently.

        Returns the decoded parameters by lowercased name (a repeated one: its last value).
        The body is not looked at yet: ``check_body`` does, once the transport has it.
        """
        try:
            return self._verifier.verify_query(method, paths, query, now=now)
        except RequestAuthError as exc:
            raise ApiError(401, str(exc)) from None

    def check_body(self, query: Mapping[str, str], body: bytes) -> None:
        """401 unless a non-empty body is the one the (signed) ``body_md5`` names
        (``query``: what ``authenticate`` returned)."""
        if not body:
            return
        try:
            check_body_md5(query.get("body_md5"), body)
        except RequestAuthError as exc:
            raise ApiError(401, str(exc)) from None

    def allow_read(self, tick: float) -> None:
        """429 past the app's read requests per second (``tick``: a monotonic clock)."""
        if not self.read_requests.allow(tick):
            raise ApiError(
                429, f"Over the limit of {self.app.read_request_rate} read requests per second"
            )

    def trigger(self, body: bytes, *, batch: bool, tick: float) -> list[Event]:
        """Validate a ``POST events`` (or ``batch_events``) body and publish it.

        ``ApiError`` when it is refused, in which case nothing of it was published.
        """
        payload = _json_body(body)
        app = self.app
        if batch:
            items = payload.get("batch") if type(payload) is dict else None
            if type(items) is not list or not items:
                raise ApiError(400, "'batch' must be a non-empty list of events")
            if len(items) > app.max_batch_size:
                raise ApiError(400, f"At most {app.max_batch_size} events per batch")
            events = [Event(item, app, True) for item in items]
        else:
            events = [Event(payload, app, False)]  # positional: keywords cost a dict here
        if not self.backend_events.allow(tick, len(events)):
            raise ApiError(429, f"Over the limit of {app.backend_event_rate} events per second")
        publish = self.publish
        for event in events:
            publish(event.channels, event.name, event.data, event.socket_id)
        return events


def handle_trigger(
    app: AppRules, *, batch: bool, paths: Sequence[str], query: str, body: bytes, now: float,
    tick: float,
) -> Answer | list[Event]:  # fmt: skip
    """A signed ``POST events`` (or ``batch_events``) whose body is all in hand.

    The answer, or the published events when they asked for channel info (which the caller
    gathers: ``http_api.events.info_answer``). ``now`` is the wall clock, ``tick`` a monotonic
    one.
    """
    try:
        query_pairs = app.authenticate("POST", paths, query, now)
        app.check_body(query_pairs, body)
        events = app.trigger(body, batch=batch, tick=tick)
    except ApiError as exc:
        return exc.answer()
    return events if wants_info(events) else OK


def wants_info(events: list[Event]) -> bool:
    """Whether the answer needs channel info (an await on the cluster) rather than ``{}``."""
    for event in events:  # noqa: SIM110 (a loop: no generator made per trigger)
        if event.info:
            return True
    return False


# --- events ---------------------------------------------------------------------------------

_SOCKET_ID = re.compile(r"[0-9]+\.[0-9]+")  # ASCII digits: `\d` would take any script's digits
EVENT_INFO: Final = frozenset({"subscription_count", "user_count"})
_NO_INFO: frozenset[str] = frozenset()


def _json_body(body: bytes) -> Any:
    if not body:
        raise ApiError(400, "Request body must be a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, "Request body is not valid JSON") from None


def _not_a_string(key: str) -> ApiError:
    return ApiError(400, f"'{key}' must be a string")


class Event:
    """One validated event to publish.

    Validation is plain ``type()`` checks and at most one regex per channel: this runs for
    every trigger, and a schema library or a helper call per field costs more than the
    rest of a 0-subscriber trigger.
    """

    __slots__ = ("channels", "data", "info", "name", "socket_id")

    def __init__(self, item: object, app: AppConfig, single_channel: bool) -> None:
        if type(item) is not dict:
            raise ApiError(400, "Each event must be a JSON object")
        name = item.get("name")
        if type(name) is not str:
            raise _not_a_string("name")
        if not name or len(name) > app.max_event_name_length:
            raise ApiError(400, f"Event name must be 1 to {app.max_event_name_length} characters")
        data = item.get("data")
        if type(data) is not str:
            raise _not_a_string("data")
        limit = app.max_event_payload
        # Characters first: UTF-8 is never shorter, and ASCII (the usual JSON) is as long.
        if len(data) > limit or (not data.isascii() and len(data.encode()) > limit):
            raise ApiError(413, f"Event data larger than {limit} bytes")
        self.channels = _channels(item, app, single_channel)
        socket_id = item.get("socket_id")
        if socket_id is not None:
            if type(socket_id) is not str:
                raise _not_a_string("socket_id")
            if not _SOCKET_ID.fullmatch(socket_id):
                raise ApiError(400, "socket_id must look like 123.456")
        info = item.get("info")
        attrs: frozenset[str] = _NO_INFO
        if info is not None:
            if type(info) is not str:
                raise _not_a_string("info")
            attrs = info_attributes(info, EVENT_INFO)
        self.name, self.data, self.socket_id, self.info = name, data, socket_id, attrs


def _channels(item: dict[str, Any], app: AppConfig, single_channel: bool) -> list[str]:
    """The channels an event names, validated; without repeats."""
    if "channels" in item and not single_channel:
        channels = item["channels"]
        if type(channels) is not list or not channels:
            raise ApiError(400, "'channels' must be a non-empty list")
    elif "channel" in item:
        channels = [item["channel"]]
    else:
        raise ApiError(
            400,
            "'channel' is required" if single_channel else "'channels' or 'channel' is required",
        )
    if len(channels) > app.max_channels_per_event:
        raise ApiError(400, f"At most {app.max_channels_per_event} channels per event")
    for name in channels:
        problem = channel_name_error(name, app.max_channel_name_length)
        if problem:
            raise ApiError(400, f"{problem}: {str(name)[:64]!r}")
    if len(channels) == 1:
        return channels
    if any(is_encrypted(c) for c in channels):
        raise ApiError(400, "Encrypted channels cannot be triggered together with other channels")
    return list(dict.fromkeys(channels))


# --- queries --------------------------------------------------------------------------------

CHANNELS_INFO: Final = frozenset({"user_count", "subscription_count"})
CHANNEL_INFO: Final = frozenset({"user_count", "subscription_count", "cache"})


def info_attributes(info: str, allowed: frozenset[str]) -> frozenset[str]:
    """The attributes an ``info`` parameter asks for; 400 for one that is not ``allowed``."""
    attrs = frozenset(a for a in info.split(",") if a)
    if attrs - allowed:
        raise ApiError(400, f"Unsupported info attribute: {sorted(attrs - allowed)[0]}")
    return attrs


def channels_query(query: Mapping[str, str]) -> tuple[str, frozenset[str]]:
    """``GET channels``: the ``filter_by_prefix`` and the info asked for."""
    prefix = query.get("filter_by_prefix", "")
    attrs = info_attributes(query.get("info", ""), CHANNELS_INFO)
    if "user_count" in attrs and not prefix.startswith("presence-"):
        raise ApiError(400, "info=user_count requires filter_by_prefix=presence-")
    return prefix, attrs


def channel_query(app: AppConfig, name: str, query: Mapping[str, str]) -> frozenset[str]:
    """``GET channels/{channel}``: the info asked for, valid for this channel's type."""
    problem = channel_name_error(name, app.max_channel_name_length)
    if problem:
        raise ApiError(400, problem)
    attrs = info_attributes(query.get("info", ""), CHANNEL_INFO)
    if "user_count" in attrs and not is_presence(name):
        raise ApiError(400, "info=user_count is only available for presence channels")
    if "cache" in attrs and not channel_kind(name).cache:
        raise ApiError(400, "info=cache is only available for cache channels")
    return attrs


def users_query(name: str) -> None:
    """``GET channels/{channel}/users``: presence channels only."""
    if not is_presence(name):
        raise ApiError(400, "Users can only be listed for presence channels")
