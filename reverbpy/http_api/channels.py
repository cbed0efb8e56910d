"""Read-only queries (occupied channels, one channel, presence users, connection count), user
termination, and the health route. Parameter rules are ``protocol.api``'s."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from reverbpy.http_api.responses import json
from reverbpy.http_api.service import ServedApp
from reverbpy.hub import Hub
from reverbpy.protocol.api import channel_query, channels_query, users_query


class Channels:
    """The handlers, behind ``middleware.signed`` (which found the app and read the body),
    except ``health``."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def channels(self, request: web.Request, app: ServedApp, body: bytes) -> Any:
        prefix, attrs = channels_query(request.query)
        hub, state = self.hub, app.state
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
        return {"channels": result}

    async def channel(self, request: web.Request, app: ServedApp, body: bytes) -> Any:
        name = request.match_info["channel"]
        attrs = channel_query(app.app, name, request.query)
        hub, state = self.hub, app.state
        count = await hub.channel_count(state, name)
        result: dict[str, object] = {"occupied": count > 0}
        if "user_count" in attrs:
            result["user_count"] = len({m.key for m in await hub.presence_members(state, name)})
        if "subscription_count" in attrs:
            result["subscription_count"] = count
        if "cache" in attrs:
            now = time.monotonic()
            cached = state.cached(name, now)
            if cached is not None:
                result["cache"] = {"data": cached.data, "ttl": max(0, int(cached.expires_at - now))}
        return result

    async def users(self, request: web.Request, app: ServedApp, body: bytes) -> Any:
        name = request.match_info["channel"]
        users_query(name)
        members = await self.hub.presence_members(app.state, name)
        return {"users": [{"id": key} for key in dict.fromkeys(m.key for m in members)]}

    async def connections(self, request: web.Request, app: ServedApp, body: bytes) -> Any:
        return {"connections": await self.hub.connection_count(app.state)}

    async def terminate_connections(self, request: web.Request, app: ServedApp, body: bytes) -> Any:
        self.hub.terminate_user(app.state, request.match_info["user_id"])
        return {}

    async def health(self, request: web.Request) -> web.Response:
        """Cheap and unauthenticated. A node cut off from Redis still serves its own clients,
        so it stays 200 but says so (``/ready`` is the one that turns 503)."""
        adapter = self.hub.adapter
        if adapter.healthy:
            return json({"health": "OK"})
        return json({"health": "DEGRADED", "adapter": adapter.name, "detail": "cluster link down"})
