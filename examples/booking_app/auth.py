"""Admin sign-in, the signed session cookie and CSRF protection.

No extra dependency: the session is a small JSON document in a cookie signed with HMAC-SHA256
(tamper-proof, not secret: it holds only an admin id and the CSRF token). Passwords are hashed
with scrypt from the standard library. The CSRF token is checked on every unsafe request, the
header `X-CSRF-TOKEN` (what Echo and our fetch calls send) or the form field `_token` (HTML forms).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

COOKIE_NAME = "booking_session"
SESSION_MAX_AGE = 7 * 24 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# scrypt cost: ~16 MiB and a few tens of ms per hash, the usual interactive-login setting.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    return "$".join(
        ["scrypt", str(_SCRYPT_N), str(_SCRYPT_R), str(_SCRYPT_P), _b64(salt), _b64(digest)]
    )


@functools.cache
def dummy_hash() -> str:
    """Checked when the email is unknown, so a miss costs as much time as a wrong password."""
    return hash_password(secrets.token_urlsafe(16))


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = hashlib.scrypt(
            password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


class Session(dict[str, Any]):
    """The request's session data; setting or deleting a key marks it for saving."""

    def __init__(self, data: dict[str, Any] | None = None, *, new: bool = False) -> None:
        super().__init__(data or {})
        self.changed = new

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.changed = True

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.changed = True

    def clear(self) -> None:
        super().clear()
        self.changed = True

    @property
    def csrf_token(self) -> str:
        token = self.get("csrf")
        if not isinstance(token, str):
            token = secrets.token_urlsafe(32)
            self["csrf"] = token
        return token

    @property
    def admin_id(self) -> int | None:
        value = self.get("admin_id")
        return value if isinstance(value, int) else None


SESSION = web.RequestKey("session", Session)


def sign_session(data: dict[str, Any], key: bytes, *, now: float | None = None) -> str:
    payload = _b64(
        json.dumps({**data, "iat": int(now or time.time())}, separators=(",", ":")).encode()
    )
    return f"{payload}.{_b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())}"


def load_session(cookie: str | None, key: bytes, *, now: float | None = None) -> Session:
    """The session in `cookie`, or a new empty one if it is missing, forged or expired."""
    if not cookie or "." not in cookie:
        return Session(new=True)
    payload, _, signature = cookie.partition(".")
    expected = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(signature, expected):
        return Session(new=True)
    try:
        data = json.loads(_unb64(payload))
    except ValueError:
        return Session(new=True)
    if not isinstance(data, dict):
        return Session(new=True)
    issued = data.pop("iat", 0)
    if not isinstance(issued, int) or (now or time.time()) - issued > SESSION_MAX_AGE:
        return Session(new=True)
    return Session(data)


def session_middleware(key: bytes) -> Any:
    """Load the session before the handler and write the cookie back if the handler changed it."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        session = load_session(request.cookies.get(COOKIE_NAME), key)
        request[SESSION] = session
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            # Redirects raised by handlers (login, logout) must carry the new cookie too.
            _save(exc, session, key)
            raise
        _save(response, session, key)
        return response

    return middleware


def _save(response: web.StreamResponse, session: Session, key: bytes) -> None:
    if session.changed and not response.prepared:
        response.set_cookie(
            COOKIE_NAME,
            sign_session(dict(session), key),
            max_age=SESSION_MAX_AGE,
            httponly=True,
            samesite="Lax",
            path="/",
        )


def get_session(request: web.Request) -> Session:
    return request[SESSION]


@web.middleware
async def csrf_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Reject unsafe requests without the session's CSRF token (403, like a failed policy)."""
    if request.method not in SAFE_METHODS:
        session = get_session(request)
        sent = request.headers.get("X-CSRF-TOKEN")
        if sent is None and request.content_type in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            sent = str((await request.post()).get("_token", ""))
        expected = session.get("csrf")
        if not (isinstance(expected, str) and sent and hmac.compare_digest(sent, expected)):
            raise web.HTTPForbidden(text="CSRF token missing or invalid; reload the page.")
    return await handler(request)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
