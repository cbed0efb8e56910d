"""The console costs the hot path nothing while no console is open: calls to the one observer
are counted with the console closed (none), open (some) and closed again (none).

The server runs in this process (``server.create_app`` on a loopback port), so the feed's
``record`` can be counted; clients are a real WebSocket, the official ``pusher`` SDK and the
console's own sign-in and stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pusher
import pytest
from aiohttp.test_utils import TestServer

from reverbpy.config import AppConfig, Secret, ServerConfig
from reverbpy.console.feed import Feed
from reverbpy.server import CONSOLE, NODE, create_app

APP = AppConfig(id="42", key="obs-key", secret=Secret("obs-secret"))
TOKEN = "console-token-for-tests"


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    config = ServerConfig(host="127.0.0.1", apps=(APP,), console_token=Secret(TOKEN))
    server = TestServer(create_app(config), host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    record = Feed.record

    def counting(self: Feed, kind: Any, *args: Any, **kwargs: Any) -> None:
        seen.append(kind)
        record(self, kind, *args, **kwargs)

    monkeypatch.setattr(Feed, "record", counting)
    return seen


async def traffic(server: TestServer, session: aiohttp.ClientSession, tag: str) -> None:
    """A connection, a subscription, a client event, an API event and a disconnection."""
    sdk = pusher.Pusher(
        app_id=APP.id, key=APP.key, secret=APP.secret.reveal(), host="127.0.0.1",
        port=server.port, ssl=False, timeout=5,
    )  # fmt: skip
    url = f"ws://127.0.0.1:{server.port}/app/{APP.key}?protocol=7"
    async with session.ws_connect(url) as ws:
        hello = json.loads((await ws.receive(timeout=5)).data)
        socket_id = json.loads(hello["data"])["socket_id"]
        channel = f"private-{tag}"
        auth = sdk.authenticate(channel, socket_id)
        await ws.send_json({"event": "pusher:subscribe", "data": {"channel": channel, **auth}})
        reply = json.loads((await ws.receive(timeout=5)).data)
        assert reply["event"] == "pusher_internal:subscription_succeeded"
        await ws.send_json({"event": "client-typing", "channel": channel, "data": {}})
        await asyncio.to_thread(sdk.trigger, channel, "api-event", {"n": 1})
        event = json.loads((await ws.receive(timeout=5)).data)
        assert event["event"] == "api-event"


async def test_no_observer_call_while_no_console_is_open(
    server: TestServer, calls: list[str]
) -> None:
    app = server.app
    assert app is not None
    hub = app[NODE].hub
    console = app[CONSOLE]
    console.resume_grace = 0.05
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        await traffic(server, session, "closed")
        await asyncio.sleep(0.1)  # the disconnection has been handled
        assert calls == []
        assert hub.observer is None and hub.webhooks.observer is None

        base = f"http://127.0.0.1:{server.port}/console"
        async with session.post(f"{base}/login", data={"token": TOKEN}, allow_redirects=False) as r:
            assert r.status == 303
        async with session.get(f"{base}/stream", params={"app": APP.id}) as stream:
            assert stream.status == 200
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            assert hub.observer is console.feed
            await traffic(server, session, "open")
            kinds: set[str] = set()
            async with asyncio.timeout(10):
                async for raw in stream.content:
                    line = raw.decode()
                    if line.startswith("data: ") and '"lines"' in line:
                        kinds |= {x["kind"] for x in json.loads(line[6:])["lines"]}
                    if {"connected", "subscribed", "client_event", "api_event"} <= kinds:
                        break
        assert {"connected", "subscribed", "client_event", "api_event"} <= set(calls)

        await asyncio.sleep(0.3)  # the stream's resume grace is over
        assert hub.observer is None and hub.webhooks.observer is None
        calls.clear()
        await traffic(server, session, "closed-again")
        await asyncio.sleep(0.1)
        assert calls == []
