"""HMAC-SHA256 signatures: channel authorization, user sign-in, and HTTP API requests.

Every comparison goes through ``hmac.compare_digest`` so a forged signature cannot be found
byte by byte from response times. Signatures are always recomputed over the exact strings the
client sent (``channel_data``, ``user_data``, the raw body): re-serialising JSON would change
bytes and break valid signatures.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass


def sign(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def channel_string_to_sign(socket_id: str, channel: str, channel_data: str | None = None) -> str:
    if channel_data is None:
        return f"{socket_id}:{channel}"
    return f"{socket_id}:{channel}:{channel_data}"


def user_string_to_sign(socket_id: str, user_data: str) -> str:
    return f"{socket_id}::user::{user_data}"


def _check_auth_token(auth: object, key: str, secret: str, string_to_sign: str) -> bool:
    if not isinstance(auth, str):
        return False
    expected = f"{key}:{sign(secret, string_to_sign)}"
    return hmac.compare_digest(auth.encode(), expected.encode())


def verify_channel_auth(
    auth: object, *, key: str, secret: str, socket_id: str, channel: str, channel_data: str | None
) -> bool:
    """``auth`` is ``<key>:<hex hmac>``. Presence channels sign ``channel_data`` too.

    For private channels, Pusher signs ``socket_id:channel`` only; a client that sends
    ``channel_data`` on a private channel anyway is accepted with either form (Reverb signs it
    in, the SDKs do not).
    """
    if _check_auth_token(
        auth, key, secret, channel_string_to_sign(socket_id, channel, channel_data)
    ):
        return True
    if channel_data is not None and not channel.startswith("presence-"):
        return _check_auth_token(auth, key, secret, channel_string_to_sign(socket_id, channel))
    return False


def verify_user_auth(
    auth: object, *, key: str, secret: str, socket_id: str, user_data: str
) -> bool:
    return _check_auth_token(auth, key, secret, user_string_to_sign(socket_id, user_data))


# --- HTTP API (Pusher rest-api.md "Authentication") ---------------------------------------


class RequestAuthError(Exception):
    """The HTTP API request is not correctly signed: rendered as 401 with a JSON body."""


def body_md5(body: bytes) -> str:
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


def request_string_to_sign(method: str, path: str, query: Mapping[str, str]) -> str:
    params = sorted((k.lower(), v) for k, v in query.items() if k.lower() != "auth_signature")
    query_string = "&".join(f"{k}={v}" for k, v in params)
    return f"{method.upper()}\n{path}\n{query_string}"


def sign_request(method: str, path: str, query: Mapping[str, str], secret: str) -> str:
    return sign(secret, request_string_to_sign(method, path, query))


@dataclass(frozen=True, slots=True)
class SignedRequest:
    method: str
    paths: tuple[str, ...]
    """The path as signed; several when a server path prefix may or may not have been signed."""
    query: Mapping[str, str]
    body: bytes


def verify_request(
    request: SignedRequest, *, key: str, secret: str, now: float, max_age: float = 600
) -> None:
    """Raise ``RequestAuthError`` unless the request carries a valid, fresh Pusher signature."""
    q = {k.lower(): v for k, v in request.query.items()}
    for required in ("auth_key", "auth_timestamp", "auth_version", "auth_signature"):
        if required not in q:
            raise RequestAuthError(f"Missing {required} parameter")
    if not hmac.compare_digest(q["auth_key"].encode(), key.encode()):
        raise RequestAuthError("Unknown auth_key")
    if q["auth_version"] != "1.0":
        raise RequestAuthError("Unsupported auth_version (expected 1.0)")
    try:
        timestamp = int(q["auth_timestamp"])
    except ValueError:
        raise RequestAuthError("auth_timestamp must be an integer") from None
    if abs(now - timestamp) > max_age:
        raise RequestAuthError(
            f"Timestamp expired: Given timestamp ({timestamp}) not within {int(max_age)}s "
            f"of server time ({int(now)})"
        )
    if request.body:
        given = q.get("body_md5")
        if given is None:
            raise RequestAuthError("Missing body_md5 parameter for a request with a body")
        if not hmac.compare_digest(given.encode(), body_md5(request.body).encode()):
            raise RequestAuthError("body_md5 does not match the request body")
    signature = q["auth_signature"].encode()
    for path in request.paths:
        expected = sign_request(request.method, path, request.query, secret)
        if hmac.compare_digest(signature, expected.encode()):
            return
    raise RequestAuthError(
        "Invalid signature: you should have sent HmacSHA256Hex(secret, METHOD\\nPATH\\nQUERY)"
    )
