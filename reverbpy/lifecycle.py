"""Start, reload and stop one server process.

Stop (SIGTERM or SIGINT), bounded by ``shutdown_grace`` seconds:

1. ``/ready`` answers 503 and new WebSocket upgrades are refused with 503;
2. every socket gets ``pusher:error`` 4200 and a close 4200, so pusher-js reconnects at once
   (through the load balancer, to a node that is still ready);
3. the listener closes and aiohttp runs the shutdown hooks: queued webhooks are flushed;
4. the process exits with status 0.

A second SIGTERM/SIGINT during the stop exits at once (status 0), whatever is still queued.

Reload (SIGHUP, or ``reverbpy reload``): the configuration is read again the way it was at
start (same ``.env`` file, apps file and flags). Apps that appear are served at once; apps
that disappear (or become disabled) have their sockets closed with 4003; changed limits apply
to new and existing sockets. Other settings (host, port, TLS paths...) need a restart; the
TLS certificate and key files themselves are re-read. A reload that fails to parse keeps the
running configuration and logs why.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

from reverbpy import logs
from reverbpy.config import AppConfig, ConfigError, ServerConfig
from reverbpy.connection import Sockets
from reverbpy.dispatch import Outbox
from reverbpy.http_api.front import KEEPALIVE_TIMEOUT, FrontDoor, Triggers, aiohttp_handlers
from reverbpy.hub import Hub
from reverbpy.liveness import close_all
from reverbpy.metrics import Metrics
from reverbpy.protocol.errors import ErrorCode
from reverbpy.readiness import Readiness
from reverbpy.registry import AppState
from reverbpy.webhooks import Webhooks

log = logging.getLogger("reverbpy.lifecycle")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True, kw_only=True)
class Node:
    """Everything one server process runs, built once by ``server.create_app`` and passed
    to what needs it (no service is looked up by name)."""

    config: ServerConfig
    hub: Hub
    outbox: Outbox
    sockets: Sockets
    webhooks: Webhooks
    triggers: Triggers
    readiness: Readiness
    metrics: Metrics


def ready_handler(readiness: Readiness) -> Handler:
    """``/ready``: 200 while this node should get clients, else 503 with the reason."""

    async def ready(request: web.Request) -> web.StreamResponse:
        problem = readiness.problem()
        if problem is None:
            return web.json_response({"ready": True})
        return web.json_response({"ready": False, "reason": problem}, status=503)

    return ready


def refuse_while_draining(
    readiness: Readiness,
) -> Middleware:
    """Middleware: while the node drains, a new WebSocket gets 503 instead of a socket that
    would be closed with 4200 a moment later."""

    @web.middleware
    def middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        if readiness.draining and request.headers.get("Upgrade", "").lower() == "websocket":
            raise web.HTTPServiceUnavailable(text="shutting down")
        return handler(request)

    return middleware


# --- reload --------------------------------------------------------------------------------


def _close(states: Iterable[AppState], reason: str) -> int:
    return close_all(states, ErrorCode.APP_DISABLED, reason)


def reload_apps(node: Node, apps: tuple[AppConfig, ...]) -> dict[str, list[str]]:
    """Swap the served apps without dropping the sockets of apps that stay.

    Returns the app ids ``added``, ``removed`` and ``changed`` (for the log line).
    """
    registry = node.hub.registry
    before = {i: s.app for i, s in registry.apps.items()}
    removed = registry.reload(apps)
    node.triggers.refresh()
    closed = _close(removed, "Application removed")
    disabled = [s for s in registry.apps.values() if not s.app.enabled]
    closed += _close(disabled, "Application disabled")
    logs.SECRETS.set(
        {a.secret.reveal() for a in apps}
        | {a.secret.reveal() for a in before.values()}
        | set(logs.SECRETS.secrets)
    )
    result = {
        "added": sorted(a.id for a in apps if a.id not in before),
        "removed": sorted(i for i in before if i not in registry.apps),
        "changed": sorted(a.id for a in apps if a.id in before and before[a.id] != a),
    }
    log.info(
        "reloaded apps: added=%s removed=%s changed=%s, %d sockets closed with 4003",
        result["added"],
        result["removed"],
        result["changed"],
        closed,
    )
    return result


# --- the process ---------------------------------------------------------------------------


class PidFile:
    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None

    def __enter__(self) -> PidFile:
        if self.path is not None:
            self.path.write_text(f"{os.getpid()}\n")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                if self.path.read_text().strip() == str(os.getpid()):
                    self.path.unlink()


# Cyclic garbage collection: a full (generation 2) collection visits every tracked object, about
# ten per socket, and stops the loop meanwhile: 80 to 100 ms at 20,000 sockets, the handshake
# p99 of a connection storm (45 ms against soketi's 10). Sockets need no such collection: they
# are freed by reference counting, with no cycle left behind (tests/test_gc.py). So the objects
# made at start-up (modules, the app) are frozen out of every collection, and a full collection
# waits for 1,000 young ones instead of 10 (about 7 M allocations of tracked objects; Python
# still skips it until the survivors have grown by a quarter). Young collections, which catch
# the short-lived cycles of requests and exceptions, are as frequent as ever. Measured: p99
# 52 -> 8.6 ms, 19,900 sockets over 100 channels at 2,000/s.
GC_THRESHOLDS = (700, 10, 1000)


def tune_gc() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def serve(
    app: web.Application,
    node: Node,
    sock: socket.socket,
    *,
    ssl_context: ssl.SSLContext | None = None,
    metrics_app: web.Application | None = None,
    metrics_sock: socket.socket | None = None,
    loader: Callable[[], ServerConfig] | None = None,
) -> int:
    """Run until SIGTERM/SIGINT, then stop gracefully (see the module docstring)."""
    config = node.config
    readiness = node.readiness
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=config.shutdown_grace,
        keepalive_timeout=KEEPALIVE_TIMEOUT,
    )
    await runner.setup()
    tune_gc()
    loop = asyncio.get_running_loop()
    triggers = node.triggers
    assert runner.server is not None
    aiohttp_server = aiohttp_handlers(runner.server)
    # Not a ``web.SockSite``: connections start at a ``FrontDoor`` (see ``http_api.front``).
    server = await loop.create_server(
        lambda: FrontDoor(triggers, aiohttp_server), sock=sock, backlog=4096, ssl=ssl_context
    )
    metrics_runner = metrics_server = None
    if metrics_app is not None and metrics_sock is not None:
        metrics_runner = web.AppRunner(metrics_app, handle_signals=False, access_log=None)
        await metrics_runner.setup()
        assert metrics_runner.server is not None
        # Its own handlers too, so a malformed head there is a JSON 400, not a traceback.
        metrics_server = await loop.create_server(
            aiohttp_handlers(metrics_runner.server), sock=metrics_sock, ssl=ssl_context
        )

    stopping = asyncio.Event()

    def on_stop(name: str) -> None:
        if stopping.is_set():
            log.warning("%s again: exiting now", name)
            logging.shutdown()
            os._exit(0)
        log.info("%s: draining (grace %.1fs)", name, config.shutdown_grace)
        readiness.draining = True
        stopping.set()

    def on_reload() -> None:
        if loader is None:
            return
        try:
            new = loader()
        except ConfigError as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
            return
        if new.generated_app:
            log.error("reload found no app configured, keeping the running apps")
            return
        reload_apps(node, new.apps)
        if ssl_context is not None and config.tls_cert and config.tls_key:
            try:
                ssl_context.load_cert_chain(config.tls_cert, config.tls_key)
            except (OSError, ssl.SSLError) as exc:
                log.error("reload could not re-read the TLS certificate: %s", exc)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop, sig.name)
    loop.add_signal_handler(signal.SIGHUP, on_reload)

    await stopping.wait()
    server.close()  # no new connections; aiohttp's own are closed by runner.cleanup()
    if metrics_server is not None:
        metrics_server.close()
    triggers.shut_down()
    try:
        async with asyncio.timeout(config.shutdown_grace + 1.0):
            await triggers.drained(config.shutdown_grace)
            await runner.cleanup()
            if metrics_runner is not None:
                await metrics_runner.cleanup()
    except TimeoutError:
        log.warning("grace period of %.1fs over, exiting", config.shutdown_grace)
    log.info("stopped")
    return 0


def metrics_app(node: Node) -> web.Application:
    """The app served on ``--metrics-port``: ``/metrics`` and ``/ready`` only."""
    app = web.Application()
    app.router.add_get("/metrics", node.metrics.handle)
    app.router.add_get("/ready", ready_handler(node.readiness))
    return app
