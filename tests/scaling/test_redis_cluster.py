"""Several reverbpy processes on one Redis behave as one server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.conftest import ServerProcess, start_server
from tests.functional.raw import Client, api, connect
from tests.scaling.conftest import RedisBackend, scaling_env
from tests.soak.harness import RedisClusterServers, RedisServer

pytestmark = pytest.mark.redis


async def presence(c: Client, node: ServerProcess, channel: str, user: str) -> dict[str, object]:
    return await c.subscribe(channel, node.secret, node.key, f'{{"user_id":"{user}","user_info":{{"n":"{user}"}}}}')


async def test_api_event_reaches_every_node_once_in_order(http: aiohttp.ClientSession, cluster: list[ServerProcess]) -> None:
    a, b, api_node = cluster
    ca, cb = await connect(http, a), await connect(http, b)
    for c in (ca, cb):
        await c.subscribe("orders")
    for i in range(20):
        status, _ = await api(http, api_node, "POST", "/events", {"name": "n", "channel": "orders", "data": str(i)})
        assert status == 200
    for c in (ca, cb):
        got = [(await c.recv())["data"] for _ in range(20)]
        assert got == [str(i) for i in range(20)]
    # exactly once: a sentinel is the next thing each sees
    await api(http, api_node, "POST", "/events", {"name": "n", "channel": "orders", "data": "end"})
    for c in (ca, cb):
        assert (await c.recv())["data"] == "end"


async def test_socket_id_exclusion_across_nodes(http: aiohttp.ClientSession, cluster: list[ServerProcess]) -> None:
    a, b, api_node = cluster
    ca, cb = await connect(http, a), await connect(http, b)
    for c in (ca, cb):
        await c.subscribe("ex")
    await api(http, api_node, "POST", "/events", {"name": "n", "channel": "ex", "data": "not for a", "socket_id": ca.socket_id})
    await api(http, api_node, "POST", "/events", {"name": "n", "channel": "ex", "data": "for all"})
    assert (await cb.recv())["data"] == "not for a"
    assert (await ca.recv())["data"] == "for all"


async def test_client_events_cross_nodes(http: aiohttp.ClientSession, cluster: list[ServerProcess]) -> None:
    a, b, _ = cluster
    ca, cb = await connect(http, a), await connect(http, b)
    await presence(ca, a, "presence-chat", "u1")
    await presence(cb, b, "presence-chat", "u2")
    await ca.recv_event("pusher_internal:member_added")
    await ca.send("client-hi", {"x": 1}, channel="presence-chat")
    assert await cb.recv() == {"event": "client-hi", "channel": "presence-chat", "data": {"x": 1}, "user_id": "u1"}


async def test_presence_is_cluster_wide(http: aiohttp.ClientSession, cluster: list[ServerProcess]) -> None:
    a, b, api_node = cluster
    alice = await connect(http, a)
    ok = await presence(alice, a, "presence-room", "alice")
    assert ok["data"]["presence"]["ids"] == ["alice"]
    bob_tab1 = await connect(http, b)
    ok = await presence(bob_tab1, b, "presence-room", "bob")
    assert sorted(ok["data"]["presence"]["ids"]) == ["alice", "bob"]
    assert await alice.recv() == {"event": "pusher_internal:member_added", "channel": "presence-room", "data": {"user_id": "bob", "user_info": {"n": "bob"}}}
    # bob's second tab on the other node: no second member_added anywhere
    bob_tab2 = await connect(http, a)
    ok = await presence(bob_tab2, a, "presence-room", "bob")
    assert ok["data"]["presence"]["count"] == 2
    status, users = await api(http, api_node, "GET", "/channels/presence-room/users")
    assert sorted(u["id"] for u in users["users"]) == ["alice", "bob"]
    status, info = await api(http, api_node, "GET", "/channels/presence-room", params={"info": "user_count,subscription_count"})
    assert info == {"occupied": True, "user_count": 2, "subscription_count": 3}
    await bob_tab1.ws.close()
    await asyncio.sleep(0.3)
    await bob_tab2.send("pusher:unsubscribe", {"channel": "presence-room"})
    # exactly one member_removed, after the last tab
    assert await alice.recv() == {"event": "pusher_internal:member_removed", "channel": "presence-room", "data": {"user_id": "bob"}}
    await alice.send("pusher:ping", {})
    assert await alice.recv() == {"event": "pusher:pong"}


async def test_http_queries_answer_for_the_cluster(http: aiohttp.ClientSession, cluster: list[ServerProcess]) -> None:
    a, b, api_node = cluster
    clients = [await connect(http, a), await connect(http, b), await connect(http, b)]
    for c in clients:
        await c.subscribe("count-me")
    await clients[0].subscribe("only-a")
    status, body = await api(http, api_node, "GET", "/channels", params={"info": "subscription_count"})
    assert body == {"channels": {"count-me": {"subscription_count": 3}, "only-a": {"subscription_count": 1}}}
    # Connection counts travel with the 2 s heartbeat: written by each node within 2 s, read by
    # the answering node within 2 s more.
    async with asyncio.timeout(8):
        while True:
            status, body = await api(http, api_node, "GET", "/connections")
            if body == {"connections": 3}:
                break
            await asyncio.sleep(0.25)


async def test_terminate_and_server_to_user_reach_other_nodes(http: aiohttp.ClientSession, cluster: list[ServerProcess]) -> None:
    import hashlib
    import hmac

    a, b, api_node = cluster
    user = await connect(http, b)
    data = '{"id":"77"}'
    sig = hmac.new(b.secret.encode(), f"{user.socket_id}::user::{data}".encode(), hashlib.sha256).hexdigest()
    await user.send("pusher:signin", {"auth": f"{b.key}:{sig}", "user_data": data})
    assert (await user.recv())["event"] == "pusher:signin_success"
    await user.subscribe("#server-to-user-77")
    await api(http, api_node, "POST", "/events", {"name": "dm", "channel": "#server-to-user-77", "data": "hello"})
    assert (await user.recv())["data"] == "hello"
    assert await api(http, api_node, "POST", "/users/77/terminate_connections", {}) == (200, {})
    assert (await user.recv())["data"]["code"] == 4009
    assert (await user.closed())[0] == 4009


async def test_killed_node_members_removed(http: aiohttp.ClientSession, tmp_path: Path, cluster_env: dict[str, str]) -> None:
    env = {**cluster_env, "REVERB_SCALING_NODE_TIMEOUT": "3"}
    survivor, doomed = start_server(tmp_path, extra_env=env), start_server(tmp_path, extra_env=env)
    try:
        watcher = await connect(http, survivor)
        await presence(watcher, survivor, "presence-k", "watcher")
        ghost = await connect(http, doomed)
        await presence(ghost, doomed, "presence-k", "ghost")
        await watcher.recv_event("pusher_internal:member_added")
        assert doomed.proc is not None
        os.kill(doomed.proc.pid, signal.SIGKILL)
        removed = await watcher.recv_event("pusher_internal:member_removed", timeout=15)
        assert removed["data"] == {"user_id": "ghost"}
        status, users = await api(http, survivor, "GET", "/channels/presence-k/users")
        assert users == {"users": [{"id": "watcher"}]}
    finally:
        survivor.stop()
        doomed.stop()


async def both_healthy(http: aiohttp.ClientSession, *nodes: ServerProcess, within: float = 15) -> None:
    async with asyncio.timeout(within):
        while True:
            health = []
            for node in nodes:
                async with http.get(f"{node.http_url}/up") as r:
                    health.append((await r.json())["health"])
            if health == ["OK"] * len(nodes):
                return
            await asyncio.sleep(0.1)


async def test_redis_outage_local_clients_keep_working_and_nothing_is_lost(
    http: aiohttp.ClientSession, tmp_path: Path, one_redis_env: dict[str, str]
) -> None:
    """Redis stopped, 20 events accepted by node A meanwhile, Redis restarted (empty, as
    without persistence): A's subscribers get them at once, B's once the link is back, in
    order and once each."""
    own = RedisServer(tmp_path)
    own.start()
    env = {**one_redis_env, "REDIS_URL": own.url}
    a, b = start_server(tmp_path, extra_env=env), start_server(tmp_path, extra_env=env)
    clients: list[Client] = []
    try:
        ca, cb = await connect(http, a), await connect(http, b)
        clients += (ca, cb)
        await ca.subscribe("live")
        await cb.subscribe("live")
        own.stop()
        await asyncio.sleep(0.5)
        for i in range(20):  # accepted while Redis is down
            assert (await api(http, a, "POST", "/events", {"name": "n", "channel": "live", "data": f"gap {i}"}))[0] == 200
        assert [(await ca.recv())["data"] for _ in range(20)] == [f"gap {i}" for i in range(20)]
        async with http.get(f"{a.http_url}/up") as r:
            assert r.status == 200 and (await r.json())["health"] == "DEGRADED"
        async with http.get(f"{a.http_url}/ready") as r:
            assert r.status == 503 and "redis link down" in (await r.json())["reason"]
        async with http.get(f"{a.http_url}/metrics") as r:
            metrics = await r.text()
        assert 'reverbpy_adapter_up{adapter="redis"} 0.0' in metrics
        assert "reverbpy_adapter_buffered_envelopes 20.0" in metrics
        own.start()  # back on the same port, without its data
        await both_healthy(http, a, b)
        async with http.get(f"{a.http_url}/ready") as r:
            assert r.status == 200
        await api(http, a, "POST", "/events", {"name": "n", "channel": "live", "data": "cluster again"})
        got = [(await cb.recv(timeout=10))["data"] for _ in range(21)]
        assert got == [f"gap {i}" for i in range(20)] + ["cluster again"]
        status, body = await api(http, b, "GET", "/channels", params={"info": "subscription_count"})
        assert body == {"channels": {"live": {"subscription_count": 2}}}
    finally:
        for c in clients:
            await c.ws.close()
        a.stop()
        b.stop()
        own.stop()


async def test_a_frozen_redis_loses_nothing(http: aiohttp.ClientSession, tmp_path: Path, one_redis_env: dict[str, str]) -> None:
    """Redis stopped with SIGSTOP for 3 s (a stalled VM, a long fork) while node A accepts 20
    events: the batch that timed out is sent again, and B applies every event exactly once."""
    own = RedisServer(tmp_path)
    own.start()
    env = {**one_redis_env, "REDIS_URL": own.url}
    a, b = start_server(tmp_path, extra_env=env), start_server(tmp_path, extra_env=env)
    clients: list[Client] = []
    try:
        cb = await connect(http, b)
        clients.append(cb)
        await cb.subscribe("frozen")
        own.freeze()
        for i in range(20):
            assert (await api(http, a, "POST", "/events", {"name": "n", "channel": "frozen", "data": str(i)}))[0] == 200
            await asyncio.sleep(0.15)
        own.thaw()
        got = [(await cb.recv(timeout=20))["data"] for _ in range(20)]
        assert got == [str(i) for i in range(20)]
        await both_healthy(http, a, b)
        await api(http, a, "POST", "/events", {"name": "n", "channel": "frozen", "data": "end"})
        assert (await cb.recv(timeout=10))["data"] == "end"  # nothing twice before it
    finally:
        for c in clients:
            await c.ws.close()
        a.stop()
        b.stop()
        own.stop()


async def test_keys_live_under_the_prefix(http: aiohttp.ClientSession, cluster: list[ServerProcess], cluster_env: dict[str, str], redis_backend: RedisBackend) -> None:
    c = await connect(http, cluster[0])
    await presence(c, cluster[0], "presence-p", "u")
    if redis_backend.sharded:
        r: Any = aioredis.RedisCluster.from_url(redis_backend.url, decode_responses=True)
        scan = {"target_nodes": aioredis.RedisCluster.PRIMARIES}
    else:
        r, scan = aioredis.Redis.from_url(redis_backend.url, decode_responses=True), {}
    try:
        prefix = cluster_env["REVERB_SCALING_PREFIX"]
        keys = set(await r.keys(f"{prefix}:*", **scan))
        assert f"{prefix}:nodes" in keys
        # the channel's keys share a hash tag: one slot of a Redis Cluster
        assert f"{prefix}:presence:{{{cluster[0].app_id}:c:presence-p}}" in keys
        assert f"{prefix}:subs:{{{cluster[0].app_id}:c:presence-p}}" in keys
        assert await r.zcard(f"{prefix}:nodes") == 3
        # nothing of ours outside the prefix
        assert not [k for k in await r.keys("*", **scan) if "presence-p" in k and not k.startswith(prefix + ":")]
    finally:
        await r.aclose()


async def test_a_burst_of_subscriptions_stays_consistent(http: aiohttp.ClientSession, cluster: list[ServerProcess]) -> None:
    """300 sockets subscribing at once queue for Redis connections instead of failing
    (the pool is bounded) and every one is counted cluster-wide."""
    a, _, api_node = cluster
    many = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))  # aiohttp's default is 100 sockets
    clients = await asyncio.gather(*(connect(many, a) for _ in range(300)))
    oks = await asyncio.gather(*(c.subscribe("burst") for c in clients))
    assert all(ok["event"] == "pusher_internal:subscription_succeeded" for ok in oks)
    status, body = await api(http, api_node, "GET", "/channels/burst", params={"info": "subscription_count"})
    assert body == {"occupied": True, "subscription_count": 300}
    async with http.get(f"{a.http_url}/up") as r:
        assert (await r.json())["health"] == "OK"
    assert "lost Redis" not in a.log()
    await many.close()


async def test_cache_channels_are_shared_with_nodes_started_later(http: aiohttp.ClientSession, tmp_path: Path, cluster_env: dict[str, str]) -> None:
    first = start_server(tmp_path, extra_env=cluster_env)
    try:
        await api(http, first, "POST", "/events", {"name": "price", "channel": "cache-ticker", "data": "42"})
        await asyncio.sleep(0.3)
        late = start_server(tmp_path, extra_env=cluster_env)  # was not running when it was published
        try:
            c = await connect(http, late)
            assert (await c.subscribe("cache-ticker"))["event"] == "pusher_internal:subscription_succeeded"
            assert await c.recv() == {"event": "price", "channel": "cache-ticker", "data": "42"}
            miss = await connect(http, late)
            await miss.subscribe("cache-never")
            assert await miss.recv() == {"event": "pusher:cache_miss", "channel": "cache-never"}
        finally:
            late.stop()
    finally:
        first.stop()


async def test_max_connections_is_cluster_wide(http: aiohttp.ClientSession, tmp_path: Path, cluster_env: dict[str, str]) -> None:
    env = {**cluster_env, "REVERB_APP_MAX_CONNECTIONS": "3"}
    a, b = start_server(tmp_path, extra_env=env), start_server(tmp_path, extra_env=env)
    try:
        kept = [await connect(http, a), await connect(http, a), await connect(http, b)]
        # Node counts travel with the 2 s heartbeat: a writes its count within 2 s, and b
        # reads it within 2 s more. Until then b lets a fourth in (closed again here at once).
        async with asyncio.timeout(8):
            while True:
                refused = await connect(http, b, established=False)
                hello = await refused.recv()
                if hello["event"] == "pusher:error":
                    break
                assert hello["event"] == "pusher:connection_established"
                await refused.ws.close()
                await asyncio.sleep(0.5)
        assert hello["data"]["code"] == 4004
        assert (await refused.closed())[0] == 4004
        await kept[0].ws.close()
        # A slot freed on node a is usable on node b once both heartbeats have run: a's
        # count reaches Redis within 2 s and b reads it within 2 s more.
        async with asyncio.timeout(8):
            while True:
                await asyncio.sleep(0.5)
                attempt = await connect(http, b, established=False)
                hello = await attempt.recv()
                if hello["event"] == "pusher:connection_established":
                    break
                assert hello["data"]["code"] == 4004
                await attempt.ws.close()
    finally:
        a.stop()
        b.stop()


async def _signin(c: Client, node: ServerProcess, user_data: str) -> None:
    import hashlib
    import hmac

    sig = hmac.new(node.secret.encode(), f"{c.socket_id}::user::{user_data}".encode(), hashlib.sha256).hexdigest()
    await c.send("pusher:signin", {"auth": f"{node.key}:{sig}", "user_data": user_data})
    assert (await c.recv())["event"] == "pusher:signin_success"


async def test_watchlist_is_cluster_wide(http: aiohttp.ClientSession, tmp_path: Path, cluster_env: dict[str, str]) -> None:
    env = {**cluster_env, "REVERB_SCALING_NODE_TIMEOUT": "3"}
    a, b, c_node = (start_server(tmp_path, extra_env=env) for _ in range(3))
    try:
        bob = await connect(http, b)
        await _signin(bob, b, '{"id":"bob"}')
        alice = await connect(http, a)
        await _signin(alice, a, '{"id":"alice","watchlist":["bob","carol"]}')
        # bob is signed in on another node: alice learns he is online
        assert await alice.recv() == {"event": "pusher_internal:watchlist_events", "data": {"events": [{"name": "online", "user_ids": ["bob"]}]}}
        carol = await connect(http, c_node)
        await _signin(carol, c_node, '{"id":"carol"}')
        assert (await alice.recv())["data"] == {"events": [{"name": "online", "user_ids": ["carol"]}]}
        # bob's second socket on a third node changes nothing; closing the first neither
        bob2 = await connect(http, c_node)
        await _signin(bob2, c_node, '{"id":"bob"}')
        await bob.ws.close()
        await asyncio.sleep(0.3)
        await bob2.ws.close()
        assert (await alice.recv())["data"] == {"events": [{"name": "offline", "user_ids": ["bob"]}]}
        # carol's node dies: offline once the node is reaped
        assert c_node.proc is not None
        os.kill(c_node.proc.pid, signal.SIGKILL)
        assert (await alice.recv(timeout=15))["data"] == {"events": [{"name": "offline", "user_ids": ["carol"]}]}
    finally:
        for node in (a, b, c_node):
            node.stop()


async def test_a_primary_killed_in_a_redis_cluster_loses_nothing(http: aiohttp.ClientSession, tmp_path: Path) -> None:
    """A 3-shard Redis Cluster; the primary that owns channel ``failover``'s slot is killed
    while node A accepts 20 events for it (200 OK each); its replica takes over. Node B's
    subscriber gets all 20, in order, once each, and the cluster serves on."""
    servers = RedisClusterServers(tmp_path / "redis-cluster")
    servers.start()
    env = scaling_env(servers.url, sharded=True)
    a, b = start_server(tmp_path, extra_env=env), start_server(tmp_path, extra_env=env)
    clients: list[Client] = []
    try:
        cb = await connect(http, b)
        clients.append(cb)
        await cb.subscribe("failover")
        topic = f"{env['REVERB_SCALING_PREFIX']}:t:{{{a.app_id}:c:failover}}"
        owner = servers.owner(topic)
        servers.kill_primary(owner)
        for i in range(20):  # accepted while the shard has no primary
            assert (await api(http, a, "POST", "/events", {"name": "n", "channel": "failover", "data": str(i)}))[0] == 200
            await asyncio.sleep(0.1)
        got = []
        with contextlib.suppress(TimeoutError):
            for _ in range(20):
                got.append((await cb.recv(timeout=30))["data"])
        assert got == [str(i) for i in range(20)], a.log() + b.log()
        assert servers.owner(topic) is not owner  # a replica was promoted
        await both_healthy(http, a, b, within=30)
        await api(http, a, "POST", "/events", {"name": "n", "channel": "failover", "data": "end"})
        assert (await cb.recv(timeout=10))["data"] == "end"  # nothing twice before it
        status, body = await api(http, a, "GET", "/channels/failover", params={"info": "subscription_count"})
        assert (status, body) == (200, {"occupied": True, "subscription_count": 1})
    finally:
        for c in clients:
            await c.ws.close()
        a.stop()
        b.stop()
        servers.stop()
