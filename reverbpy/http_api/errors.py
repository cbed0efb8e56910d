"""HTTP API errors on aiohttp: always a JSON object ``{"error": ...}`` with the right status.

The signed routes render their ``ApiError`` (``protocol.api``) through ``error_response``;
``middleware.json_errors`` turns aiohttp's own 404/405/413 into the same shape (the PHP SDK
chokes on non-JSON bodies). The front door writes the same bytes (``error_body``) itself.
"""

from __future__ import annotations

from aiohttp import web

from reverbpy.protocol.api import Answer, error_body


def answer_response(answer: Answer) -> web.Response:
    status, body = answer
    return web.Response(body=body, status=status, content_type="application/json")


def error_response(status: int, message: str) -> web.Response:
    return answer_response((status, error_body(message)))
