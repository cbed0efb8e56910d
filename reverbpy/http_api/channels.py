"""Read-only queries: occupied channels, one channel, presence users, connection count."""

from __future__ import annotations

import time

from aiohttp import web

from reverbpy.http_api.errors import ApiError
from reverbpy.http_api.keys import APP_STATE, HUB
from reverbpy.http_api.responses import json
from reverbpy.protocol.channels import channel_kind, channel_name_error, is_presence


def _info(request: web.Request, allowed: frozenset[str]) -> frozenset[str]:
    attrs = frozenset(a for a in request.query.get("info", "").split(",") if a)
    if attrs - allowed:
        raise ApiError(400, f"Unsupported info attribute: {sorted(attrs - allowed)[0]}")
    return attrs


async def channels(request: web.Request) -> web.Response:
    state = request[APP_STATE]
    prefix = request.query.get("filter_by_prefix", "")
    attrs = _info(request, frozenset({"user_count", "subscription_count"}))
    if "user_count" in attrs and not prefix.startswith("presence-"):
        raise ApiError(400, "info=user_count requires filter_by_prefix=presence-")
    hub = request.app[HUB]
    result: dict[str, dict[str, int]] = {}
    for name, count in (await hub.channel_counts(state)).items():
        if not name.startswith(prefix):
            continue
        info: dict[str, int] = {}
        if "user_count" in attrs:
            info["user_count"] = len({m.key for m in await hub.presence_members(state, name)})
        if "subscription_count" in attrs:
            info["subscription_count"] = count
        result[name] = info
    return json({"channels": result})


async def channel(request: web.Request) -> web.Response:
    state = request[APP_STATE]
    name = request.match_info["channel"]
    problem = channel_name_error(name, state.app.max_channel_name_length)
    if problem:
        raise ApiError(400, problem)
    attrs = _info(request, frozenset({"user_count", "subscription_count", "cache"}))
    if "user_count" in attrs and not is_presence(name):
        raise ApiError(400, "info=user_count is only available for presence channels")
    if "cache" in attrs and not channel_kind(name).cache:
        raise ApiError(400, "info=cache is only available for cache channels")
    hub = request.app[HUB]
    count = (await hub.channel_counts(state)).get(name, 0)
    body: dict[str, object] = {"occupied": count > 0}
    if "user_count" in attrs:
        body["user_count"] = len({m.key for m in await hub.presence_members(state, name)})
    if "subscription_count" in attrs:
        body["subscription_count"] = count
    if "cache" in attrs:
        now = time.monotonic()
        cached = state.cached(name, now)
        if cached is not None:
            body["cache"] = {"data": cached.data, "ttl": max(0, int(cached.expires_at - now))}
    return json(body)


async def users(request: web.Request) -> web.Response:
    state = request[APP_STATE]
    name = request.match_info["channel"]
    if not is_presence(name):
        raise ApiError(400, "Users can only be listed for presence channels")
    members = await request.app[HUB].presence_members(state, name)
    return json({"users": [{"id": key} for key in dict.fromkeys(m.key for m in members)]})


async def connections(request: web.Request) -> web.Response:
    return json({"connections": await request.app[HUB].connection_count(request[APP_STATE])})


async def terminate_connections(request: web.Request) -> web.Response:
    state = request[APP_STATE]
    request.app[HUB].terminate_user(state, request.match_info["user_id"])
    return json({})


async def health(request: web.Request) -> web.Response:
    """Cheap and unauthenticated. A node cut off from Redis still serves its own clients, so it
    stays 200 but says so (``/ready`` is the one that turns 503)."""
    adapter = request.app[HUB].adapter
    if adapter.healthy:
        return json({"health": "OK"})
    return json({"health": "DEGRADED", "adapter": adapter.name, "detail": "cluster link down"})
