"""Sign-in, server-to-user, watchlist, cache channels, subscription counts, quotas, many apps."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from pathlib import Path

import aiohttp

from tests.conftest import ServerProcess, start_server
from tests.functional.raw import Client, api, connect


async def signin(c: Client, server: ServerProcess, user_data: str) -> dict[str, object]:
    sig = hmac.new(server.secret.encode(), f"{c.socket_id}::user::{user_data}".encode(), hashlib.sha256).hexdigest()
    await c.send("pusher:signin", {"auth": f"{server.key}:{sig}", "user_data": user_data})
    return await c.recv()


async def test_signin_and_server_to_user(http: aiohttp.ClientSession, server: ServerProcess) -> None:
    tab1, tab2, other = [await connect(http, server) for _ in range(3)]
    for c in (tab1, tab2):
        ok = await signin(c, server, '{"id":"42","user_info":{"name":"A"}}')
        assert ok == {"event": "pusher:signin_success", "data": {"user_data": '{"id":"42","user_info":{"name":"A"}}'}}
        assert (await c.subscribe("#server-to-user-42"))["event"] == "pusher_internal:subscription_succeeded"
    refused = await other.subscribe("#server-to-user-42")
    assert refused["event"] == "pusher:subscription_error"
    status, _ = await api(http, server, "POST", "/events", {"name": "note", "channel": "#server-to-user-42", "data": "hi"})
    assert status == 200
    for c in (tab1, tab2):
        assert await c.recv() == {"event": "note", "channel": "#server-to-user-42", "data": "hi"}


async def test_bad_signin_closes_4009(http: aiohttp.ClientSession, server: ServerProcess) -> None:
    c = await connect(http, server)
    await c.send("pusher:signin", {"auth": f"{server.key}:{'0' * 64}", "user_data": '{"id":"1"}'})
    assert (await c.recv())["data"]["code"] == 4009
    assert (await c.closed())[0] == 4009


async def test_terminate_connections_closes_only_signed_in_sockets(http: aiohttp.ClientSession, server: ServerProcess) -> None:
    user, bystander = await connect(http, server), await connect(http, server)
    await signin(user, server, '{"id":"7"}')
    await bystander.subscribe("presence-x", server.secret, server.key, '{"user_id":"7"}')
    assert await api(http, server, "POST", "/users/7/terminate_connections", {}) == (200, {})
    err = await user.recv()
    assert err["event"] == "pusher:error" and err["data"]["code"] == 4009
    assert (await user.closed())[0] == 4009
    await bystander.send("pusher:ping", {})
    assert await bystander.recv() == {"event": "pusher:pong"}


async def test_watchlist_online_offline(http: aiohttp.ClientSession, server: ServerProcess) -> None:
    b = await connect(http, server)
    await signin(b, server, '{"id":"B"}')
    a = await connect(http, server)
    await signin(a, server, '{"id":"A","watchlist":["B","C"]}')
    assert await a.recv() == {"event": "pusher_internal:watchlist_events", "data": {"events": [{"name": "online", "user_ids": ["B"]}]}}
    c = await connect(http, server)
    await signin(c, server, '{"id":"C"}')
    assert await a.recv() == {"event": "pusher_internal:watchlist_events", "data": {"events": [{"name": "online", "user_ids": ["C"]}]}}
    await b.ws.close()
    assert await a.recv() == {"event": "pusher_internal:watchlist_events", "data": {"events": [{"name": "offline", "user_ids": ["B"]}]}}


async def test_watchlist_over_100_keeps_first_100_and_warns_4302(http: aiohttp.ClientSession, server: ServerProcess) -> None:
    a = await connect(http, server)
    ok = await signin(a, server, json.dumps({"id": "A", "watchlist": [str(i) for i in range(150)]}))
    assert ok["event"] == "pusher:signin_success"
    assert (await a.recv())["data"]["code"] == 4302
    await a.send("pusher:ping", {})
    assert await a.recv() == {"event": "pusher:pong"}


async def test_presence_member_from_signed_in_user(http: aiohttp.ClientSession, server: ServerProcess) -> None:
    c = await connect(http, server)
    await signin(c, server, '{"id":"9","user_info":{"name":"Nine"}}')
    sig = hmac.new(server.secret.encode(), f"{c.socket_id}:presence-s".encode(), hashlib.sha256).hexdigest()
    await c.send("pusher:subscribe", {"channel": "presence-s", "auth": f"{server.key}:{sig}"})
    ok = await c.recv()
    assert ok["data"] == {"presence": {"count": 1, "ids": ["9"], "hash": {"9": {"name": "Nine"}}}}


async def test_cache_channel_replay_and_miss(http: aiohttp.ClientSession, server: ServerProcess) -> None:
    first = await connect(http, server)
    assert (await first.subscribe("cache-news"))["event"] == "pusher_internal:subscription_succeeded"
    assert await first.recv() == {"event": "pusher:cache_miss", "channel": "cache-news"}
    # Published with no subscribers at all: still cached.
    await api(http, server, "POST", "/events", {"name": "headline", "channel": "cache-lonely", "data": "v1"})
    late = await connect(http, server)
    await late.subscribe("cache-lonely")
    assert await late.recv() == {"event": "headline", "channel": "cache-lonely", "data": "v1"}
    status, body = await api(http, server, "GET", "/channels/cache-lonely", params={"info": "cache"})
    assert status == 200 and body["cache"]["data"] == "v1" and 0 < body["cache"]["ttl"] <= 1800
    # Client events are never cached.
    await late.subscribe("private-cache-room", server.secret, server.key)
    await late.recv_event("pusher:cache_miss")
    await late.send("client-x", "not cached", channel="private-cache-room")
    newcomer = await connect(http, server)
    await newcomer.subscribe("private-cache-room", server.secret, server.key)
    assert await newcomer.recv() == {"event": "pusher:cache_miss", "channel": "private-cache-room"}


async def test_cache_ttl(http: aiohttp.ClientSession, tmp_path: Path) -> None:
    server = start_server(tmp_path, extra_env={"REVERB_APP_CACHE_TTL": "0.5"})
    try:
        await api(http, server, "POST", "/events", {"name": "e", "channel": "cache-t", "data": "old"})
        await asyncio.sleep(0.8)
        c = await connect(http, server)
        await c.subscribe("cache-t")
        assert await c.recv() == {"event": "pusher:cache_miss", "channel": "cache-t"}
    finally:
        server.stop()


async def test_subscription_count_events(http: aiohttp.ClientSession, tmp_path: Path) -> None:
    server = start_server(tmp_path, extra_env={"REVERB_APP_SUBSCRIPTION_COUNT_EVENTS": "true"})
    try:
        a = await connect(http, server)
        await a.subscribe("counted")
        assert await a.recv() == {"event": "pusher_internal:subscription_count", "channel": "counted", "data": {"subscription_count": 1}}
        b = await connect(http, server)
        await b.subscribe("counted")
        assert (await a.recv())["data"] == {"subscription_count": 2}
        await b.ws.close()
        assert (await a.recv())["data"] == {"subscription_count": 1}
    finally:
        server.stop()


async def test_authorized_connections_timeout(http: aiohttp.ClientSession, tmp_path: Path) -> None:
    server = start_server(tmp_path, extra_env={"REVERB_APP_AUTHORIZED_CONNECTIONS_TIMEOUT": "0.5"})
    try:
        lurker = await connect(http, server)
        await lurker.subscribe("public-only")
        member = await connect(http, server)
        await member.subscribe("private-ok", server.secret, server.key)
        err = await lurker.recv(timeout=5)
        assert err["data"] == {"code": 4009, "message": "Connection not authorized within timeout."}
        assert (await lurker.closed())[0] == 4009
        await member.send("pusher:ping", {})
        assert await member.recv() == {"event": "pusher:pong"}
    finally:
        server.stop()


async def test_backend_event_rate_limit_is_429(http: aiohttp.ClientSession, tmp_path: Path) -> None:
    server = start_server(tmp_path, extra_env={"REVERB_APP_BACKEND_EVENT_RATE": "5", "REVERB_APP_READ_REQUEST_RATE": "3"})
    try:
        statuses = [(await api(http, server, "POST", "/events", {"name": "e", "channel": "c", "data": "d"}))[0] for _ in range(8)]
        assert statuses.count(200) == 5 and statuses.count(429) == 3
        status, body = await api(http, server, "POST", "/events", {"name": "e", "channel": "c", "data": "d"})
        assert status == 429 and "events per second" in body["error"]
        reads = [(await api(http, server, "GET", "/channels"))[0] for _ in range(5)]
        assert reads.count(429) == 2
        await asyncio.sleep(1.1)
        assert (await api(http, server, "POST", "/events", {"name": "e", "channel": "c", "data": "d"}))[0] == 200
    finally:
        server.stop()


async def test_presence_member_cap(http: aiohttp.ClientSession, tmp_path: Path) -> None:
    server = start_server(tmp_path, extra_env={"REVERB_APP_MAX_PRESENCE_MEMBERS": "2"})
    try:
        clients = [await connect(http, server) for _ in range(3)]
        for i, c in enumerate(clients[:2]):
            assert (await c.subscribe("presence-p", server.secret, server.key, f'{{"user_id":"{i}"}}'))["event"] == "pusher_internal:subscription_succeeded"
        refused = await clients[2].subscribe("presence-p", server.secret, server.key, '{"user_id":"x"}')
        assert refused["event"] == "pusher:subscription_error" and refused["data"]["type"] == "LimitReached"
        # An existing member's second socket still fits.
        again = await clients[2].subscribe("presence-p", server.secret, server.key, '{"user_id":"0"}')
        assert again["event"] == "pusher_internal:subscription_succeeded"
    finally:
        server.stop()


async def test_many_apps_are_isolated_and_disabled_app_is_4003(http: aiohttp.ClientSession, tmp_path: Path) -> None:
    apps = tmp_path / "apps.json"
    apps.write_text(json.dumps({"apps": [
        {"id": "1", "key": "key-one", "secret": "secret-one"},
        {"id": "2", "key": "key-two", "secret": "secret-two", "allowed_origins": ["*.two.test"]},
        {"id": "3", "key": "key-off", "secret": "secret-off", "enabled": False},
    ]}))
    server = start_server(tmp_path, app_id="1", key="key-one", secret="secret-one", args=["--config", str(apps)])
    two = ServerProcess(server.port, "2", "key-two", "secret-two")
    try:
        c1 = await connect(http, server)
        await c1.subscribe("shared-name")
        c2 = await connect(http, two, headers={"Origin": "https://x.two.test"})
        await c2.subscribe("shared-name")
        await api(http, two, "POST", "/events", {"name": "e", "channel": "shared-name", "data": "for two"})
        assert (await c2.recv())["data"] == "for two"
        assert await api(http, server, "GET", "/channels/shared-name", params={"info": "subscription_count"}) == (200, {"occupied": True, "subscription_count": 1})
        # app one's secret cannot sign for app two
        status, _ = await api(http, two, "GET", "/channels", secret="secret-one")
        assert status == 401
        await c1.send("pusher:ping", {})
        assert await c1.recv() == {"event": "pusher:pong"}  # app one never saw app two's event
        off = await connect(http, server, key="key-off", established=False)
        assert (await off.recv())["data"]["code"] == 4003
        assert (await off.closed())[0] == 4003
    finally:
        server.stop()
