"""Authenticate once, before any handler: app lookup (404), body size (413), signature (401)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from reverbpy.config import AppConfig
from reverbpy.http_api.errors import ApiError
from reverbpy.http_api.keys import APP_STATE, BODY, CONFIG, HUB
from reverbpy.http_api.responses import json
from reverbpy.protocol.auth import ApiVerifier, RequestAuthError, parse_query

log = logging.getLogger("reverbpy.http_api")

SIGNED_BY_KEY = "signed-by-key"
"""Route name for API routes without ``{app_id}``: the app is the one ``auth_key`` names."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


_verifiers: dict[str, tuple[AppConfig, ApiVerifier]] = {}
"""App id to its config and verifier. Checked by identity, so a reload that replaces the
config (a new secret) gets a new verifier; bounded by the number of app ids."""


def _verifier(app: AppConfig) -> ApiVerifier:
    cached = _verifiers.get(app.id)
    if cached is None or cached[0] is not app:
        cached = _verifiers[app.id] = (app, ApiVerifier(app.key, app.secret.reveal()))
    return cached[1]


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
def signed_api(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """Every ``/apps/{app_id}/...`` request must be signed with that app's secret.

    Not a coroutine: other routes get their handler's awaitable back untouched.
    """
    app_id = request.match_info.get("app_id")
    if app_id is None and request.match_info.route.name != SIGNED_BY_KEY:
        return handler(request)
    return _signed(request, handler, app_id)


async def _signed(request: web.Request, handler: Handler, app_id: str | None) -> web.StreamResponse:
    app = request.app
    registry = app[HUB].registry
    if app_id is not None:
        state = registry.by_id(app_id)
        if state is None:
            raise ApiError(404, f"No matching application for ID [{app_id}].")
    else:
        state = registry.by_key(request.query.get("auth_key", ""))
        if state is None:
            raise ApiError(401, "Unknown auth_key")
    config = app[CONFIG]
    limit = config.max_request_size
    length = request.content_length
    if length is not None and length > limit:
        raise ApiError(413, f"Request body larger than {limit} bytes")
    body = await _read_body(request, limit)
    check_signature(
        state.app, config.path, request.method, request.path, request.rel_url.raw_query_string, body
    )
    if request.method == "GET" and not state.read_requests.allow(time.monotonic()):
        raise ApiError(
            429, f"Over the limit of {state.app.read_request_rate} read requests per second"
        )
    request[APP_STATE] = state
    request[BODY] = body
    return await handler(request)


def check_signature(
    app: AppConfig, prefix: str, method: str, path: str, raw_query: str, body: bytes
) -> None:
    """``ApiError`` 401 unless the request is signed with the app's secret, recently."""
    # The SDKs sign the path without the server's prefix (Reverb #356); accept both forms.
    paths = (path[len(prefix) :], path) if prefix and path.startswith(prefix) else (path,)
    try:
        _verifier(app).verify(method, paths, parse_query(raw_query), body, now=time.time())
    except RequestAuthError as exc:
        raise ApiError(401, str(exc)) from None


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The whole body; ``ApiError`` 413 past ``limit`` bytes.

    Usually the body came with the headers and is all buffered already: it is taken without
    awaiting. Otherwise chunks are gathered until its end, since one ``read()`` returns only
    what has arrived so far (a body split over TCP segments used to be cut short, and then
    refused for its body_md5).
    """
    content = request.content
    if content.is_eof():
        body = content.read_nowait()
    else:
        buffer = bytearray()
        while len(buffer) <= limit and (chunk := await content.readany()):
            buffer += chunk
        body = bytes(buffer)
    if len(body) > limit:
        raise ApiError(413, f"Request body larger than {limit} bytes")
    return body
