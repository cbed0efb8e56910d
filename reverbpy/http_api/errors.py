"""HTTP API errors: always a JSON object ``{"error": ...}`` with the right status.

Handlers raise ``ApiError``; the middleware renders it, and turns aiohttp's own 404/405/413
into the same JSON shape (the PHP SDK chokes on non-JSON bodies).
"""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
