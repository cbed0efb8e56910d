"""Assemble the aiohttp application: state, routes, middleware and background tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from reverbpy import liveness
from reverbpy.config import ServerConfig
from reverbpy.connection import wait_closed
from reverbpy.dispatch import Outbox
from reverbpy.http_api.front import TRIGGERS, Triggers
from reverbpy.http_api.keys import CONFIG, HUB
from reverbpy.http_api.middleware import json_errors
from reverbpy.http_api.routes import routes
from reverbpy.http_api.service import HttpApi
from reverbpy.hub import Hub
from reverbpy.lifecycle import READINESS
from reverbpy.lifecycle import install as install_operations
from reverbpy.protocol.errors import ErrorCode
from reverbpy.registry import Registry
from reverbpy.scaling import create_adapter
from reverbpy.webhooks import Webhooks
from reverbpy.websocket import WebSocketHandler

log = logging.getLogger("reverbpy.server")

OUTBOX = web.AppKey("outbox", Outbox)
WEBHOOKS = web.AppKey("webhooks", Webhooks)


def sweep_interval(config: ServerConfig) -> float:
    """Often enough to act within a quarter of the shortest timeout (pings, pongs, and the
    authorized-connections timeout)."""
    timeouts = [
        t
        for a in config.apps
        for t in (a.ping_interval, a.pong_timeout, a.authorized_connections_timeout)
        if t is not None
    ]
    shortest = min(timeouts, default=30.0)
    return max(0.05, min(5.0, shortest / 4))


async def _heartbeat(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB]
    interval = sweep_interval(app[CONFIG])

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                now = time.monotonic()
                liveness.sweep(hub.registry.apps.values(), now)
                hub.tick(now)
            except Exception:  # one bad socket must not stop pings and timeouts for all
                log.exception("sweep failed")

    task = asyncio.create_task(loop())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _close_sockets(app: web.Application) -> None:
    """On SIGTERM/SIGINT: every socket gets 4200 and a close, then aiohttp stops."""
    liveness.close_all(
        app[HUB].registry.apps.values(), ErrorCode.GENERIC_RECONNECT, "Server shutting down"
    )
    await wait_closed(within=3.0)


async def _webhooks(app: web.Application) -> AsyncIterator[None]:
    # Registered first so it is cleaned up last: what the other tasks emit while they stop,
    # and the held channel_vacated/member_removed, still go out within the grace period.
    webhooks = app[WEBHOOKS]
    await webhooks.start()
    yield
    await webhooks.close(grace=app[CONFIG].shutdown_grace)


async def _adapter(app: web.Application) -> AsyncIterator[None]:
    """Join the cluster before serving; leave it (members removed at once) on the way out."""
    hub = app[HUB]
    adapter = hub.adapter
    app[READINESS].add_check(lambda: None if adapter.healthy else f"{adapter.name} link down")
    await adapter.start(hub)
    yield
    await hub.adapter.close()


def create_app(config: ServerConfig) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=config.max_request_size)
    webhooks = Webhooks()
    hub = Hub(Registry(config.apps), webhooks, create_adapter(config))
    outbox = Outbox(config.max_write_buffer)
    app[CONFIG] = config
    app[HUB] = hub
    app[OUTBOX] = outbox
    app[WEBHOOKS] = webhooks
    http_api = HttpApi(hub, config)
    app[TRIGGERS] = Triggers(http_api)
    app.add_routes(routes(http_api, WebSocketHandler(hub, outbox)))
    app.cleanup_ctx.append(_webhooks)
    app.cleanup_ctx.append(_adapter)
    app.cleanup_ctx.append(_heartbeat)
    app.on_shutdown.append(_close_sockets)
    # The WebSocket handler returns once the socket is taken over (``websocket._take_over``),
    # so the middlewares around it hold nothing for the socket's lifetime.
    install_operations(app, outbox)  # /ready, /metrics, proxy and drain middlewares
    return app
