"""The composition root: the one place that builds a server's parts and wires them together.

``create_app`` builds the hub with its registry, adapter and webhooks, the outbox, the HTTP API
and the front door's triggers, readiness and metrics; hands each part what it needs at
construction; declares the application's keys (``NODE``, and ``CONSOLE`` when the console is on); and starts every background task
in ``cleanup_ctx``, so they stop in the reverse order on the way out. Nothing below this module
looks a service up by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Middleware

from reverbpy import liveness
from reverbpy.config import ServerConfig
from reverbpy.connection import Sockets
from reverbpy.console.web import Console, access
from reverbpy.dispatch import Outbox
from reverbpy.http_api.front import Triggers, one_request
from reverbpy.http_api.middleware import json_errors
from reverbpy.http_api.routes import routes
from reverbpy.http_api.service import HttpApi
from reverbpy.hub import Hub
from reverbpy.lifecycle import Node, ready_handler, refuse_while_draining
from reverbpy.metrics import Metrics
from reverbpy.protocol.errors import ErrorCode
from reverbpy.proxies import forwarded_for
from reverbpy.readiness import Readiness
from reverbpy.registry import Registry
from reverbpy.scaling import create_adapter
from reverbpy.webhooks import Webhooks
from reverbpy.websocket import WebSocketHandler
from reverbpy.wire import WIRE

log = logging.getLogger("reverbpy.server")

NODE = web.AppKey("node", Node)
"""What ``lifecycle.serve`` and the CLI need of a built app."""
CONSOLE = web.AppKey("console", Console)
"""The operator console, when ``console.web.access`` lets it be served (tests reach it here)."""


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


async def _timers(app: web.Application) -> AsyncIterator[None]:
    """The one periodic task: socket liveness, the hub's tick (throttled subscription counts,
    cache expiry) and the front door's idle connections, each at its own cadence."""
    node = app[NODE]
    hub, triggers = node.hub, node.triggers
    interval = min(sweep_interval(node.config), triggers.sweep_every)

    async def loop() -> None:
        last_idle_sweep = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            try:
                liveness.sweep(hub.registry.apps.values(), now)
                hub.tick(now)
                if now - last_idle_sweep >= triggers.sweep_every:
                    last_idle_sweep = now
                    triggers.sweep(now)
            except Exception:  # one bad socket must not stop pings and timeouts for all
                log.exception("sweep failed")

    task = asyncio.create_task(loop())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _close_sockets(app: web.Application) -> None:
    """On SIGTERM/SIGINT (``lifecycle.serve``): every socket gets 4200 and a close, then
    aiohttp stops."""
    node = app[NODE]
    liveness.close_all(
        node.hub.registry.apps.values(), ErrorCode.GENERIC_RECONNECT, "Server shutting down"
    )
    await node.sockets.wait_closed(within=3.0)


async def _webhooks(app: web.Application) -> AsyncIterator[None]:
    # Registered first so it is cleaned up last: what the other tasks emit while they stop,
    # and the held channel_vacated/member_removed, still go out within the grace period.
    node = app[NODE]
    await node.webhooks.start()
    yield
    await node.webhooks.close(grace=node.config.shutdown_grace)


async def _adapter(app: web.Application) -> AsyncIterator[None]:
    """Join the cluster before serving; leave it (members removed at once) on the way out."""
    node = app[NODE]
    adapter = node.hub.adapter
    node.readiness.add_check(lambda: None if adapter.healthy else f"{adapter.name} link down")
    await adapter.start(node.hub)
    yield
    await adapter.close()


def create_app(config: ServerConfig) -> web.Application:
    webhooks = Webhooks()
    hub = Hub(Registry(config.apps), webhooks, create_adapter(config))
    outbox = Outbox(config.max_write_buffer)
    http_api = HttpApi(hub, config)
    readiness = Readiness()
    # Eager joins and leaves only in memory: see ``connection``'s docstring.
    sockets = Sockets(eager=hub.adapter.local)
    websocket = WebSocketHandler(hub, outbox, sockets)
    node = Node(
        config=config,
        hub=hub,
        outbox=outbox,
        sockets=sockets,
        webhooks=webhooks,
        triggers=Triggers(
            http_api,
            head_timeout=config.head_timeout,
            max_pending_heads=config.max_pending_heads,
            # Behind trusted proxies, upgrades go through aiohttp and its X-Forwarded-For
            # middleware, so that the client's address is the one behind the proxy.
            upgrade=None if config.trusted_proxies else websocket.accept,
        ),
        readiness=readiness,
        metrics=Metrics(hub, outbox, readiness, config),
    )
    # Outermost first: who the client is (behind a trusted proxy), one request per connection
    # (see ``front.one_request``), no new socket while draining, then JSON for aiohttp's
    # errors. The WebSocket handler returns once the socket is taken over
    # (``websocket._take_over``), so none of them lives as long as a socket.
    middlewares: list[Middleware] = []
    if config.trusted_proxies:
        middlewares.append(forwarded_for(config.trusted_proxies))
    middlewares += [one_request, refuse_while_draining(readiness), json_errors]
    app = web.Application(middlewares=middlewares, client_max_size=config.max_request_size)
    app[NODE] = node
    app.add_routes(routes(http_api, websocket))
    app.router.add_get(f"{config.path}/ready", ready_handler(readiness))
    if config.metrics_port is None:
        app.router.add_get(f"{config.path}/metrics", node.metrics.handle)
    if access(config) is not None:
        console = Console(hub=hub, webhooks=webhooks, http_api=http_api, config=config)
        app[CONSOLE] = console
        app.add_routes(console.routes())
        app.cleanup_ctx.append(console.sampler)
        app.on_shutdown.append(console.shutdown)
    app.cleanup_ctx.append(_webhooks)
    app.cleanup_ctx.append(_adapter)
    app.cleanup_ctx.append(_timers)
    app.on_shutdown.append(_close_sockets)
    WIRE.debug = config.debug
    return app
