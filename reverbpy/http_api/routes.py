"""The whole route table, on one screen."""

from __future__ import annotations

from aiohttp import web

from reverbpy.http_api import channels, events
from reverbpy.http_api.middleware import SIGNED_BY_KEY
from reverbpy.websocket import WebSocketHandler

WEBSOCKET_ROUTE = "pusher-websocket"


def routes(prefix: str, websocket: WebSocketHandler) -> list[web.RouteDef]:
    p = prefix
    return [
        web.get(f"{p}/app/{{key}}", websocket.handle, name=WEBSOCKET_ROUTE),
        web.get(f"{p}/up", channels.health),
        web.post(f"{p}/apps/{{app_id}}/events", events.trigger),
        web.post(f"{p}/apps/{{app_id}}/batch_events", events.trigger_batch),
        web.get(f"{p}/apps/{{app_id}}/channels", channels.channels),
        web.get(f"{p}/apps/{{app_id}}/channels/{{channel}}", channels.channel),
        web.get(f"{p}/apps/{{app_id}}/channels/{{channel}}/users", channels.users),
        web.get(f"{p}/apps/{{app_id}}/connections", channels.connections),
        web.post(
            f"{p}/apps/{{app_id}}/users/{{user_id}}/terminate_connections",
            channels.terminate_connections,
        ),
        # pusher-http-python 3.x signs and sends this one without /apps/{id}: the app is
        # found by its auth_key, then the signature is checked as for every other route.
        web.post(
            f"{p}/users/{{user_id}}/terminate_connections",
            channels.terminate_connections,
            name=SIGNED_BY_KEY,
        ),
    ]
