"""``POST events`` and ``POST batch_events`` on aiohttp, and the channel info they may ask for.

The rules (validation, limits, publishing) are ``protocol.api``'s, shared with the front door;
``info`` gathers the counts an answer asks for, for both transports.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from reverbpy.http_api.service import ServedApp
from reverbpy.hub import Hub
from reverbpy.protocol.api import Event, wants_info
from reverbpy.protocol.channels import is_presence
from reverbpy.registry import AppState


async def _channel_info(
    hub: Hub, state: AppState, name: str, attrs: frozenset[str]
) -> dict[str, int]:
    info: dict[str, int] = {}
    if "user_count" in attrs and is_presence(name):
        info["user_count"] = len({m.key for m in await hub.presence_members(state, name)})
    if "subscription_count" in attrs:
        info["subscription_count"] = await hub.channel_count(state, name)
    return info


async def info_answer(
    hub: Hub, state: AppState, events: list[Event], *, batch: bool
) -> dict[str, Any]:
    """The answer to published ``events`` that asked for channel info (both transports)."""
    if batch:
        return {"batch": [await _channel_info(hub, state, e.channels[0], e.info) for e in events]}
    event = events[0]
    return {"channels": {c: await _channel_info(hub, state, c, event.info) for c in event.channels}}


class Events:
    """The handlers, behind ``middleware.signed`` (which found the app and read the body)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def trigger(self, request: web.Request, app: ServedApp, body: bytes) -> Any:
        return await self._handle(app, body, batch=False)

    async def trigger_batch(self, request: web.Request, app: ServedApp, body: bytes) -> Any:
        return await self._handle(app, body, batch=True)

    async def _handle(self, app: ServedApp, body: bytes, *, batch: bool) -> Any:
        events = app.trigger(body, batch=batch, tick=time.monotonic())
        if not wants_info(events):
            return {}
        return await info_answer(self.hub, app.state, events, batch=batch)
