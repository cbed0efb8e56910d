"""Console sessions are signed cookies: forged, expired, revoked or other-token cookies are
refused; every process with the same token accepts them (``--workers``). Sign-in is throttled."""

from __future__ import annotations

import time

from aiohttp.test_utils import TestClient, TestServer

from reverbpy.config import AppConfig, Secret, ServerConfig
from reverbpy.console.web import MAX_FAILURES, SESSION_SECONDS, Sessions
from reverbpy.server import CONSOLE, create_app


def test_a_cookie_is_accepted_by_every_process_with_the_token_and_only_those() -> None:
    now = time.time()
    one, two, other = Sessions(b"token"), Sessions(b"token"), Sessions(b"another")
    cookie, session = one.new(now)
    assert b"token" not in cookie.encode()
    assert one.get(cookie, now) == session
    assert two.get(cookie, now) == session  # another worker, same token
    assert other.get(cookie, now) is None
    assert Sessions(None).get(cookie, now) is None


def test_forged_expired_and_revoked_cookies_are_refused() -> None:
    now = time.time()
    sessions = Sessions(b"token")
    cookie, session = sessions.new(now)
    nonce, expires, mac = cookie.split(".")
    assert sessions.get(f"{nonce}.{int(expires) + 3600}.{mac}", now) is None
    assert sessions.get(f"{nonce}x.{expires}.{mac}", now) is None
    assert sessions.get(f"{nonce}.{expires}.{'0' * len(mac)}", now) is None
    assert sessions.get("", now) is None and sessions.get("a.b", now) is None
    assert sessions.get(cookie, now + SESSION_SECONDS + 1) is None
    other_cookie, other = sessions.new(now)
    assert other.csrf != session.csrf
    sessions.end(cookie, now)
    assert sessions.get(cookie, now) is None
    assert sessions.get(other_cookie, now) == other


async def test_sign_in_answers_429_after_too_many_wrong_tokens() -> None:
    app_config = AppConfig(id="1", key="k", secret=Secret("s"))
    config = ServerConfig(host="127.0.0.1", apps=(app_config,), console_token=Secret("right"))
    app = create_app(config)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        origin = {"Origin": f"http://127.0.0.1:{client.port}"}
        response = await client.post("/console/login", data={"token": "wrong"}, headers=origin)
        assert response.status == 401
        now = time.monotonic()
        app[CONSOLE]._failures.extend([now] * (MAX_FAILURES - 1))
        response = await client.post(
            "/console/login", data={"token": "right"}, headers=origin, allow_redirects=False
        )
        assert response.status == 429
        app[CONSOLE]._failures.clear()
        response = await client.post(
            "/console/login", data={"token": "right"}, headers=origin, allow_redirects=False
        )
        assert response.status == 303
