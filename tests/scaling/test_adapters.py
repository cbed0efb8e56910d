"""The adapter seam, in-process: two Redis "nodes" in one event loop, a real Redis, no server.

Each adapter gets a ``RecordingListener`` in place of the hub, so these tests hold the contract
the hub relies on (``scaling.base.Adapter``): what one node publishes reaches the others,
decoded; presence, subscription counts, users and cache entries are cluster-wide; and the
memory adapter answers ``None`` everywhere ("this node is the whole truth").
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from reverbpy.config import AppConfig, ScalingConfig, Secret, ServerConfig
from reverbpy.protocol.cluster import (
    CHANNEL,
    USER,
    WATCH,
    ApiEvent,
    ClientEvent,
    Envelope,
    Terminate,
    Topic,
    UserOnline,
)
from reverbpy.protocol.presence import Member
from reverbpy.registry import AppState, Registry
from reverbpy.scaling.base import PresenceFull
from reverbpy.scaling.memory import MemoryAdapter
from reverbpy.scaling.redis import RedisAdapter
from tests.scaling.conftest import RedisBackend
from tests.soak.harness import RedisServer

pytestmark = pytest.mark.redis

APP = AppConfig(id="1", key="k", secret=Secret("s"), max_presence_members=2)


class RecordingListener:
    """Stands in for the hub: records what the cluster tells this node."""

    def __init__(self) -> None:
        self.node_id = ""
        self.registry = Registry((APP,))
        self.envelopes: list[Envelope] = []
        self.arrived = asyncio.Event()

    def receive(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)
        self.arrived.set()

    def member_gone(self, app_id: str, channel_name: str, user_id: Any) -> None:
        pass

    def user_gone(self, app_id: str, user_id: str) -> None:
        pass

    def channel_gone(self, app_id: str, channel_name: str) -> None:
        pass


Node = tuple[RedisAdapter, RecordingListener, AppState]


@pytest.fixture
async def nodes(redis_backend: RedisBackend) -> AsyncIterator[tuple[Node, Node]]:
    config = ServerConfig(
        apps=(APP,),
        scaling=ScalingConfig(
            adapter="redis",
            prefix=f"test-{secrets.token_hex(4)}",
            redis_url=Secret(redis_backend.url),
            redis_cluster=redis_backend.sharded,
        ),
    )
    made: list[Node] = []
    for _ in range(2):
        adapter, listener = RedisAdapter(config), RecordingListener()
        await adapter.start(listener)
        state = listener.registry.by_id("1")
        assert state is not None and adapter.healthy
        made.append((adapter, listener, state))
    await asyncio.sleep(0.1)  # both subscribed
    yield made[0], made[1]
    for adapter, _, _ in made:
        await adapter.close()


async def wait_for(listener: RecordingListener, count: int) -> None:
    async with asyncio.timeout(5):
        while len(listener.envelopes) < count:
            listener.arrived.clear()
            await listener.arrived.wait()


async def test_start_gives_the_listener_its_node_id(nodes: tuple[Node, Node]) -> None:
    (a, la, _), (b, lb, _) = nodes
    assert la.node_id == a.node_id and lb.node_id == b.node_id and a.node_id != b.node_id


async def follow(adapter: RedisAdapter, *topics: Topic) -> None:
    for topic in topics:
        interest = adapter.follow(topic)
        assert interest is not None, "a new topic is not subscribed yet"
        await asyncio.wait_for(interest, 5)


async def test_published_envelopes_arrive_decoded_and_in_order(nodes: tuple[Node, Node], redis_backend: RedisBackend) -> None:
    """In order per channel; on one Redis, in the publisher's order across channels too (a
    Redis Cluster keeps channels on different shards, which deliver independently)."""
    (a, _, _), (b, lb, _) = nodes
    await follow(b, ("1", CHANNEL, "news"), ("1", CHANNEL, "private-c"))
    sent = [Envelope("1", a.node_id, ApiEvent(["news"], "e", {"n": n})) for n in range(50)]
    sent.insert(25, Envelope("1", a.node_id, ClientEvent("private-c", "client-x", None, "u", "1.1")))
    for envelope in sent:
        a.publish(envelope)
    await wait_for(lb, len(sent))

    def channel_of(envelope: Envelope) -> str:
        return envelope.message.channels[0] if isinstance(envelope.message, ApiEvent) else envelope.message.channel  # type: ignore[union-attr]

    for channel in ("news", "private-c"):
        assert [e for e in lb.envelopes if channel_of(e) == channel] == [e for e in sent if channel_of(e) == channel]
    if not redis_backend.sharded:
        assert lb.envelopes == sent


async def test_a_node_receives_only_the_topics_it_follows(nodes: tuple[Node, Node]) -> None:
    """Interest routing: an event to two channels reaches a node as the part for the channel
    it serves; after its last local interest goes, nothing more of that channel arrives."""
    (a, la, _), (b, lb, _) = nodes
    news, sport = ("1", CHANNEL, "news"), ("1", CHANNEL, "sport")
    await follow(b, news)
    assert b.follow(news) is None  # counted: already subscribed
    a.publish(Envelope("1", a.node_id, ApiEvent(["news", "sport"], "e", 1)))
    a.publish(Envelope("1", a.node_id, Terminate("42")))  # a user nobody here follows
    await wait_for(lb, 1)
    b.unfollow(news)  # one of two interests left: still followed
    a.publish(Envelope("1", a.node_id, ApiEvent(["news"], "e", 2)))
    await wait_for(lb, 2)
    b.unfollow(news)  # the last: unsubscribed
    await follow(b, sport)  # (after the unsubscribe, on the same connection)
    a.publish(Envelope("1", a.node_id, ApiEvent(["news"], "e", 3)))
    a.publish(Envelope("1", a.node_id, ApiEvent(["sport"], "e", 4)))
    await wait_for(lb, 3)
    await asyncio.sleep(0.1)
    assert [(e.message.channels, e.message.data) for e in lb.envelopes] == [  # type: ignore[union-attr]
        (["news"], 1),
        (["news"], 2),
        (["sport"], 4),
    ]
    assert b.received == 3 and la.envelopes == []  # a follows nothing; its own never return


async def test_user_and_watch_topics_route_terminate_and_presence_of_users(
    nodes: tuple[Node, Node], redis_backend: RedisBackend
) -> None:
    (a, _, _), (b, lb, _) = nodes
    await follow(b, ("1", USER, "7"), ("1", WATCH, "8"))
    for message in (Terminate("6"), Terminate("7"), UserOnline("9"), UserOnline("8")):
        a.publish(Envelope("1", a.node_id, message))
    await wait_for(lb, 2)
    await asyncio.sleep(0.1)
    got = [e.message for e in lb.envelopes]
    if redis_backend.sharded:  # two topics, maybe two shards: each in order, not between them
        got.sort(key=repr)
    assert got == [Terminate("7"), UserOnline("8")]


async def test_presence_is_cluster_wide(nodes: tuple[Node, Node]) -> None:
    (a, _, sa), (b, _, sb) = nodes
    first = await a.presence_join(sa, "presence-room", "a.1", Member("ann", {"n": 1}))
    again = await b.presence_join(sb, "presence-room", "b.1", Member("ann", {"n": 1}))
    bob = await b.presence_join(sb, "presence-room", "b.2", Member("bob"))
    assert first is not None and first.first
    assert again is not None and not again.first
    assert bob is not None and bob.first
    assert {m.key for m in bob.members} == {"ann", "bob"}  # one entry per socket
    with pytest.raises(PresenceFull):  # max_presence_members=2, counted across nodes
        await a.presence_join(sa, "presence-room", "a.2", Member("zoe"))
    members = await a.presence_members(sa, "presence-room")
    assert members is not None and {m.key for m in members} == {"ann", "bob"}
    assert await a.presence_leave(sa, "presence-room", "a.1", Member("ann")) is False
    assert await b.presence_leave(sb, "presence-room", "b.1", Member("ann")) is True


async def test_subscription_and_channel_counts_are_cluster_wide(nodes: tuple[Node, Node]) -> None:
    (a, _, sa), (b, _, sb) = nodes
    assert await a.subscriptions_changed(sa, "news", +1) == 1
    assert await b.subscriptions_changed(sb, "news", +1) == 2
    assert await a.channel_counts(sa) == {"news": 2}
    assert await b.subscriptions_changed(sb, "news", -1) == 1
    assert await a.subscriptions_changed(sa, "news", -1) == 0
    assert await b.channel_counts(sb) == {}


async def test_counts_over_many_channels_and_a_reaped_node_leaves_nothing(nodes: tuple[Node, Node]) -> None:
    """The app's index of occupied channels and a node's own indexes are kept in buckets (on
    a Redis Cluster: on every shard); reaping a node finds all it added, in every bucket."""
    (a, _, sa), (b, _, sb) = nodes
    names = [f"ch-{i}" for i in range(60)]
    for name in names:
        assert await a.subscriptions_changed(sa, name, +1) == 1
    assert await b.subscriptions_changed(sb, "ch-0", +1) == 2
    assert await b.channel_counts(sb) == {name: 2 if name == "ch-0" else 1 for name in names}
    assert await b.channel_count(sb, "ch-7") == 1
    assert await a.presence_join(sa, "presence-x", "a.1", Member("ann")) is not None
    assert await a.user_signed_in(sa, "ann") is True
    await b._forget_node(a.node_id, announce=True)  # as a survivor reaps a dead node
    assert await b.channel_counts(sb) == {"ch-0": 1}
    assert await b.presence_members(sb, "presence-x") == []
    assert await b.users_online(sb, ("ann",)) == []


async def test_signed_in_users_are_cluster_wide(nodes: tuple[Node, Node]) -> None:
    (a, _, sa), (b, _, sb) = nodes
    assert await a.user_signed_in(sa, "42") is True
    assert await b.user_signed_in(sb, "42") is False
    assert await a.users_online(sa, ("42", "7")) == ["42"]
    assert await a.user_signed_out(sa, "42") is False
    assert await b.user_signed_out(sb, "42") is True
    assert await b.users_online(sb, ("42",)) == []


async def test_cache_entries_reach_a_node_that_lacks_them(nodes: tuple[Node, Node]) -> None:
    (a, _, sa), (b, _, sb) = nodes
    a.cache_set(sa, "cache-prices", "price", {"eur": 1}, 60.0)
    async with asyncio.timeout(5):  # the SET leaves through the publisher's queue
        while (shared := await b.cache_get(sb, "cache-prices")) is None:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    event, data, left = shared
    assert (event, data) == ("price", {"eur": 1}) and 0 < left <= 60


async def test_memory_adapter_says_this_node_is_the_whole_truth() -> None:
    adapter, listener = MemoryAdapter(), RecordingListener()
    await adapter.start(listener)
    state = listener.registry.by_id("1")
    assert state is not None
    adapter.publish(Envelope("1", "n", ApiEvent(["news"], "e", None)))
    assert listener.envelopes == []
    assert await adapter.presence_join(state, "presence-x", "1.1", Member("a")) is None
    assert await adapter.subscriptions_changed(state, "news", 1) is None
    assert await adapter.user_signed_in(state, "a") is None
    assert await adapter.channel_counts(state) is None
    assert adapter.other_connections(state) == 0
    await adapter.close()


async def test_a_topic_followed_again_while_its_unsubscribe_is_on_the_way_stays_subscribed(
    nodes: tuple[Node, Node],
) -> None:
    """The last socket leaves and another joins at once: the join must not end up on a topic
    Redis has just unsubscribed, whether the UNSUBSCRIBE is not sent yet, sent, or confirmed."""
    (a, _, _), (b, lb, _) = nodes
    news = ("1", CHANNEL, "news")
    await follow(b, news)
    for turns in range(8):
        b.unfollow(news)
        for _ in range(turns):
            await asyncio.sleep(0)
        again = b.follow(news)
        if again is not None:
            await asyncio.wait_for(again, 5)
        a.publish(Envelope("1", a.node_id, ApiEvent(["news"], "e", turns)))
        await wait_for(lb, turns + 1)
    assert [e.message.data for e in lb.envelopes] == list(range(8))  # type: ignore[union-attr]


async def test_a_node_that_says_it_is_healthy_again_is_subscribed_again(tmp_path: Path) -> None:
    """Redis down for 4 s: the listener's retries back off to seconds apart. Once the
    heartbeat finds Redis back (``healthy``), the listener tries at once instead of after its
    backoff, so what another node publishes then arrives within a moment, not seconds later."""
    own = RedisServer(tmp_path)
    own.start()
    config = ServerConfig(
        apps=(APP,),
        scaling=ScalingConfig(adapter="redis", prefix=f"test-{secrets.token_hex(4)}", redis_url=Secret(own.url)),
    )
    made: list[Node] = []
    try:
        for _ in range(2):
            adapter, listener = RedisAdapter(config), RecordingListener()
            await adapter.start(listener)
            state = listener.registry.by_id("1")
            assert state is not None
            made.append((adapter, listener, state))
        (a, _, _), (b, lb, _) = made
        await follow(b, ("1", CHANNEL, "news"))
        own.stop()
        async with asyncio.timeout(10):
            while a.healthy or b.healthy:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        await asyncio.sleep(4)
        own.start()
        for adapter in (a, b):  # as their heartbeats would, at their next beat
            await adapter._recover()
        assert a.healthy and b.healthy
        a.publish(Envelope("1", a.node_id, ApiEvent(["news"], "e", "back")))
        async with asyncio.timeout(1.0):
            await wait_for(lb, 1)
        assert [e.message.data for e in lb.envelopes] == ["back"]  # type: ignore[union-attr]
    finally:
        for adapter, _, _ in made:
            await adapter.close()
        own.stop()
