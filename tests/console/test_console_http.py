"""The console over HTTP on a real server (``reverbpy serve`` on loopback, the worktree's code:
``start_server`` runs it from the repository root): access rules, sign-in, CSRF, the event
creator through the HTTP API's own rules, channels and presence members, the live stream, and
no secret in any answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import ServerProcess, free_port, start_server
from tests.console.conftest import SECRET, TOKEN
from tests.functional.jsclient import in_thread, sdk
from tests.functional.test_sdk_http_api import Sockets


class Browser:
    """A cookie-keeping client that remembers every body it was sent."""

    def __init__(self, server: ServerProcess, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.session = session
        self.base = f"{server.http_url}/console"
        self.bodies: list[str] = []
        self.csrf = ""

    async def request(self, method: str, path: str, **kw: Any) -> tuple[int, str]:
        kw.setdefault("allow_redirects", False)
        async with self.session.request(method, self.base + path, **kw) as response:
            body = await response.text()
            self.bodies.append(body)
            self.bodies.append(str(response.headers))
            return response.status, body

    async def json(self, path: str, **params: str) -> Any:
        status, body = await self.request("GET", path, params=params)
        assert status == 200, body
        return json.loads(body)

    async def sign_in(self) -> None:
        status, _ = await self.request("POST", "/login", data={"token": TOKEN})
        assert status == 303
        status, page = await self.request("GET", "")
        assert status == 200 and 'data-testid="log"' in page
        self.csrf = page.split('name="csrf-token" content="')[1].split('"')[0]

    async def send(self, headers: dict[str, str] | None = None, **event: Any) -> tuple[int, Any]:
        body = {"app": self.server.app_id, "data": "{}", **event}
        given = {"X-CSRF-Token": self.csrf} if headers is None else headers
        status, text = await self.request("POST", "/api/events", json=body, headers=given)
        return status, json.loads(text)


@pytest.fixture
async def browser(console_server: ServerProcess) -> AsyncIterator[Browser]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield Browser(console_server, session)


@pytest.fixture
async def sockets(console_server: ServerProcess) -> AsyncIterator[Sockets]:
    async with aiohttp.ClientSession() as session:
        sockets = Sockets(console_server, session)
        yield sockets
        for sock in sockets.opened:
            await sock.ws.close()


async def test_the_console_is_off_without_a_token(server: ServerProcess) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("/console", "/console/api/apps", "/console/stream"):
            async with session.get(server.http_url + path) as response:
                assert response.status == 404


async def test_loopback_with_a_generated_app_opens_without_sign_in(tmp_path: Path) -> None:
    unset = {"REVERB_APP_ID": "", "REVERB_APP_KEY": "", "REVERB_APP_SECRET": ""}
    server = start_server(tmp_path, extra_env=unset)
    try:
        url = f"{server.http_url}/console"
        assert f"Console (loopback, development app, no sign-in): {url}" in server.log()
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            async with session.get(url) as response:
                page = await response.text()
                assert response.status == 200 and 'name="csrf-token"' in page
            async with session.get(f"{url}/api/apps") as response:
                apps = (await response.json())["apps"]
                assert len(apps) == 1 and set(apps[0]) == {"id", "key", "enabled"}
            # Never through a proxy, not even one on this machine.
            forwarded = {"X-Forwarded-For": "203.0.113.9"}
            async with session.get(f"{url}/api/apps", headers=forwarded) as response:
                assert response.status == 403
            async with session.get(url, headers={"Forwarded": "for=203.0.113.9"}) as response:
                assert response.status == 403
    finally:
        server.stop()


async def test_sign_in_with_the_token_only(browser: Browser) -> None:
    status, page = await browser.request("GET", "")
    assert status == 200 and 'name="token"' in page and "csrf-token" not in page
    assert (await browser.request("GET", "/api/apps"))[0] == 401
    assert (await browser.request("GET", "/stream", params={"app": "123456"}))[0] == 401
    status, page = await browser.request("POST", "/login", data={"token": TOKEN + "x"})
    assert status == 401 and "Wrong token." in page
    assert (await browser.request("GET", "/api/apps"))[0] == 401
    async with browser.session.post(
        browser.base + "/login", data={"token": TOKEN}, allow_redirects=False
    ) as response:
        assert response.status == 303
        cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert TOKEN not in cookie
    apps = await browser.json("/api/apps")
    assert apps["apps"] == [{"id": "123456", "key": "reverb-key", "enabled": True}]
    assert apps["max_lines_per_second"] == 50


async def test_the_event_creator_needs_the_csrf_token_and_same_origin(
    browser: Browser, sockets: Sockets
) -> None:
    await browser.sign_in()
    sock = await sockets.open("creator")
    ok = {"channels": ["creator"], "name": "hello", "data": '{"n": 1}'}
    assert (await browser.send(headers={}, **ok))[0] == 403
    assert (await browser.send(headers={"X-CSRF-Token": "forged"}, **ok))[0] == 403
    other = {"X-CSRF-Token": browser.csrf, "Origin": "http://evil.example"}
    assert (await browser.send(headers=other, **ok))[0] == 403
    assert (await browser.send(**ok)) == (200, {"status": 200, "answer": {}})
    message = await sock.next_event()
    assert message == {"event": "hello", "channel": "creator", "data": '{"n": 1}'}


async def test_the_event_creator_goes_through_the_api_rules(browser: Browser) -> None:
    await browser.sign_in()
    status, answer = await browser.send(channels=["c"], name="x" * 201)
    assert status == 200 and answer["status"] == 400 and "error" in answer["answer"]
    status, answer = await browser.send(channels=["bad channel!"], name="e")
    assert answer["status"] == 400
    status, answer = await browser.send(channels=["c"], name="e", data="not json")
    assert status == 400
    # Counted as an HTTP API request, like any signed call.
    async with browser.session.get(f"{browser.server.http_url}/metrics") as response:
        metrics = await response.text()
    assert 'reverbpy_http_requests_total{app="123456",endpoint="/apps/{app_id}/events",status="400"} 2.0' in metrics


async def test_channels_presence_members_and_the_cached_event(
    browser: Browser, sockets: Sockets, console_server: ServerProcess
) -> None:
    await browser.sign_in()
    user = {"user_id": "7", "user_info": {"name": "Ana"}}
    await sockets.open("presence-room", user=user)
    await sockets.open("public-one", "public-two")
    await in_thread(sdk(console_server).trigger, "cache-prices", "price", {"eur": 3})
    listed = await browser.json("/api/channels", app="123456", prefix="public-")
    assert [(c["name"], c["subscription_count"]) for c in listed["channels"]] == [
        ("public-one", 1),
        ("public-two", 1),
    ]
    room = await browser.json("/api/channel", app="123456", name="presence-room")
    assert room["members"] == [{"id": "7", "info": {"name": "Ana"}}]
    assert room["type"] == "presence" and room["subscription_count"] == 1
    cache = await browser.json("/api/channel", app="123456", name="cache-prices")
    assert cache["cached"] == {"event": "price", "data": json.dumps({"eur": 3})}
    overview = await browser.json("/api/overview", app="123456")
    assert overview["now"]["connections"] == 2 and overview["now"]["channels"] == 3
    assert overview["scope"]["users"] == "node"


async def read_lines(response: aiohttp.ClientResponse, want: set[str]) -> list[dict[str, Any]]:
    """Log lines from an open stream until every kind in ``want`` was seen."""
    lines: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        async for raw in response.content:
            text = raw.decode()
            if text.startswith("data: ") and '"lines"' in text:
                lines += json.loads(text[6:])["lines"]
            if want <= {x["kind"] for x in lines}:
                return lines
    raise AssertionError(f"stream ended with {lines}")


async def test_the_stream_logs_what_happens_filtered(
    browser: Browser, sockets: Sockets, console_server: ServerProcess
) -> None:
    await browser.sign_in()
    api = sdk(console_server)
    params = {"app": "123456", "channel": "watched-"}
    async with browser.session.get(f"{browser.base}/stream", params=params) as stream:
        sock = await sockets.open("watched-a", "other")
        await in_thread(api.trigger, ["other"], "ignored", {})
        await in_thread(api.trigger, ["watched-a"], "seen", {"x": 1})
        await sock.ws.close()
        lines = await read_lines(stream, {"subscribed", "api_event"})
    assert {tuple(x["channels"]) for x in lines} == {("watched-a",)}
    event = next(x for x in lines if x["kind"] == "api_event")
    assert event["event"] == "seen" and json.loads(event["data"]) == {"x": 1}
    async with browser.session.get(f"{browser.base}/stream", params={"app": "123456"}) as stream:
        await sockets.open("x")
        lines = await read_lines(stream, {"connected", "subscribed"})
    connected = next(x for x in lines if x["kind"] == "connected")
    assert connected["socket_id"] == sockets.opened[-1].socket_id


async def test_no_secret_in_any_answer(
    browser: Browser, sockets: Sockets, console_server: ServerProcess
) -> None:
    await browser.request("GET", "")
    await browser.request("POST", "/login", data={"token": "wrong"})
    await browser.sign_in()
    await sockets.open("presence-s", user={"user_id": "1", "user_info": {}})
    await browser.send(channels=["presence-s"], name="e")
    await browser.send(channels=["x"], name="y" * 300)
    for path in ("/api/apps", "/static/console.js", "/static/vendor/pusher.min.js"):
        await browser.request("GET", path)
    for params in ({"app": "123456"}, {"app": "123456", "prefix": "p"}):
        await browser.request("GET", "/api/overview", params=params)
        await browser.request("GET", "/api/channels", params=params)
    await browser.request("GET", "/api/channel", params={"app": "123456", "name": "presence-s"})
    async with browser.session.get(f"{browser.base}/stream", params={"app": "123456"}) as stream:
        await in_thread(sdk(console_server).trigger, ["x"], "z", {})
        browser.bodies.append(json.dumps(await read_lines(stream, {"api_event"})))
    assert len(browser.bodies) > 20
    for body in browser.bodies:
        assert SECRET not in body and TOKEN not in body


async def test_the_stream_logs_refused_subscriptions_closes_and_webhooks(tmp_path: Path) -> None:
    hooks: list[Any] = []

    async def receive(request: web.Request) -> web.Response:
        hooks.append(await request.json())
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/hook", receive)
    runner = web.AppRunner(receiver, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    webhooks = json.dumps([{"url": f"http://user:pw@127.0.0.1:{port}/hook"}])
    env = {
        "REVERB_CONSOLE_TOKEN": TOKEN,
        "REVERB_APP_WEBHOOKS": webhooks,
        "REVERB_SHUTDOWN_GRACE": "1",
    }
    server = await asyncio.to_thread(start_server, tmp_path, secret=SECRET, extra_env=env)
    try:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            browser = Browser(server, session)
            await browser.sign_in()
            async with session.get(f"{browser.base}/stream", params={"app": "123456"}) as stream:
                sockets = Sockets(server, session)
                sock = await sockets.open("hooked")  # channel_occupied: answered 204
                bad = {"channel": "private-x", "auth": "reverb-key:forged"}
                await sock.ws.send_json({"event": "pusher:subscribe", "data": bad})
                await sock.ws.close()
                lines = await read_lines(stream, {"subscription_error", "disconnected", "webhook"})
        refused = next(x for x in lines if x["kind"] == "subscription_error")
        assert refused["channels"] == ["private-x"] and refused["socket_id"] == sock.socket_id
        closed = next(x for x in lines if x["kind"] == "disconnected")
        assert closed["socket_id"] == sock.socket_id and closed["detail"].startswith("close 1000")
        hook = next(x for x in lines if x["kind"] == "webhook")
        assert hook["event"] == "channel_occupied" and hook["channels"] == ["hooked"]
        assert hook["detail"].startswith("HTTP 204 from http://127.0.0.1:")
        assert "pw" not in hook["detail"]  # the target's credentials stay out of the log
        assert hooks[0]["events"][0]["name"] == "channel_occupied"
    finally:
        await asyncio.to_thread(server.stop)
        await runner.cleanup()
