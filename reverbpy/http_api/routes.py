"""The route table on aiohttp: ``protocol.api.ROUTES`` with their handlers, and the WebSocket.

The front door reads the same table (``Route.fast``) to know which requests are its own.
"""

from __future__ import annotations

from aiohttp import web

from reverbpy.http_api.channels import Channels
from reverbpy.http_api.events import Events
from reverbpy.http_api.middleware import ApiHandler, Handler, signed
from reverbpy.http_api.service import HttpApi
from reverbpy.protocol import api
from reverbpy.websocket import WebSocketHandler

WEBSOCKET_ROUTE = "pusher-websocket"


def routes(http_api: HttpApi, websocket: WebSocketHandler) -> list[web.RouteDef]:
    events, channels = Events(http_api.hub), Channels(http_api.hub)
    unsigned: dict[api.Route, Handler] = {api.HEALTH: channels.health}
    handlers: dict[api.Route, ApiHandler] = {
        api.EVENTS: events.trigger,
        api.BATCH_EVENTS: events.trigger_batch,
        api.CHANNELS: channels.channels,
        api.CHANNEL: channels.channel,
        api.USERS: channels.users,
        api.CONNECTIONS: channels.connections,
        api.TERMINATE: channels.terminate_connections,
        api.TERMINATE_BY_KEY: channels.terminate_connections,
    }
    p = http_api.prefix
    table = [web.get(f"{p}/app/{{key}}", websocket.handle, name=WEBSOCKET_ROUTE)]
    for route in api.ROUTES:
        if route.auth is None:
            handler = unsigned[route]
        else:
            handler = signed(http_api, route, handlers[route])
        if route.method == "GET":  # and HEAD
            table.append(web.get(p + route.pattern, handler, name=route.name))
        else:
            table.append(web.route(route.method, p + route.pattern, handler, name=route.name))
    return table
