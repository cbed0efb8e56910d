"""Authenticate once, before any handler: app lookup (404), body size (413), signature (401)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from reverbpy.http_api.errors import ApiError
from reverbpy.http_api.keys import APP_STATE, BODY, CONFIG, HUB
from reverbpy.http_api.responses import json
from reverbpy.protocol.auth import RequestAuthError, SignedRequest, verify_request

log = logging.getLogger("reverbpy.http_api")

SIGNED_BY_KEY = "signed-by-key"
"""Route name for API routes without ``{app_id}``: the app is the one ``auth_key`` names."""

WEBSOCKET_ROUTE = "pusher-websocket"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json_error(status: int, message: str) -> web.Response:
    return json({"error": message}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return _json_error(exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            return _json_error(exc.status, exc.reason)
        raise


@web.middleware
async def signed_api(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every ``/apps/{app_id}/...`` request must be signed with that app's secret."""
    registry = request.app[HUB].registry
    app_id = request.match_info.get("app_id")
    if app_id is not None:
        state = registry.by_id(app_id)
        if state is None:
            raise ApiError(404, f"No matching application for ID [{app_id}].")
    elif request.match_info.route.name == SIGNED_BY_KEY:
        state = registry.by_key(request.query.get("auth_key", ""))
        if state is None:
            raise ApiError(401, "Unknown auth_key")
    else:
        return await handler(request)
    config = request.app[CONFIG]
    if request.content_length is not None and request.content_length > config.max_request_size:
        raise ApiError(413, f"Request body larger than {config.max_request_size} bytes")
    body = await request.content.read(config.max_request_size + 1) if request.can_read_body else b""
    if len(body) > config.max_request_size:
        raise ApiError(413, f"Request body larger than {config.max_request_size} bytes")
    path = request.path
    # The SDKs sign the path without the server's prefix (Reverb #356); accept both forms.
    paths = (
        (path[len(config.path) :], path)
        if config.path and path.startswith(config.path)
        else (path,)
    )
    try:
        verify_request(
            SignedRequest(request.method, paths, request.query, body),
            key=state.app.key,
            secret=state.app.secret.reveal(),
            now=time.time(),
        )
    except RequestAuthError as exc:
        raise ApiError(401, str(exc)) from None
    if request.method == "GET" and not state.read_requests.allow(time.monotonic()):
        raise ApiError(
            429, f"Over the limit of {state.app.read_request_rate} read requests per second"
        )
    request[APP_STATE] = state
    request[BODY] = body
    return await handler(request)


def skip_websocket(inner: Middleware) -> Middleware:
    """Run ``inner`` for HTTP routes only. The WebSocket handler runs for as long as the
    socket lives, and each middleware awaiting it would keep a frame alive that long: for
    20,000 sockets and five middlewares, megabytes of memory doing nothing."""

    @web.middleware
    def middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        if request.match_info.route.name == WEBSOCKET_ROUTE:
            return handler(request)
        return inner(request, handler)

    return middleware
