"""Assemble the aiohttp application: state, routes, middleware and background tasks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from reverbpy.config import ServerConfig
from reverbpy.dispatch import Outbox
from reverbpy.http_api.keys import CONFIG, HUB
from reverbpy.http_api.middleware import json_errors, signed_api
from reverbpy.http_api.routes import routes
from reverbpy.hub import Hub
from reverbpy.registry import Registry
from reverbpy.websocket import WebSocketHandler

OUTBOX = web.AppKey("outbox", Outbox)


def sweep_interval(config: ServerConfig) -> float:
    """Often enough to notice a missed pong within a quarter of the shortest timeout."""
    shortest = min((min(a.ping_interval, a.pong_timeout) for a in config.apps), default=30.0)
    return max(0.05, min(5.0, shortest / 4))


async def _heartbeat(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB]
    interval = sweep_interval(app[CONFIG])

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval)
            hub.sweep()

    task = asyncio.create_task(loop())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(config: ServerConfig) -> web.Application:
    app = web.Application(
        middlewares=[json_errors, signed_api], client_max_size=config.max_request_size
    )
    hub = Hub(Registry(config.apps))
    outbox = Outbox(config.max_write_buffer)
    app[CONFIG] = config
    app[HUB] = hub
    app[OUTBOX] = outbox
    app.add_routes(routes(config.path, WebSocketHandler(hub, outbox)))
    app.cleanup_ctx.append(_heartbeat)
    return app
