"""``POST events`` and ``POST batch_events``: validate, publish, answer with the asked info."""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
from aiohttp import web

from reverbpy.config import AppConfig
from reverbpy.http_api.errors import ApiError
from reverbpy.http_api.keys import APP_STATE, BODY, HUB
from reverbpy.http_api.responses import json
from reverbpy.hub import Hub
from reverbpy.protocol.channels import channel_name_error, is_encrypted, is_presence
from reverbpy.registry import AppState

_SOCKET_ID = re.compile(r"\d+\.\d+")
_EVENT_INFO = frozenset({"subscription_count", "user_count"})
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

    def __init__(self, item: object, app: AppConfig, *, single_channel: bool) -> None:
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
        self.channels = self._channels(item, app, single_channel=single_channel)
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
            attrs = frozenset(a for a in info.split(",") if a)
            if attrs - _EVENT_INFO:
                raise ApiError(400, f"Unsupported info attribute: {sorted(attrs - _EVENT_INFO)[0]}")
        self.name, self.data, self.socket_id, self.info = name, data, socket_id, attrs

    @staticmethod
    def _channels(item: dict[str, Any], app: AppConfig, *, single_channel: bool) -> list[str]:
        if "channels" in item and not single_channel:
            channels = item["channels"]
            if type(channels) is not list or not channels:
                raise ApiError(400, "'channels' must be a non-empty list")
        elif "channel" in item:
            channels = [item["channel"]]
        else:
            raise ApiError(
                400,
                "'channel' is required"
                if single_channel
                else "'channels' or 'channel' is required",
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
            raise ApiError(
                400, "Encrypted channels cannot be triggered together with other channels"
            )
        return list(dict.fromkeys(channels))


async def _channel_info(
    hub: Hub, state: AppState, name: str, attrs: frozenset[str]
) -> dict[str, int]:
    info: dict[str, int] = {}
    if "user_count" in attrs and is_presence(name):
        info["user_count"] = len({m.key for m in await hub.presence_members(state, name)})
    if "subscription_count" in attrs:
        info["subscription_count"] = (await hub.channel_counts(state)).get(name, 0)
    return info


def _within_rate(state: AppState, events: int) -> None:
    if not state.backend_events.allow(time.monotonic(), events):
        raise ApiError(429, f"Over the limit of {state.app.backend_event_rate} events per second")


def publish(hub: Hub, state: AppState, body: bytes, *, batch: bool) -> list[Event]:
    """Validate a ``POST events`` (or ``batch_events``) body and publish it; ``ApiError``
    when it is refused, in which case nothing of it was published."""
    payload = _json_body(body)
    if batch:
        items = payload.get("batch") if isinstance(payload, dict) else None
        if not isinstance(items, list) or not items:
            raise ApiError(400, "'batch' must be a non-empty list of events")
        if len(items) > state.app.max_batch_size:
            raise ApiError(400, f"At most {state.app.max_batch_size} events per batch")
        events = [Event(item, state.app, single_channel=True) for item in items]
    else:
        events = [Event(payload, state.app, single_channel=False)]
    _within_rate(state, len(events))
    for event in events:
        hub.trigger(state, event.channels, event.name, event.data, event.socket_id)
    return events


def wants_info(events: list[Event]) -> bool:
    """Whether the answer needs channel info (an await on the cluster) rather than ``{}``."""
    return any(e.info for e in events)


async def answer(hub: Hub, state: AppState, events: list[Event], *, batch: bool) -> dict[str, Any]:
    """The response body, with the channel info the events asked for."""
    if batch:
        return {"batch": [await _channel_info(hub, state, e.channels[0], e.info) for e in events]}
    event = events[0]
    return {"channels": {c: await _channel_info(hub, state, c, event.info) for c in event.channels}}


async def _handle(request: web.Request, *, batch: bool) -> web.Response:
    hub, state = request.app[HUB], request[APP_STATE]
    events = publish(hub, state, request[BODY], batch=batch)
    if not wants_info(events):
        return json({})
    return json(await answer(hub, state, events, batch=batch))


async def trigger(request: web.Request) -> web.Response:
    return await _handle(request, batch=False)


async def trigger_batch(request: web.Request) -> web.Response:
    return await _handle(request, batch=True)
