"""The pusher-js / Laravel Echo / official SDK compatibility tests, again on a cluster.

Three reverbpy nodes share one Redis (the `cluster` fixture): real pusher-js and Echo clients
(Node, tests/js/client.mjs) connect to nodes A and B, the official `pusher` Python SDK calls the
HTTP API of node C. Absence ("exactly once", "not to the sender") is proven with sentinels from
every node (see cluster_js.flush), never by sleeping.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import ServerProcess
from tests.functional.jsclient import (
    AuthEndpoint,
    JSClient,
    JSClients,
    echo_ready,
    in_thread,
    laravel_user,
    sdk,
    user,
)
from tests.scaling.cluster_js import FLUSH_EVENT, eventually, flush

pytestmark = [pytest.mark.redis, pytest.mark.node]

FLUSH = "." + FLUSH_EVENT


@pytest.fixture
async def auth_endpoint(cluster: list[ServerProcess]) -> AsyncIterator[AuthEndpoint]:
    # Every node has the same app; the endpoint signs with its secret (as a Laravel app would).
    async with AuthEndpoint(cluster[2]) as endpoint:
        yield endpoint


def events(client: JSClient, channel: str, event: str) -> list[Any]:
    """The data of every `event` pusher-js delivered on `channel` (bind_global), in order."""
    return [m["data"] for m in client.seen("event", channel=channel, event=event)]


def users_of(client: JSClient, kind: str, channel: str) -> list[Any]:
    """The users of every echo_joining/echo_leaving a client saw on `channel`, in order."""
    return [m["user"] for m in client.seen(kind, channel=channel)]


def by_id(users: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(users, key=lambda u: u["id"])


async def echo_join(client: JSClient, channel: str, **kwargs: Any) -> list[dict[str, Any]]:
    """Echo.join(channel) listening for the flush sentinel; returns the `here` users."""
    await client.call("echo_channel", kind="presence", channel=channel, listen=[FLUSH], **kwargs)
    here = await client.wait_for("echo_here", channel=f"presence-{channel}")
    users: list[dict[str, Any]] = here["users"]
    return users


# -- public events ---------------------------------------------------------------------------


async def test_sdk_trigger_on_c_reaches_pusher_js_on_a_and_b_exactly_once(
    cluster: list[ServerProcess], js: JSClients
) -> None:
    a, b, c = cluster
    a1, a2 = await js.pusher(a, "a1"), await js.pusher(a, "a2")
    b1 = await js.pusher(b, "b1")
    clients = [a1, a2, b1]
    for client in clients:
        await client.connected()
        await client.subscribed("orders")
    await b1.subscribed("audit")
    api = sdk(c)

    assert await in_thread(api.trigger, "orders", "order.shipped", {"id": 7}) == {}
    # One call to two channels: b1, on both, gets it once per channel.
    await in_thread(api.trigger, ["orders", "audit"], "order.paid", {"id": 7})
    await flush(cluster, "orders", clients)
    await flush(cluster, "audit", [b1])

    for client in clients:
        assert events(client, "orders", "order.shipped") == [{"id": 7}], client.describe()
        assert events(client, "orders", "order.paid") == [{"id": 7}], client.describe()
    assert events(b1, "audit", "order.paid") == [{"id": 7}]
    assert a1.seen("event", channel="audit") == []


async def test_events_from_one_publisher_arrive_in_order_on_every_node(
    cluster: list[ServerProcess], js: JSClients
) -> None:
    a, b, c = cluster
    clients = [await js.pusher(a, "a1"), await js.pusher(b, "b1"), await js.pusher(b, "b2")]
    for client in clients:
        await client.connected()
        await client.subscribed("ticker")
    api = sdk(c)

    def burst() -> None:  # back to back, one keep-alive HTTP connection
        for i in range(200):
            api.trigger("ticker", "tick", {"i": i})

    await in_thread(burst)
    for client in clients:
        await client.wait_for(
            "event", channel="ticker", event="tick", where=lambda m: m["data"] == {"i": 199}
        )
    await flush(cluster, "ticker", clients)
    for client in clients:
        got = [d["i"] for d in events(client, "ticker", "tick")]
        assert got == list(range(200)), f"{client.name}: {got}"


# -- private channels ------------------------------------------------------------------------


async def test_private_channel_auth_on_both_nodes(
    cluster: list[ServerProcess], js: JSClients, auth_endpoint: AuthEndpoint
) -> None:
    a, b, c = cluster
    auth_endpoint.bad_channels.add("private-forbidden")
    on_a = await js.pusher(a, "on-a", auth=auth_endpoint)
    on_b = await js.pusher(b, "on-b", auth=auth_endpoint)
    echo_b = await js.echo(b, "echo-b", auth=auth_endpoint)
    socket_a, socket_b = await on_a.connected(), await on_b.connected()
    socket_echo = await echo_ready(echo_b)

    await on_a.subscribed("private-account-7")
    await on_b.subscribed("private-account-7")
    await echo_b.call(
        "echo_channel", kind="private", channel="account-7", listen=[".balance", FLUSH]
    )
    await echo_b.wait_for("echo_subscribed", channel="private-account-7")
    assert {(r["socket_id"], r["channel_name"]) for r in auth_endpoint.requests} == {
        (socket_a, "private-account-7"),
        (socket_b, "private-account-7"),
        (socket_echo, "private-account-7"),
    }

    # A signature from another secret is refused on node B too, and the socket stays usable.
    await on_b.subscribe("private-forbidden")
    err = await on_b.wait_for("subscription_error", channel="private-forbidden")
    assert err["data"]["status"] == 401
    assert on_b.seen("subscription_succeeded", channel="private-forbidden") == []

    api = sdk(c)
    await in_thread(api.trigger, "private-account-7", "balance", {"cents": 1234})
    await in_thread(api.trigger, "private-forbidden", "leak", {})
    await flush(cluster, "private-account-7", [on_a, on_b])
    await flush(cluster, "private-account-7", [echo_b], echo=True)
    assert events(on_a, "private-account-7", "balance") == [{"cents": 1234}]
    assert events(on_b, "private-account-7", "balance") == [{"cents": 1234}]
    got = echo_b.seen("echo_event", channel="private-account-7", listener=".balance")
    assert [m["data"] for m in got] == [{"cents": 1234}]
    assert on_b.seen("event", channel="private-forbidden") == []
    assert await in_thread(api.channel_info, "private-account-7", ["subscription_count"]) == {
        "occupied": True,
        "subscription_count": 3,
    }
    assert await in_thread(api.channel_info, "private-forbidden") == {"occupied": False}


# -- presence with Laravel Echo --------------------------------------------------------------


async def test_echo_presence_here_joining_leaving_across_nodes(
    cluster: list[ServerProcess], js: JSClients, auth_endpoint: AuthEndpoint
) -> None:
    a, b, c = cluster
    alice = await js.echo(a, "alice@A", auth=auth_endpoint, params=laravel_user(1, "Alice"))
    bob = await js.echo(b, "bob@B", auth=auth_endpoint, params=laravel_user(2, "Bob"))
    carol = await js.echo(b, "carol@B", auth=auth_endpoint, params=laravel_user(3, "Carol"))
    dave = await js.echo(a, "dave@A", auth=auth_endpoint, params=laravel_user(4, "Dave"))
    for client in (alice, bob, carol, dave):
        await echo_ready(client)
    ALICE, BOB = {"id": 1, "name": "Alice"}, {"id": 2, "name": "Bob"}
    CAROL, DAVE = {"id": 3, "name": "Carol"}, {"id": 4, "name": "Dave"}
    room = "presence-chat.1"

    assert await echo_join(alice, "chat.1") == [ALICE]
    assert by_id(await echo_join(bob, "chat.1")) == [ALICE, BOB]
    assert (await alice.wait_for("echo_joining", channel=room))["user"] == BOB
    assert by_id(await echo_join(carol, "chat.1")) == [ALICE, BOB, CAROL]
    assert by_id(await echo_join(dave, "chat.1")) == [ALICE, BOB, CAROL, DAVE]
    everyone = [alice, bob, carol, dave]
    await flush(cluster, room, everyone, echo=True)
    # Each arrival was announced once, on both nodes, to everyone already there (never to itself).
    assert users_of(alice, "echo_joining", room) == [BOB, CAROL, DAVE]
    assert users_of(bob, "echo_joining", room) == [CAROL, DAVE]
    assert users_of(carol, "echo_joining", room) == [DAVE]
    assert users_of(dave, "echo_joining", room) == []
    users = await in_thread(sdk(c).users_info, room)
    assert sorted(u["id"] for u in users["users"]) == ["1", "2", "3", "4"]

    # Carol's Node process is SIGKILLed on node B: one leaving, on both nodes.
    await carol.kill()
    for observer in (alice, bob, dave):
        assert (await observer.wait_for("echo_leaving", channel=room))["user"] == CAROL
    # Bob leaves with Echo.leave() on node B.
    await bob.call("leave", channel="chat.1")
    for observer in (alice, dave):
        assert (await observer.wait_for("echo_leaving", channel=room))["user"] == BOB
    await flush(cluster, room, [alice, dave], echo=True)
    for observer in (alice, dave):
        assert users_of(observer, "echo_leaving", room) == [CAROL, BOB], observer.describe()
    assert users_of(bob, "echo_leaving", room) == [CAROL]
    await eventually(lambda: sdk(c).users_info(room), {"users": [{"id": "1"}, {"id": "4"}]})
    assert await in_thread(sdk(c).channel_info, room, ["user_count", "subscription_count"]) == {
        "occupied": True,
        "user_count": 2,
        "subscription_count": 2,
    }


async def test_user_with_tabs_on_both_nodes_is_one_member(
    cluster: list[ServerProcess], js: JSClients, auth_endpoint: AuthEndpoint
) -> None:
    a, b, c = cluster
    alice = await js.echo(a, "alice@A", auth=auth_endpoint, params=laravel_user(1, "Alice"))
    carol = await js.echo(b, "carol@B", auth=auth_endpoint, params=laravel_user(3, "Carol"))
    tab_a = await js.echo(a, "bob-tab@A", auth=auth_endpoint, params=laravel_user(2, "Bob"))
    tab_b = await js.echo(b, "bob-tab@B", auth=auth_endpoint, params=laravel_user(2, "Bob"))
    for client in (alice, carol, tab_a, tab_b):
        await echo_ready(client)
    ALICE, BOB, CAROL = (
        {"id": 1, "name": "Alice"},
        {"id": 2, "name": "Bob"},
        {"id": 3, "name": "Carol"},
    )
    room = "presence-doc.9"
    api = sdk(c)
    observers = [alice, carol]

    await echo_join(alice, "doc.9")
    await echo_join(carol, "doc.9")
    assert by_id(await echo_join(tab_a, "doc.9")) == [ALICE, BOB, CAROL]
    assert by_id(await echo_join(tab_b, "doc.9")) == [ALICE, BOB, CAROL]  # Bob once
    await flush(cluster, room, [*observers, tab_a, tab_b], echo=True)
    assert users_of(alice, "echo_joining", room) == [CAROL, BOB], alice.describe()
    assert users_of(carol, "echo_joining", room) == [BOB], carol.describe()
    assert users_of(tab_a, "echo_joining", room) == []  # the second tab is not a new member
    assert await in_thread(api.channel_info, room, ["user_count", "subscription_count"]) == {
        "occupied": True,
        "user_count": 3,
        "subscription_count": 4,
    }
    users = await in_thread(api.users_info, room)
    assert sorted(u["id"] for u in users["users"]) == ["1", "2", "3"]

    # The tab on B closes: Bob is still here through node A, nobody sees him leave.
    await tab_b.call("leave", channel="doc.9")
    await eventually(
        lambda: api.channel_info(room, ["subscription_count"]),
        {"occupied": True, "subscription_count": 3},
    )
    await flush(cluster, room, observers, echo=True)
    for observer in observers:
        assert users_of(observer, "echo_leaving", room) == [], observer.describe()
    assert await in_thread(api.channel_info, room, ["user_count"]) == {
        "occupied": True,
        "user_count": 3,
    }

    # The last tab, on A, dies: one leaving, on both nodes.
    await tab_a.kill()
    for observer in observers:
        assert (await observer.wait_for("echo_leaving", channel=room))["user"] == BOB
    await flush(cluster, room, observers, echo=True)
    for observer in observers:
        assert users_of(observer, "echo_leaving", room) == [BOB], observer.describe()
    await eventually(lambda: api.users_info(room), {"users": [{"id": "1"}, {"id": "3"}]})


# -- client events (whispers) ----------------------------------------------------------------


async def test_whisper_from_a_reaches_b_and_not_the_sender(
    cluster: list[ServerProcess], js: JSClients, auth_endpoint: AuthEndpoint
) -> None:
    a, b, _ = cluster
    sender = await js.echo(a, "sender@A", auth=auth_endpoint)
    peer_a = await js.echo(a, "peer@A", auth=auth_endpoint)
    peer_b = await js.echo(b, "peer@B", auth=auth_endpoint)
    clients = [sender, peer_a, peer_b]
    for client in clients:
        await echo_ready(client)
        await client.call(
            "echo_channel", kind="private", channel="doc.3", listen=[FLUSH], whispers=["typing"]
        )
        await client.wait_for("echo_subscribed", channel="private-doc.3")

    await sender.call(
        "whisper",
        kind="private",
        channel="doc.3",
        event="typing",
        data={"name": "A", "typing": True},
    )
    got = await peer_b.wait_for("echo_whisper", channel="private-doc.3", whisper="typing")
    assert got["data"] == {"name": "A", "typing": True}
    await flush(cluster, "private-doc.3", clients, echo=True)
    assert len(peer_b.seen("echo_whisper")) == 1
    assert [m["data"] for m in peer_a.seen("echo_whisper")] == [{"name": "A", "typing": True}]
    assert sender.seen("echo_whisper") == []


async def test_presence_whisper_across_nodes_carries_the_user_id(
    cluster: list[ServerProcess], js: JSClients, auth_endpoint: AuthEndpoint
) -> None:
    a, b, _ = cluster
    alice = await js.echo(a, "alice@A", auth=auth_endpoint, params=user("u-alice", "Alice"))
    bob = await js.echo(b, "bob@B", auth=auth_endpoint, params=user("u-bob", "Bob"))
    for client in (alice, bob):
        await echo_ready(client)
        await echo_join(client, "room", whispers=["typing"])

    await alice.call("whisper", kind="presence", channel="room", event="typing", data={"on": 1})
    got = await bob.wait_for("echo_whisper", channel="presence-room", whisper="typing")
    assert got["data"] == {"on": 1}
    assert got["metadata"] == {"user_id": "u-alice"}
    await flush(cluster, "presence-room", [alice, bob], echo=True)
    assert alice.seen("echo_whisper") == []
    assert len(bob.seen("echo_whisper")) == 1


# -- toOthers() ------------------------------------------------------------------------------


async def test_to_others_excludes_the_echo_socket_on_a_when_triggering_on_c(
    cluster: list[ServerProcess], js: JSClients
) -> None:
    a, b, c = cluster
    sender = await js.echo(a, "sender@A")
    other_a = await js.echo(a, "other@A")
    other_b = await js.echo(b, "other@B")
    sender_socket = await echo_ready(sender)
    assert sender_socket != await echo_ready(other_a)
    await echo_ready(other_b)
    clients = [sender, other_a, other_b]
    for client in clients:
        await client.call("echo_channel", channel="feed", listen=[".post.created"])
        await client.wait_for("echo_subscribed", channel="feed")

    api = sdk(c)
    # Laravel's broadcast(...)->toOthers(): Echo's X-Socket-ID becomes the trigger's socket_id.
    await in_thread(api.trigger, "feed", "post.created", {"n": 1}, socket_id=sender_socket)
    # Sentinel to everyone from the same publisher, so it arrives after the excluded event.
    await in_thread(api.trigger, "feed", "post.created", {"n": 2})
    for client in clients:
        await client.wait_for(
            "echo_event",
            channel="feed",
            listener=".post.created",
            where=lambda m: m["data"] == {"n": 2},
        )
    assert [m["data"] for m in sender.seen("echo_event")] == [{"n": 2}]
    for other in (other_a, other_b):
        assert [m["data"] for m in other.seen("echo_event")] == [{"n": 1}, {"n": 2}], (
            other.describe()
        )


# -- HTTP API queries and batches ------------------------------------------------------------


async def test_sdk_queries_on_c_see_clients_on_a_and_b(
    cluster: list[ServerProcess], js: JSClients, auth_endpoint: AuthEndpoint
) -> None:
    a, b, c = cluster
    a1, b1, b2 = await js.pusher(a, "a1"), await js.pusher(b, "b1"), await js.pusher(b, "b2")
    u1_a = await js.pusher(a, "u1@A", auth=auth_endpoint, params=user("u1", "One"))
    u2_b = await js.pusher(b, "u2@B", auth=auth_endpoint, params=user("u2", "Two"))
    u2_a = await js.pusher(a, "u2@A", auth=auth_endpoint, params=user("u2", "Two"))
    for client in (a1, b1, b2, u1_a, u2_b, u2_a):
        await client.connected()
    for client in (a1, b1, b2):
        await client.subscribed("count-me")
    await a1.subscribed("only-a")
    for client in (u1_a, u2_b, u2_a):
        await client.subscribed("presence-team")
    api = sdk(c)

    assert await in_thread(api.channels_info) == {
        "channels": {"count-me": {}, "only-a": {}, "presence-team": {}}
    }
    assert await in_thread(api.channels_info, "presence-", ["user_count"]) == {
        "channels": {"presence-team": {"user_count": 2}}
    }
    assert await in_thread(api.channels_info, "count-", ["subscription_count"]) == {
        "channels": {"count-me": {"subscription_count": 3}}
    }
    assert await in_thread(api.channel_info, "count-me", ["subscription_count"]) == {
        "occupied": True,
        "subscription_count": 3,
    }
    assert await in_thread(
        api.channel_info, "presence-team", ["user_count", "subscription_count"]
    ) == {
        "occupied": True,
        "user_count": 2,
        "subscription_count": 3,
    }
    assert await in_thread(api.channel_info, "nobody-here") == {"occupied": False}
    users = await in_thread(api.users_info, "presence-team")
    assert sorted(u["id"] for u in users["users"]) == ["u1", "u2"]
    # Every node answers for the whole cluster, not just C.
    for node in (a, b):
        assert await in_thread(sdk(node).channel_info, "count-me", ["subscription_count"]) == {
            "occupied": True,
            "subscription_count": 3,
        }

    # Clients go away on both nodes: C's answers follow.
    await b1.kill()
    await a1.call("unsubscribe", channel="only-a")
    await u2_b.call("disconnect")
    await eventually(
        lambda: api.channels_info(None, ["subscription_count"]),
        {
            "channels": {
                "count-me": {"subscription_count": 2},
                "presence-team": {"subscription_count": 2},
            }
        },
    )
    assert await in_thread(api.channel_info, "presence-team", ["user_count"]) == {
        "occupied": True,
        "user_count": 2,  # u2 still has its tab on A
    }
    await u2_a.kill()
    await eventually(lambda: api.users_info("presence-team"), {"users": [{"id": "u1"}]})
    assert await in_thread(api.channel_info, "only-a") == {"occupied": False}


async def test_trigger_batch_on_c(cluster: list[ServerProcess], js: JSClients) -> None:
    a, b, c = cluster
    on_a, on_b = await js.pusher(a, "on-a"), await js.pusher(b, "on-b")
    socket_a = await on_a.connected()
    await on_b.connected()
    for client in (on_a, on_b):
        await client.subscribed("batch-1")
    await on_b.subscribed("batch-2")

    result = await in_thread(
        sdk(c).trigger_batch,
        [
            {"channel": "batch-1", "name": "first", "data": {"i": 1}},
            {"channel": "batch-2", "name": "second", "data": {"i": 2}},
            {"channel": "batch-1", "name": "third", "data": "raw"},
            {"channel": "batch-1", "name": "not-for-a", "data": {"i": 4}, "socket_id": socket_a},
        ],
    )
    assert result == {}
    await flush(cluster, "batch-1", [on_a, on_b])
    await flush(cluster, "batch-2", [on_b])

    def seen(client: JSClient, channel: str) -> list[tuple[str, Any]]:
        return [
            (m["event"], m["data"])
            for m in client.seen("event", channel=channel)
            if m["event"] != FLUSH_EVENT
        ]

    assert seen(on_a, "batch-1") == [("first", {"i": 1}), ("third", "raw")]
    assert seen(on_b, "batch-1") == [("first", {"i": 1}), ("third", "raw"), ("not-for-a", {"i": 4})]
    assert seen(on_b, "batch-2") == [("second", {"i": 2})]
    assert on_a.seen("event", channel="batch-2") == []
