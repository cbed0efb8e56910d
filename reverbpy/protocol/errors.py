"""Pusher error codes and the exceptions that carry them.

The code decides what pusher-js does after a close (``Protocol.getCloseAction``):

- 4000-4099: do not reconnect unchanged (4001 unknown app, 4003 app disabled, 4004 over
  connection quota, 4005 path not found, 4006/4007/4008 protocol version, 4009 unauthorized).
- 4100-4199: reconnect after at least one second of backoff (4100 over capacity).
- 4200-4299: reconnect at once (4200 generic/server restart, 4201 pong not received,
  4202 closed after inactivity).
- 4300+: never used as a close code here (pusher-js refuses to reconnect); 4301 is the
  non-fatal "client event rejected due to rate limit", 4302 the watchlist overflow.

Exception tree::

    PusherError                 -> pusher:error {code, message}; ``fatal`` closes with ``code``
    └── SubscriptionError       -> pusher:subscription_error on one channel; socket stays open

Errors are raised by the pure protocol code and rendered to the wire at one boundary
(``reverbpy.websocket``), never written as JSON where they are raised.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    SSL_ONLY = 4000
    APP_NOT_FOUND = 4001
    APP_DISABLED = 4003
    OVER_CONNECTION_QUOTA = 4004
    PATH_NOT_FOUND = 4005
    INVALID_VERSION = 4006
    UNSUPPORTED_PROTOCOL = 4007
    NO_PROTOCOL = 4008
    UNAUTHORIZED = 4009
    OVER_CAPACITY = 4100
    GENERIC_RECONNECT = 4200
    PONG_NOT_RECEIVED = 4201
    CLOSED_AFTER_INACTIVITY = 4202
    RATE_LIMITED = 4301
    WATCHLIST_LIMIT = 4302


class PusherError(Exception):
    """An error the client is told about with ``pusher:error``.

    ``fatal`` errors also close the socket with the same code, as Pusher and soketi do
    (Reverb leaves the socket open or drops TCP without a close code).
    """

    def __init__(self, code: int, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fatal = fatal

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}, {self.message!r}, fatal={self.fatal})"


def invalid_message(detail: str = "Invalid message format") -> PusherError:
    """Malformed JSON, unknown ``pusher:`` event or wrong field type: non-fatal 4200."""
    return PusherError(ErrorCode.GENERIC_RECONNECT, detail)


class SubscriptionError(PusherError):
    """A refused subscription: pusher-js routes it to the channel, where Echo's ``.error()`` sees it.

    ``status`` mirrors the HTTP-like status pusher-js reports for a failed auth endpoint
    (401 for a bad signature); ``kind`` is the ``type`` field (``AuthError``, ``LimitReached``...).
    """

    def __init__(
        self, channel: str, message: str, *, status: int = 401, kind: str = "AuthError"
    ) -> None:
        super().__init__(ErrorCode.UNAUTHORIZED, message)
        self.channel = channel
        self.status = status
        self.kind = kind
