"""The NATS adapter against a real nats-server (with JetStream): never a mock.

First two adapters in one event loop with a recording listener in place of the hub (the
contract of ``scaling.base.Adapter``), then real reverbpy processes sharing one NATS: events
across nodes once and in order, presence, a killed node's members removed, and an outage.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reverbpy.config import AppConfig, ScalingConfig, Secret, ServerConfig
from reverbpy.protocol.cluster import (
    CHANNEL,
    USER,
    ApiEvent,
    ClientEvent,
    Envelope,
    MemberAdded,
    Terminate,
    Topic,
)
from reverbpy.protocol.presence import Member
from reverbpy.registry import AppState, Registry
from reverbpy.scaling.base import PresenceFull
from reverbpy.scaling.nats import NatsAdapter, token, untoken
from tests.conftest import ServerProcess, free_port, start_server
from tests.functional.raw import Client, api, connect

APP = AppConfig(id="1", key="k", secret=Secret("s"), max_presence_members=2)


class NatsServer:
    """Our own nats-server with JetStream, which a test may stop and start again."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("nats-server") or (
            "/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None
        )
        if binary is None:
            pytest.skip("nats-server is not installed: apt-get install nats-server")
        self.binary = binary
        self.port = free_port()
        self.store = workdir / "jetstream"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:  # up once it greets a client with its INFO line
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(4096).startswith(b"INFO"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("nats-server did not start")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.kill()


class RecordingListener:
    """Stands in for the hub: records what the cluster tells this node."""

    def __init__(self) -> None:
        self.node_id = ""
        self.registry = Registry((APP,))
        self.envelopes: list[Envelope] = []
        self.gone: list[tuple[str, ...]] = []
        self.arrived = asyncio.Event()

    def receive(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)
        self.arrived.set()

    def member_gone(self, app_id: str, channel_name: str, user_id: Any) -> None:
        self.gone.append(("member", app_id, channel_name, str(user_id)))

    def user_gone(self, app_id: str, user_id: str) -> None:
        self.gone.append(("user", app_id, user_id))

    def channel_gone(self, app_id: str, channel_name: str) -> None:
        self.gone.append(("channel", app_id, channel_name))


Node = tuple[NatsAdapter, RecordingListener, AppState]


def scaling_config(
    url: str, prefix: str, node_timeout: float = 1.5, buffer_size: int = 10_000
) -> ServerConfig:
    return ServerConfig(
        apps=(APP,),
        scaling=ScalingConfig(
            adapter="nats",
            prefix=prefix,
            nats_url=Secret(url),
            node_timeout=node_timeout,
            buffer_size=buffer_size,
        ),
    )


async def start_node(config: ServerConfig) -> Node:
    adapter, listener = NatsAdapter(config), RecordingListener()
    await adapter.start(listener)
    state = listener.registry.by_id("1")
    assert state is not None and adapter.healthy
    return adapter, listener, state


@pytest.fixture
async def nodes(nats_server: NatsServer) -> AsyncIterator[tuple[Node, Node]]:
    config = scaling_config(nats_server.url, f"test-{secrets.token_hex(4)}")
    a, b = await start_node(config), await start_node(config)
    yield a, b
    for adapter, _, _ in (a, b):
        await adapter.close()


async def wait_for(listener: RecordingListener, count: int, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while len(listener.envelopes) < count:
            listener.arrived.clear()
            await listener.arrived.wait()


async def follow(adapter: NatsAdapter, topic: Topic) -> None:
    interest = adapter.follow(topic)
    if interest is not None:
        await interest


def event(node: NatsAdapter, channel: str, n: object) -> Envelope:
    return Envelope("1", node.node_id, ApiEvent([channel], "e", n))


# --- subjects and keys ------------------------------------------------------------------------


@given(st.text())
def test_tokens_are_one_safe_token_and_reversible(name: str) -> None:
    t = token(name)
    assert t and all(c.isascii() and (c.isalnum() or c in "-_") for c in t)
    assert untoken(t) == name


def test_tokens_never_collide_and_keep_plain_names() -> None:
    names = ["news", "private-a.b", "private-a_2Eb", "a b", "a*b", "a>b", "", "_", "é", "user 1"]
    assert len({token(n) for n in names}) == len(names)
    assert token("presence-room-1") == "presence-room-1"
    assert "." not in token("private-a.b") and "*" not in token("a*") and ">" not in token(">")


# --- fan-out and interest -----------------------------------------------------------------------


async def test_start_gives_the_listener_its_node_id(nodes: tuple[Node, Node]) -> None:
    (a, la, _), (b, lb, _) = nodes
    assert la.node_id == a.node_id and lb.node_id == b.node_id and a.node_id != b.node_id


async def test_published_envelopes_arrive_once_in_order_never_back(
    nodes: tuple[Node, Node],
) -> None:
    (a, la, _), (b, lb, _) = nodes
    for adapter in (a, b):
        await follow(adapter, ("1", CHANNEL, "news"))
    sent = [event(a, "news", n) for n in range(50)]
    sent.append(Envelope("1", a.node_id, ClientEvent("news", "client-x", None, "u", "1.1")))
    for envelope in sent:
        a.publish(envelope)
    await wait_for(lb, len(sent))
    b.publish(event(b, "news", "from b"))  # a barrier: a has had time to get its own back
    await wait_for(la, 1)
    a.publish(event(a, "news", "end"))
    await wait_for(lb, len(sent) + 1)
    await asyncio.sleep(0.1)
    assert lb.envelopes == [*sent, event(a, "news", "end")]  # each once, in order
    assert la.envelopes == [event(b, "news", "from b")]  # never its own
    assert a.publish_batches > 0 and a.dropped == 0


async def test_a_multi_channel_event_reaches_each_followed_channel(
    nodes: tuple[Node, Node],
) -> None:
    (a, _, _), (b, lb, _) = nodes
    await follow(b, ("1", CHANNEL, "x"))
    a.publish(Envelope("1", a.node_id, ApiEvent(["x", "y", "z"], "e", 1, "9.9")))
    await wait_for(lb, 1)
    await asyncio.sleep(0.1)
    assert lb.envelopes == [Envelope("1", a.node_id, ApiEvent(["x"], "e", 1, "9.9"))]


async def test_a_node_receives_only_the_topics_it_follows(nodes: tuple[Node, Node]) -> None:
    (a, _, _), (b, lb, _) = nodes
    news, quiet = ("1", CHANNEL, "news"), ("1", CHANNEL, "quiet")
    await follow(b, news)
    for n in range(10):
        a.publish(event(a, "quiet", n))
    a.publish(event(a, "news", "barrier"))
    await wait_for(lb, 1)
    await asyncio.sleep(0.1)
    assert [e.message for e in lb.envelopes] == [ApiEvent(["news"], "e", "barrier")]
    assert b.received == 1  # the quiet channel's envelopes never reached this node

    interest = b.follow(quiet)
    assert interest is not None  # a new subscription: awaited until the server has it
    await interest
    assert b.follow(quiet) is None  # followed twice, subscribed once
    a.publish(event(a, "quiet", "now"))
    await wait_for(lb, 2)
    assert lb.envelopes[-1].message == ApiEvent(["quiet"], "e", "now")

    b.unfollow(quiet)  # one interest left: still delivered
    a.publish(event(a, "quiet", "still"))
    await wait_for(lb, 3)
    b.unfollow(quiet)  # none left: unsubscribed
    await follow(b, ("1", CHANNEL, "other"))  # its flush follows the UNSUB
    a.publish(event(a, "quiet", "gone"))
    a.publish(event(a, "news", "end"))
    await wait_for(lb, 4)
    await asyncio.sleep(0.1)
    assert [e.message.data for e in lb.envelopes] == ["barrier", "now", "still", "end"]  # type: ignore[union-attr]


async def test_follows_in_one_loop_turn_share_one_flush(nodes: tuple[Node, Node]) -> None:
    (a, _, _), (b, lb, _) = nodes
    assert b._nc is not None
    flushes = 0
    real_flush = b._nc.flush

    async def counting_flush(*args: Any, **kwargs: Any) -> None:
        nonlocal flushes
        flushes += 1
        await real_flush(*args, **kwargs)

    b._nc.flush = counting_flush  # type: ignore[method-assign]
    interests = [b.follow(("1", CHANNEL, f"many-{n}")) for n in range(50)]
    assert all(i is not None for i in interests)
    await asyncio.gather(*(i for i in interests if i is not None))
    assert flushes == 1
    for n in range(50):
        a.publish(event(a, f"many-{n}", n))
    await wait_for(lb, 50)
    assert sorted(e.message.data for e in lb.envelopes) == list(range(50))  # type: ignore[union-attr]


async def test_names_cannot_inject_subject_wildcards(nodes: tuple[Node, Node]) -> None:
    (a, _, _), (b, lb, _) = nodes
    await follow(b, ("1", CHANNEL, "private-a"))
    await follow(b, ("1", USER, "user *"))
    for name in ("private-a.b", "private-a.>", "*", ">", "private-a b", "private-a=;#,@"):
        a.publish(event(a, name, name))
    a.publish(Envelope("1", a.node_id, Terminate("user >")))
    a.publish(Envelope("1", a.node_id, Terminate("user *")))
    a.publish(event(a, "private-a", "mine"))
    await wait_for(lb, 2)
    await asyncio.sleep(0.1)  # (two subjects: no order between them)
    assert sorted(map(repr, (e.message for e in lb.envelopes))) == [
        repr(ApiEvent(["private-a"], "e", "mine")),
        repr(Terminate("user *")),
    ]


# --- shared state -----------------------------------------------------------------------------


async def test_presence_is_cluster_wide(nodes: tuple[Node, Node]) -> None:
    (a, _, sa), (b, _, sb) = nodes
    first = await a.presence_join(sa, "presence-room", "a.1", Member("ann", {"n": 1}))
    again = await b.presence_join(sb, "presence-room", "b.1", Member("ann", {"n": 1}))
    bob = await b.presence_join(sb, "presence-room", "b.2", Member(7))
    assert first is not None and first.first
    assert again is not None and not again.first
    assert bob is not None and bob.first
    assert sorted(m.key for m in bob.members) == ["7", "ann", "ann"]  # one entry per socket
    with pytest.raises(PresenceFull):  # max_presence_members=2, counted across nodes
        await a.presence_join(sa, "presence-room", "a.2", Member("zoe"))
    members = await a.presence_members(sa, "presence-room")
    assert members is not None and {m.key for m in members} == {"ann", "7"}
    assert Member(7) in members  # the id keeps its JSON type
    assert await a.presence_leave(sa, "presence-room", "a.1", Member("ann")) is False
    assert await b.presence_leave(sb, "presence-room", "b.1", Member("ann")) is True
    assert await b.presence_leave(sb, "presence-room", "b.1", Member("ann")) is False


async def test_concurrent_joins_decide_first_once_and_keep_the_cap(
    nodes: tuple[Node, Node],
) -> None:
    (a, _, sa), (b, _, sb) = nodes
    joins = [
        (a if n % 2 else b).presence_join(sa if n % 2 else sb, "presence-rush", f"{n}.1", Member("u"))
        for n in range(20)
    ]
    answers = await asyncio.gather(*joins)
    assert sum(1 for j in answers if j is not None and j.first) == 1
    outcomes = await asyncio.gather(
        *(
            (a if n % 2 else b).presence_join(
                sa if n % 2 else sb, "presence-rush", f"x{n}.1", Member(f"other-{n}")
            )
            for n in range(6)
        ),
        return_exceptions=True,
    )
    assert sum(1 for o in outcomes if isinstance(o, PresenceFull)) == 5  # room for one more user
    members = await b.presence_members(sb, "presence-rush")
    assert members is not None and len({m.key for m in members}) == 2


async def test_subscription_and_channel_counts_are_cluster_wide(nodes: tuple[Node, Node]) -> None:
    (a, _, sa), (b, _, sb) = nodes
    counts = await asyncio.gather(*(a.subscriptions_changed(sa, "news", +1) for _ in range(5)))
    assert sorted(c or 0 for c in counts) == [1, 2, 3, 4, 5]  # each +1 counted once
    assert await b.subscriptions_changed(sb, "news", +1) == 6
    assert await b.subscriptions_changed(sb, "private-a.b", +1) == 1
    assert await a.channel_counts(sa) == {"news": 6, "private-a.b": 1}
    assert await b.subscriptions_changed(sb, "news", -1) == 5
    for left in (4, 3, 2, 1, 0):
        assert await a.subscriptions_changed(sa, "news", -1) == left
    assert await b.subscriptions_changed(sb, "private-a.b", -1) == 0
    assert await b.channel_counts(sb) == {}


async def test_signed_in_users_are_cluster_wide(nodes: tuple[Node, Node]) -> None:
    (a, _, sa), (b, _, sb) = nodes
    assert await a.user_signed_in(sa, "42") is True
    assert await b.user_signed_in(sb, "42") is False
    assert await a.users_online(sa, ("42", "7", "user 42")) == ["42"]
    assert await a.user_signed_out(sa, "42") is False
    assert await b.user_signed_out(sb, "42") is True
    assert await b.users_online(sb, ("42",)) == []


async def test_connection_counts_come_from_the_heartbeat(nodes: tuple[Node, Node]) -> None:
    (a, _, sa), (b, _, sb) = nodes
    sb.connections.update({"1.1": None, "1.2": None})  # type: ignore[dict-item]
    async with asyncio.timeout(5):
        while a.other_connections(sa) != 2:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert await a.connection_count(sa) == 2
    assert b.other_connections(sb) == 0


async def test_cache_entries_reach_a_node_that_lacks_them(nodes: tuple[Node, Node]) -> None:
    (a, _, sa), (b, _, sb) = nodes
    a.cache_set(sa, "cache-prices", "price", {"eur": 1}, 60.0)
    a.cache_set(sa, "cache-prices", "price", {"eur": 2}, 60.0)  # the last one wins
    async with asyncio.timeout(5):
        while (shared := await b.cache_get(sb, "cache-prices")) is None:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    event_name, data, left = shared
    assert (event_name, data) == ("price", {"eur": 2}) and 0 < left <= 60
    a.cache_set(sa, "cache-brief", "x", 1, 0.2)
    await asyncio.sleep(0.5)
    assert await b.cache_get(sb, "cache-brief") is None  # expired


async def test_a_dead_nodes_state_is_removed_and_announced_once(nats_server: NatsServer) -> None:
    config = scaling_config(nats_server.url, f"test-{secrets.token_hex(4)}", node_timeout=1.0)
    (a, la, sa), (b, lb, sb), (c, _, sc) = [await start_node(config) for _ in range(3)]
    try:
        assert (await a.presence_join(sa, "presence-k", "a.1", Member("watcher"))) is not None
        assert (await c.presence_join(sc, "presence-k", "c.1", Member("ghost"))) is not None
        assert await c.user_signed_in(sc, "ghost") is True
        assert await c.subscriptions_changed(sc, "presence-k", +1) == 1
        assert await c.subscriptions_changed(sc, "only-c", +1) == 1
        # c dies: no goodbye, its tasks and connection just stop
        c._closing, c._connected = True, False
        for task in list(c._tasks):
            task.cancel()
        assert c._nc is not None
        await c._nc.close()
        async with asyncio.timeout(8):
            while len(la.gone) + len(lb.gone) < 4:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)  # and nothing more
        gone = sorted(la.gone + lb.gone)
        assert gone == [
            ("channel", "1", "only-c"),
            ("channel", "1", "presence-k"),
            ("member", "1", "presence-k", "ghost"),
            ("user", "1", "ghost"),
        ]
        members = await b.presence_members(sb, "presence-k")
        assert members == [Member("watcher")]
        assert await b.channel_counts(sb) == {}
        assert await b.users_online(sb, ("ghost",)) == []
    finally:
        for adapter in (a, b, c):
            await adapter.close()


async def test_a_node_taken_for_dead_registers_again(nats_server: NatsServer) -> None:
    """A node whose heartbeat stalls past node_timeout is removed (its member announced gone);
    when it beats again it writes its sockets back and announces the member again."""
    config = scaling_config(nats_server.url, f"test-{secrets.token_hex(4)}", node_timeout=1.0)
    (a, la, sa), (b, _, sb) = await start_node(config), await start_node(config)
    try:
        await follow(a, ("1", CHANNEL, "presence-r"))
        member = Member("bea", {"x": 1})
        peer = SimpleNamespace(socket_id="b.1", session=SimpleNamespace(subscriptions={"presence-r": member}))
        sb.subscribe(peer, "presence-r", member)  # type: ignore[arg-type]
        joined = await b.presence_join(sb, "presence-r", "b.1", member)
        assert joined is not None and joined.first
        next(t for t in b._tasks if t.get_name() == "nats-heartbeat").cancel()  # b stalls
        async with asyncio.timeout(6):
            while ("member", "1", "presence-r", "bea") not in la.gone:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert await a.presence_members(sa, "presence-r") == []
        b._spawn(b._heartbeat(), "nats-heartbeat")  # b wakes up
        await wait_for(la, 1)
        assert [e.message for e in la.envelopes] == [MemberAdded("presence-r", "bea", {"x": 1})]
        assert await a.presence_members(sa, "presence-r") == [member]
        assert la.gone == [("member", "1", "presence-r", "bea")]  # once
    finally:
        await a.close()
        await b.close()


async def test_memberships_of_a_closed_node_leave_the_cluster(nats_server: NatsServer) -> None:
    config = scaling_config(nats_server.url, f"test-{secrets.token_hex(4)}")
    (a, _, sa), (b, _, sb) = await start_node(config), await start_node(config)
    try:
        await b.presence_join(sb, "presence-q", "b.1", Member("leaver"))
        await b.subscriptions_changed(sb, "presence-q", +1)
        await b.close()
        assert await a.presence_members(sa, "presence-q") == []
        assert await a.channel_counts(sa) == {}
    finally:
        await a.close()


async def test_the_outage_buffer_waits_for_the_other_nodes(tmp_path: Path) -> None:
    """During an outage envelopes wait, the oldest dropped past ``buffer_size``; after it they
    go only once the other node is back (subscribed again), even when it is 2.5 s late."""
    own = NatsServer(tmp_path)
    own.start()
    config = scaling_config(own.url, "test-outage", node_timeout=6, buffer_size=8)
    (a, _, _), (b, lb, _) = await start_node(config), await start_node(config)
    try:
        await follow(b, ("1", CHANNEL, "news"))
        assert b._nc is not None
        b._nc.options["reconnect_time_wait"] = 2.5
        own.kill()
        async with asyncio.timeout(5):
            while a.healthy or b.healthy:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert a.follow(("1", CHANNEL, "later")) is None  # a join does not wait for NATS
        for n in range(10):
            a.publish(event(a, "news", n))
        assert (a.buffered, a.dropped) == (8, 2)  # the oldest went
        # restart right after one of b's attempts: its next comes 2.5 s later, a's within 0.5 s
        attempt = b._nc._current_server.last_attempt  # type: ignore[union-attr]
        async with asyncio.timeout(5):
            while b._nc._current_server.last_attempt == attempt:  # type: ignore[union-attr]  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        own.start()
        await wait_for(lb, 8, timeout=15)
        assert [e.message.data for e in lb.envelopes] == list(range(2, 10))  # type: ignore[union-attr]
        assert a.buffered == 0
        async with asyncio.timeout(5):  # b waits for a's next heartbeat, too
            while not (a.healthy and b.healthy):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    finally:
        await a.close()
        await b.close()
        own.kill()


# --- real servers -----------------------------------------------------------------------------


def cluster_env(url: str, **extra: str) -> dict[str, str]:
    return {
        "REVERB_SCALING_ENABLED": "true",
        "REVERB_SCALING_DRIVER": "nats",
        "NATS_URL": url,
        "REVERB_SCALING_PREFIX": f"test-{secrets.token_hex(4)}",
        **extra,
    }


@pytest.fixture
def cluster(tmp_path: Path, nats_server: NatsServer) -> Iterator[list[ServerProcess]]:
    """Three nodes sharing one NATS: clients on the first two, the HTTP API on the third."""
    env = cluster_env(nats_server.url)
    nodes = [start_server(tmp_path, extra_env=env) for _ in range(3)]
    yield nodes
    for node in nodes:
        node.stop()


async def presence(c: Client, node: ServerProcess, channel: str, user: str) -> dict[str, Any]:
    return await c.subscribe(
        channel, node.secret, node.key, f'{{"user_id":"{user}","user_info":{{"n":"{user}"}}}}'
    )


async def quiet(c: Client) -> None:
    """Nothing else comes to ``c``: a ping's pong is the next frame."""
    await asyncio.sleep(0.2)
    await c.send("pusher:ping", {})
    assert await c.recv() == {"event": "pusher:pong"}


async def test_api_events_reach_every_node_once_in_order(
    http: aiohttp.ClientSession, cluster: list[ServerProcess]
) -> None:
    a, b, api_node = cluster
    ca, cb = await connect(http, a), await connect(http, b)
    for c in (ca, cb):
        assert (await c.subscribe("orders"))["event"] == "pusher_internal:subscription_succeeded"
    for i in range(20):
        status, _ = await api(http, api_node, "POST", "/events", {"name": "n", "channel": "orders", "data": str(i)})
        assert status == 200
    status, _ = await api(http, api_node, "POST", "/batch_events", {"batch": [
        {"name": "n", "channel": "orders", "data": "batched"},
        {"name": "n", "channel": "elsewhere", "data": "not for us"},
    ]})
    assert status == 200
    await api(http, api_node, "POST", "/events", {"name": "n", "channel": "orders", "data": "end"})
    for c in (ca, cb):
        got = [(await c.recv())["data"] for _ in range(22)]
        assert got == [*(str(i) for i in range(20)), "batched", "end"]  # each once, in order
        await quiet(c)
    status, body = await api(http, api_node, "GET", "/channels", params={"info": "subscription_count"})
    assert body == {"channels": {"orders": {"subscription_count": 2}}}


async def test_client_events_and_presence_across_nodes(
    http: aiohttp.ClientSession, cluster: list[ServerProcess]
) -> None:
    a, b, api_node = cluster
    alice = await connect(http, a)
    ok = await presence(alice, a, "presence-chat", "alice")
    assert ok["data"]["presence"]["ids"] == ["alice"]
    bob = await connect(http, b)
    ok = await presence(bob, b, "presence-chat", "bob")
    assert sorted(ok["data"]["presence"]["ids"]) == ["alice", "bob"]
    assert await alice.recv() == {
        "event": "pusher_internal:member_added",
        "channel": "presence-chat",
        "data": {"user_id": "bob", "user_info": {"n": "bob"}},
    }
    bob_tab2 = await connect(http, a)  # bob's second socket, on the other node: no member_added
    ok = await presence(bob_tab2, a, "presence-chat", "bob")
    assert ok["data"]["presence"]["count"] == 2
    await alice.send("client-hi", {"x": 1}, channel="presence-chat")
    expected = {"event": "client-hi", "channel": "presence-chat", "data": {"x": 1}, "user_id": "alice"}
    assert await bob.recv() == expected
    assert await bob_tab2.recv() == expected
    await quiet(alice)  # neither its own client event nor bob's second socket
    status, users = await api(http, api_node, "GET", "/channels/presence-chat/users")
    assert sorted(u["id"] for u in users["users"]) == ["alice", "bob"]
    await bob.ws.close()
    await asyncio.sleep(0.3)
    await quiet(alice)  # bob still has a socket
    await bob_tab2.send("pusher:unsubscribe", {"channel": "presence-chat"})
    assert await alice.recv() == {
        "event": "pusher_internal:member_removed",
        "channel": "presence-chat",
        "data": {"user_id": "bob"},
    }
    await quiet(alice)


async def test_a_killed_nodes_members_are_removed_once(
    http: aiohttp.ClientSession, tmp_path: Path, nats_server: NatsServer
) -> None:
    env = cluster_env(nats_server.url, REVERB_SCALING_NODE_TIMEOUT="2")
    survivors = [start_server(tmp_path, extra_env=env) for _ in range(2)]
    doomed = start_server(tmp_path, extra_env=env)
    try:
        watchers = [await connect(http, node) for node in survivors]
        for n, (watcher, node) in enumerate(zip(watchers, survivors, strict=True)):
            await presence(watcher, node, "presence-k", f"watcher{n}")
        await watchers[0].recv_event("pusher_internal:member_added")
        ghost = await connect(http, doomed)
        await presence(ghost, doomed, "presence-k", "ghost")
        for watcher in watchers:
            await watcher.recv_event("pusher_internal:member_added")
        assert doomed.proc is not None
        os.kill(doomed.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        for watcher in watchers:
            removed = await watcher.recv_event("pusher_internal:member_removed", timeout=10)
            assert removed["data"] == {"user_id": "ghost"}
        assert time.monotonic() - killed < 2 + 3  # node_timeout, and a heartbeat or two
        for watcher in watchers:
            await quiet(watcher)  # announced once
        status, users = await api(http, survivors[0], "GET", "/channels/presence-k/users")
        assert sorted(u["id"] for u in users["users"]) == ["watcher0", "watcher1"]
    finally:
        for node in (*survivors, doomed):
            node.stop()


async def up(http: aiohttp.ClientSession, node: ServerProcess) -> bool:
    async with http.get(f"{node.http_url}/up") as r:
        return bool((await r.json())["health"] == "OK")


async def test_events_sent_during_an_outage_arrive_in_order(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """nats-server killed for ~2 s while node A's HTTP API accepts 20 events, then started
    again on the same port and store: node B's subscriber gets all 20, in order, once; and
    B's presence changes made meanwhile reach the cluster's view."""
    own = NatsServer(tmp_path)
    own.start()
    env = cluster_env(own.url)
    a, b = start_server(tmp_path, extra_env=env), start_server(tmp_path, extra_env=env)
    try:
        cb = await connect(http, b)
        await cb.subscribe("live")
        await api(http, a, "POST", "/events", {"name": "n", "channel": "live", "data": "before"})
        assert (await cb.recv())["data"] == "before"
        leaver = await connect(http, b)
        await presence(leaver, b, "presence-x", "leaver")
        own.kill()
        await asyncio.sleep(0.3)
        assert not await up(http, a)
        await leaver.ws.close()  # answered by B alone
        joiner = await connect(http, b)
        assert (await presence(joiner, b, "presence-x", "joiner"))["data"]["presence"]["ids"] == ["joiner"]
        for i in range(20):  # accepted while NATS is down
            status, _ = await api(http, a, "POST", "/events", {"name": "n", "channel": "live", "data": str(i)})
            assert status == 200
            await asyncio.sleep(0.08)
        async with http.get(f"{a.http_url}/metrics") as r:
            assert "reverbpy_adapter_buffered_envelopes 20.0" in await r.text()
        own.start()
        got = [(await cb.recv(timeout=20))["data"] for _ in range(20)]
        assert got == [str(i) for i in range(20)]
        async with asyncio.timeout(10):
            while not (await up(http, a) and await up(http, b)):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        await api(http, a, "POST", "/events", {"name": "n", "channel": "live", "data": "end"})
        assert (await cb.recv(timeout=5))["data"] == "end"  # nothing twice before it
        status, users = await api(http, a, "GET", "/channels/presence-x/users")
        assert users == {"users": [{"id": "joiner"}]}  # B registered its sockets again
    finally:
        a.stop()
        b.stop()
        own.kill()
