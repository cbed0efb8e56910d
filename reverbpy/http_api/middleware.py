"""The aiohttp side of the HTTP API: authenticate once, before any handler; JSON errors.

``signed(api, route, handler)`` is what aiohttp calls for a signed route (``routes``): it runs
``protocol.api``'s checks in their order (app, declared size, signature, body, its MD5, read
rate), calls the handler with the app and the body, renders the handler's JSON answer or the
refusal, and records the request (``HttpApi.record``). ``json_errors`` gives aiohttp's own
refusals (404, 405) the same JSON shape, on every route.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from reverbpy.http_api.errors import answer_response, error_response
from reverbpy.http_api.responses import json
from reverbpy.http_api.service import UNKNOWN, HttpApi, ServedApp
from reverbpy.protocol.api import (
    INTERNAL_ERROR,
    ApiError,
    Route,
    signed_paths,
    too_large,
    unreadable_body,
)

log = logging.getLogger("reverbpy.http_api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ApiHandler = Callable[[web.Request, ServedApp, bytes], Awaitable[Any]]
"""A signed route's handler: the request, its app and its body; returns the JSON answer."""


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            return error_response(exc.status, exc.reason)
        raise


def signed(api: HttpApi, route: Route, handler: ApiHandler) -> Handler:
    """The aiohttp handler of a signed ``route``: ``handler`` once the request passed."""
    limit = api.max_request_size
    prefix = api.prefix
    by_key = route.auth == "auth_key"

    async def endpoint(request: web.Request) -> web.StreamResponse:
        start = time.monotonic()
        app: ServedApp | None = None
        status = 500
        try:
            try:
                if by_key:
                    app = api.lookup_by_key(request.query.get("auth_key", ""))
                else:
                    app = api.lookup(request.match_info["app_id"])
                length = request.content_length
                if length is not None and length > limit:
                    raise too_large(limit)
                query = app.authenticate(
                    request.method,
                    signed_paths(prefix, request.path),
                    request.rel_url.raw_query_string,
                    time.time(),
                )
                body = await _read_body(request, limit)
                app.check_body(query, body)
                if request.method == "GET":
                    app.allow_read(time.monotonic())
                response = json(await handler(request, app, body))
            except ApiError as exc:
                response = error_response(exc.status, exc.message)
            except web.HTTPException as exc:
                status = exc.status
                raise
            except ConnectionError:  # the client left mid-body: aiohttp drops the request
                raise
            except Exception:
                log.exception("error handling %s", route.pattern)
                response = answer_response(INTERNAL_ERROR)
            _settle_body(request, response)
            status = response.status
            return response
        finally:
            api.record(route, app.app.id if app is not None else UNKNOWN, status, start)

    return endpoint


def _settle_body(request: web.Request, response: web.StreamResponse) -> None:
    """A body that did not decode, whether the handler read it or not: close the connection
    after the answer.

    Otherwise aiohttp, which reads what a handler left unread so that the connection can serve
    the next request, would meet the error again after the answer, log it as an unhandled
    exception with its traceback, and drop the connection under the client.
    """
    content = request.content
    if content.exception() is not None:
        content.feed_eof()  # nothing left to read: the parser stopped at the error
        response.force_close()


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, decoded; ``ApiError`` 413 past ``limit`` bytes, 400 when it does not
    decode (a ``Content-Encoding`` it is not in, broken chunked framing).

    Usually the body came with the headers and is all buffered already: it is taken without
    awaiting. Otherwise chunks are gathered until its end, since one ``read()`` returns only
    what has arrived so far (a body split over TCP segments used to be cut short, and then
    refused for its body_md5).
    """
    content = request.content
    try:
        if content.is_eof():
            body = content.read_nowait()
        else:
            buffer = bytearray()
            while len(buffer) <= limit and (chunk := await content.readany()):
                buffer += chunk
            body = bytes(buffer)
    except web.RequestPayloadError:
        raise unreadable_body() from None
    if len(body) > limit:
        raise too_large(limit)
    return body
