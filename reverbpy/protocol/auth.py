"""HMAC-SHA256 signatures: channel authorization, user sign-in, and HTTP API requests.

Every comparison goes through ``hmac.compare_digest`` so a forged signature cannot be found
byte by byte from response times. Signatures are always recomputed over the exact strings the
client sent (``channel_data``, ``user_data``, the raw body): re-serialising JSON would change
bytes and break valid signatures.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qsl


class _Mac(Protocol):
    def copy(self) -> _Mac: ...
    def update(self, msg: bytes, /) -> None: ...
    def hexdigest(self) -> str: ...


def _keyed_sha256(key: bytes) -> _Mac:
    """A keyed HMAC-SHA256 to copy per message: OpenSSL's own object where CPython has one
    (``hmac.HMAC`` wraps that same object in Python, four more calls per signature)."""
    try:
        from _hashlib import hmac_new
    except ImportError:  # a CPython built without OpenSSL
        return hmac.new(key, digestmod=hashlib.sha256)
    return hmac_new(key, digestmod="sha256")


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


Query = Sequence[tuple[str, str]]
"""Decoded query parameters in the order sent, repeated names kept (what ``parse_query`` returns)."""


def parse_query(raw: str) -> list[tuple[str, str]]:
    """Decode a raw query string (without ``?``) into ``(name, value)`` pairs.

    The result is ``urllib.parse.parse_qsl(raw, keep_blank_values=True)``, which is also what
    aiohttp's ``request.query`` holds: ``+`` is a space, ``%XX`` is UTF-8 (invalid bytes become
    U+FFFD), a name without ``=`` has an empty value, empty pieces are skipped and repeated
    names are all kept. The signature covers these decoded values: the SDKs sign before they
    URL-encode. A query without ``%``, the usual signed request, is split here directly, at a
    fraction of the cost of the general decoder or of a ``MultiDict``.
    """
    if "%" in raw:
        return parse_qsl(raw, keep_blank_values=True)
    pairs = []
    for piece in raw.replace("+", " ").split("&"):
        if piece:
            name, _, value = piece.partition("=")
            pairs.append((name, value))
    return pairs


def body_md5(body: bytes) -> str:
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


def _joined(params: list[tuple[str, str]]) -> str:
    """``a=1&b=2``: lowercased ``(name, value)`` pairs, sorted (by value too for a name sent
    twice), as the signature covers them."""
    return "&".join(map("=".join, sorted(params)))


def request_string_to_sign(
    method: str, path: str, query: Mapping[str, str] | Iterable[tuple[str, str]]
) -> str:
    """Method, path and parameters on three lines; ``auth_signature`` itself is left out."""
    pairs = query.items() if isinstance(query, Mapping) else query
    params = [(k.lower(), v) for k, v in pairs if k.lower() != "auth_signature"]
    return f"{method.upper()}\n{path}\n{_joined(params)}"


def sign_request(
    method: str, path: str, query: Mapping[str, str] | Iterable[tuple[str, str]], secret: str
) -> str:
    return sign(secret, request_string_to_sign(method, path, query))


def check_body_md5(given: str | None, body: bytes) -> None:
    """Raise ``RequestAuthError`` unless a non-empty body is the one the signed ``body_md5``
    names (compared in constant time); an empty body needs none."""
    if not body:
        return
    if given is None:
        raise RequestAuthError("Missing body_md5 parameter for a request with a body")
    expected = hashlib.md5(body, usedforsecurity=False).hexdigest()  # ``body_md5``
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise RequestAuthError("body_md5 does not match the request body")


_REQUIRED = ("auth_key", "auth_timestamp", "auth_version", "auth_signature")
"""In the order their absence is told."""
_REQUIRED_SET = frozenset(_REQUIRED)


class ApiVerifier:
    """Checks HTTP API signatures for one app.

    The HMAC of the secret is keyed once here, and each request signs with a copy of it: a
    fresh ``hmac.new`` per request costs half as much again. Holds the secret, so it has no
    repr of its own.
    """

    __slots__ = ("_hmac", "_key", "max_age")

    def __init__(self, key: str, secret: str, *, max_age: float = 600) -> None:
        self._key = key.encode()
        self._hmac = _keyed_sha256(secret.encode())
        self.max_age = max_age

    def sign(self, string_to_sign: str) -> str:
        mac = self._hmac.copy()
        mac.update(string_to_sign.encode())
        return mac.hexdigest()

    def verify(
        self, method: str, paths: Sequence[str], query: Query, body: bytes, *, now: float
    ) -> dict[str, str]:
        """Raise ``RequestAuthError`` unless the request carries a valid, fresh signature.

        ``paths`` are the paths the signature may cover, tried in order: several when a
        server path prefix may or may not have been signed. Returns the parameters by
        lowercased name (a repeated one: its last value), for the checks that follow.
        """
        q: dict[str, str] = {}  # a repeated name: the last one counts, as in a MultiDict
        signed: list[tuple[str, str]] = []
        for name, value in query:
            name = name.lower()
            q[name] = value
            if name != "auth_signature":
                signed.append((name, value))
        return self._verify(method, paths, q, signed, body, now)

    def verify_query(
        self, method: str, paths: Sequence[str], raw: str, *, now: float
    ) -> dict[str, str]:
        """``verify`` of a raw query string (without ``?``) and no body: the query a signed
        request usually has, without ``%``, is split and checked in one pass (``parse_query``
        then ``verify`` go over it twice)."""
        if "%" in raw:
            return self.verify(method, paths, parse_query(raw), b"", now=now)
        q: dict[str, str] = {}
        signed: list[tuple[str, str]] = []
        for piece in raw.replace("+", " ").split("&"):
            if piece:
                name, _, value = piece.partition("=")
                name = name.lower()
                q[name] = value
                if name != "auth_signature":
                    signed.append((name, value))
        return self._verify(method, paths, q, signed, b"", now)

    def _verify(
        self,
        method: str,
        paths: Sequence[str],
        q: dict[str, str],
        signed: list[tuple[str, str]],
        body: bytes,
        now: float,
    ) -> dict[str, str]:
        """``q``: the parameters by lowercased name; ``signed``: every pair but the signature."""
        if not q.keys() >= _REQUIRED_SET:
            for required in _REQUIRED:
                if required not in q:
                    raise RequestAuthError(f"Missing {required} parameter")
        if not hmac.compare_digest(q["auth_key"].encode(), self._key):
            raise RequestAuthError("Unknown auth_key")
        if q["auth_version"] != "1.0":
            raise RequestAuthError("Unsupported auth_version (expected 1.0)")
        try:
            timestamp = int(q["auth_timestamp"])
        except ValueError:
            raise RequestAuthError("auth_timestamp must be an integer") from None
        if abs(int(now) - timestamp) > self.max_age:  # ints: a 400-digit timestamp is no float
            raise RequestAuthError(
                f"Timestamp expired: Given timestamp ({timestamp}) not within "
                f"{int(self.max_age)}s of server time ({int(now)})"
            )
        if body:
            check_body_md5(q.get("body_md5"), body)
        signature = q["auth_signature"].encode()
        params = "&".join(map("=".join, sorted(signed)))  # ``_joined``, without a call
        method = method.upper()
        for path in paths:
            mac = self._hmac.copy()  # ``sign``, without a call
            mac.update(f"{method}\n{path}\n{params}".encode())
            if hmac.compare_digest(signature, mac.hexdigest().encode()):
                return q
        raise RequestAuthError(
            "Invalid signature: you should have sent HmacSHA256Hex(secret, METHOD\\nPATH\\nQUERY)"
        )


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
    """One-off ``ApiVerifier(key, secret).verify(...)``; the server keeps a verifier per app."""
    ApiVerifier(key, secret, max_age=max_age).verify(
        request.method, request.paths, list(request.query.items()), request.body, now=now
    )
