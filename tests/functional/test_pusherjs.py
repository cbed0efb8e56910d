"""pusher-js 8 (the real npm package, under Node) against a real reverbpy process.

Events are published with the official `pusher` Python SDK; private and presence channels are
authorized by an endpoint that signs with that SDK (see jsclient.AuthEndpoint).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, start_server
from tests.functional.jsclient import (
    SOCKET_ID_RE,
    AuthEndpoint,
    JSClient,
    JSClients,
    in_thread,
    sdk,
    signed_request,
    user,
)

pytestmark = pytest.mark.node


async def alice_and_bob(
    server: ServerProcess, js: JSClients, auth: AuthEndpoint, channel: str
) -> tuple[JSClient, JSClient]:
    """Two pusher-js members, Alice (id 1) then Bob (id 2), both subscribed to ``channel``."""
    alice = await js.pusher(server, "alice", auth=auth, params=user("1", "Alice"))
    bob = await js.pusher(server, "bob", auth=auth, params=user("2", "Bob"))
    await alice.connected()
    await bob.connected()
    await alice.subscribed(channel)
    await bob.subscribed(channel)
    return alice, bob



def states(client: JSClient) -> list[str]:
    """The connection states pusher-js went through (the initial `connecting` happens inside
    `new Pusher()`, before the driver can bind, so it is left out)."""
    return [m["current"] for m in client.seen("state") if m["current"] != "connecting"]


async def no_events_named(client: JSClient, channel: str, event: str) -> None:
    """Assert `client` never saw `event` on `channel`, by any route."""
    assert client.seen("event", channel=channel, event=event) == []
    assert client.seen("bound", channel=channel, event=event) == []


# -- connection ----------------------------------------------------------------------------


async def test_connects_and_gets_a_socket_id(server: ServerProcess, js: JSClients) -> None:
    client = await js.pusher(server)
    socket_id = await client.connected()
    assert re.match(SOCKET_ID_RE, socket_id), socket_id
    assert await client.call("state") == {"state": "connected", "socket_id": socket_id}
    assert states(client) == ["connected"]


async def test_each_connection_gets_its_own_socket_id(server: ServerProcess, js: JSClients) -> None:
    a, b = await js.pusher(server, "a"), await js.pusher(server, "b")
    assert await a.connected() != await b.connected()


async def test_unknown_app_key_is_refused_without_reconnecting(
    server: ServerProcess, js: JSClients
) -> None:
    server_with_wrong_key = ServerProcess(server.port, server.app_id, "no-such-key", server.secret)
    client = await js.pusher(server_with_wrong_key)
    err = await client.wait_for("connection_error")
    # pusher-js reports a refused handshake as a WebSocketError wrapping the PusherError.
    assert err["error"]["type"] == "WebSocketError"
    assert err["error"]["error"]["type"] == "PusherError"
    assert err["error"]["error"]["data"]["code"] == 4001
    await client.wait_for("state", current="disconnected")
    # 4001 is in the "refused" range: pusher-js must not be told to try again.
    await asyncio.sleep(1.5)
    assert client.seen("connected") == []
    assert states(client) == ["disconnected"]


# -- heartbeats -----------------------------------------------------------------------------


@pytest.fixture
def quick_ping_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """The server pings after 1 s of client silence and gives 2 s for the pong."""
    s = start_server(
        tmp_path,
        extra_env={"REVERB_APP_PING_INTERVAL": "1", "REVERB_APP_PONG_TIMEOUT": "2"},
    )
    yield s
    s.stop()


@pytest.fixture
def short_activity_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """The server advertises activity_timeout 1, so pusher-js pings after 1 s of silence."""
    s = start_server(tmp_path, extra_env={"REVERB_APP_ACTIVITY_TIMEOUT": "1"})
    yield s
    s.stop()


async def test_server_pings_are_answered_by_pusher_js(
    quick_ping_server: ServerProcess, js: JSClients
) -> None:
    client = await js.pusher(quick_ping_server)
    socket_id = await client.connected()
    await client.subscribed("heartbeat")
    # Each ping is answered by pusher-js with pusher:pong; were the pong not accepted, the
    # server would close the socket 2 s after its first ping.
    for _ in range(3):
        await client.wait_for("heartbeat", event="pusher:ping", within=5)
    await asyncio.sleep(2.5)
    assert states(client) == ["connected"]
    assert (await client.call("state"))["socket_id"] == socket_id
    await in_thread(sdk(quick_ping_server).trigger, "heartbeat", "still-here", {})
    await client.wait_for("event", channel="heartbeat", event="still-here")


async def test_pusher_js_pings_are_answered(
    short_activity_server: ServerProcess, js: JSClients
) -> None:
    # pusher-js waits min(its 120 s, the server's activity_timeout) before pinging, then
    # reconnects if no pong arrives within pongTimeout.
    client = await js.pusher(short_activity_server, pongTimeout=1500)
    socket_id = await client.connected()
    for _ in range(3):
        await client.wait_for("heartbeat", event="pusher:pong", within=5)
    assert states(client) == ["connected"]
    assert (await client.call("state"))["socket_id"] == socket_id


# -- public channels -----------------------------------------------------------------------


async def test_public_subscribe_succeeds(server: ServerProcess, js: JSClients) -> None:
    client = await js.pusher(server)
    await client.connected()
    ok = await client.subscribed("my-channel")
    assert ok["channel"] == "my-channel"
    assert client.seen("subscription_error") == []


async def test_event_triggered_with_the_python_sdk_arrives(
    server: ServerProcess, js: JSClients
) -> None:
    client = await js.pusher(server)
    await client.connected()
    await client.subscribed("orders")
    payload = {"id": 42, "status": "shipped", "unicode": "café ✓", "nested": {"list": [1, 2, 3]}}
    assert await in_thread(sdk(server).trigger, "orders", "order-shipped", payload) == {}
    msg = await client.wait_for("event", channel="orders", event="order-shipped")
    assert msg["data"] == payload


async def test_string_data_is_passed_through_unchanged(
    server: ServerProcess, js: JSClients
) -> None:
    client = await js.pusher(server)
    await client.connected()
    await client.subscribed("plain")
    await in_thread(sdk(server).trigger, "plain", "note", "just a string, not JSON")
    msg = await client.wait_for("event", channel="plain", event="note")
    assert msg["data"] == "just a string, not JSON"


async def test_events_on_other_channels_are_not_delivered(
    server: ServerProcess, js: JSClients
) -> None:
    client = await js.pusher(server)
    await client.connected()
    await client.subscribed("mine")
    api = sdk(server)
    await in_thread(api.trigger, "not-mine", "secret", {"n": 1})
    await in_thread(api.trigger, "mine", "sentinel", {"n": 2})
    await client.wait_for("event", channel="mine", event="sentinel")
    assert client.seen("event", event="secret") == []


async def test_unsubscribe_stops_delivery(server: ServerProcess, js: JSClients) -> None:
    client = await js.pusher(server)
    await client.connected()
    await client.subscribed("news")
    await client.subscribed("sentinel")
    await client.call("unsubscribe", channel="news")
    # The unsubscribe and the next subscribe travel in order on the same socket.
    await client.subscribed("after-unsubscribe")
    api = sdk(server)
    await in_thread(api.trigger, "news", "headline", {"n": 1})
    await in_thread(api.trigger, "sentinel", "done", {})
    await client.wait_for("event", channel="sentinel", event="done")
    assert client.seen("event", channel="news") == []
    assert await in_thread(api.channel_info, "news") == {"occupied": False}


# -- private channels ----------------------------------------------------------------------


async def test_private_channel_with_valid_auth(
    server: ServerProcess, js: JSClients, auth_endpoint: AuthEndpoint
) -> None:
    client = await js.pusher(server, auth=auth_endpoint)
    socket_id = await client.connected()
    await client.subscribed("private-account-7")
    assert auth_endpoint.requests == [{"socket_id": socket_id, "channel_name": "private-account-7"}]
    await in_thread(sdk(server).trigger, "private-account-7", "balance", {"cents": 1234})
    msg = await client.wait_for("event", channel="private-account-7", event="balance")
    assert msg["data"] == {"cents": 1234}


async def test_private_channel_with_bad_signature_gets_subscription_error(
    server: ServerProcess, js: JSClients, auth_endpoint: AuthEndpoint
) -> None:
    auth_endpoint.bad_channels.add("private-forbidden")
    client = await js.pusher(server, auth=auth_endpoint)
    await client.connected()
    await client.subscribe("private-forbidden")
    err = await client.wait_for("subscription_error", channel="private-forbidden")
    assert err["data"]["type"] == "AuthError"
    assert err["data"]["status"] == 401
    assert isinstance(err["data"]["error"], str) and err["data"]["error"]
    assert client.seen("subscription_succeeded", channel="private-forbidden") == []
    # Non-fatal: the same connection keeps working, with the same socket id.
    await client.subscribed("private-allowed")
    state = await client.call("state")
    assert state["state"] == "connected"
    assert states(client) == ["connected"]
    # And the refused channel does not receive events.
    api = sdk(server)
    await in_thread(api.trigger, "private-forbidden", "leak", {})
    await in_thread(api.trigger, "private-allowed", "sentinel", {})
    await client.wait_for("event", channel="private-allowed", event="sentinel")
    assert client.seen("event", event="leak") == []


# -- presence channels ---------------------------------------------------------------------


async def test_presence_members_and_member_events(
    server: ServerProcess, js: JSClients, auth_endpoint: AuthEndpoint
) -> None:
    alice = await js.pusher(server, "alice", auth=auth_endpoint, params=user("1", "Alice"))
    bob = await js.pusher(server, "bob", auth=auth_endpoint, params=user("2", "Bob"))
    await alice.connected()
    await bob.connected()

    ok = await alice.subscribed("presence-room")
    assert ok["members"] == {
        "count": 1,
        "me": {"id": "1", "info": {"name": "Alice"}},
        "members": {"1": {"name": "Alice"}},
    }

    ok = await bob.subscribed("presence-room")
    assert ok["members"] == {
        "count": 2,
        "me": {"id": "2", "info": {"name": "Bob"}},
        "members": {"1": {"name": "Alice"}, "2": {"name": "Bob"}},
    }
    added = await alice.wait_for("member_added", channel="presence-room")
    assert added["member"] == {"id": "2", "info": {"name": "Bob"}}
    # The newcomer is not told about itself.
    assert bob.seen("member_added") == []

    users = await in_thread(sdk(server).users_info, "presence-room")
    assert sorted(users["users"], key=lambda u: u["id"]) == [{"id": "1"}, {"id": "2"}]

    await bob.call("unsubscribe", channel="presence-room")
    removed = await alice.wait_for("member_removed", channel="presence-room")
    assert removed["member"] == {"id": "2", "info": {"name": "Bob"}}
    members = await alice.call("members", channel="presence-room")
    assert members["count"] == 1
    assert members["members"] == {"1": {"name": "Alice"}}


async def test_presence_member_removed_on_abrupt_disconnect(
    server: ServerProcess, js: JSClients, auth_endpoint: AuthEndpoint
) -> None:
    alice, bob = await alice_and_bob(server, js, auth_endpoint, "presence-room")
    await alice.wait_for("member_added", channel="presence-room")

    await bob.kill()  # SIGKILL: no unsubscribe, no close frame
    removed = await alice.wait_for("member_removed", channel="presence-room")
    assert removed["member"] == {"id": "2", "info": {"name": "Bob"}}
    users = await in_thread(sdk(server).users_info, "presence-room")
    assert users == {"users": [{"id": "1"}]}


async def test_presence_same_user_on_two_sockets_counts_once(
    server: ServerProcess, js: JSClients, auth_endpoint: AuthEndpoint
) -> None:
    observer = await js.pusher(
        server, "observer", auth=auth_endpoint, params=user("obs", "Observer")
    )
    tab1 = await js.pusher(server, "alice-tab-1", auth=auth_endpoint, params=user("1", "Alice"))
    tab2 = await js.pusher(server, "alice-tab-2", auth=auth_endpoint, params=user("1", "Alice"))
    carol = await js.pusher(server, "carol", auth=auth_endpoint, params=user("3", "Carol"))
    for c in (observer, tab1, tab2, carol):
        await c.connected()
    await observer.subscribed("presence-room")
    # tab1 also joins a private channel the observer listens on, used below as an ordered sentinel.
    await observer.subscribed("private-sentinel")
    await tab1.subscribed("private-sentinel")

    await tab1.subscribed("presence-room")
    await observer.wait_for(
        "member_added", channel="presence-room", where=lambda m: m["member"]["id"] == "1"
    )
    ok = await tab2.subscribed("presence-room")
    # The second socket sees Alice once, and the member list is unique by user id.
    assert ok["members"]["count"] == 2
    assert ok["members"]["members"] == {"obs": {"name": "Observer"}, "1": {"name": "Alice"}}
    # Carol joining afterwards is the sentinel proving no second member_added for Alice was sent.
    await carol.subscribed("presence-room")
    await observer.wait_for(
        "member_added", channel="presence-room", where=lambda m: m["member"]["id"] == "3"
    )
    assert [m["member"]["id"] for m in observer.seen("member_added")] == ["1", "3"]
    info = await in_thread(sdk(server).channel_info, "presence-room", ["user_count"])
    assert info["user_count"] == 3

    # Alice closes one tab: she is still present, so no member_removed. tab1's client event
    # travels on the same socket after its unsubscribe, so it arrives after any (wrong) removal.
    await tab1.call("unsubscribe", channel="presence-room")
    assert (
        await tab1.call("trigger", channel="private-sentinel", event="client-after-leave", data={})
        is True
    )
    await observer.wait_for("event", channel="private-sentinel", event="client-after-leave")
    assert observer.seen("member_removed") == []
    members = await observer.call("members", channel="presence-room")
    assert members["count"] == 3

    # Her last socket goes away abruptly: now she leaves, exactly once.
    await tab2.kill()
    removed = await observer.wait_for("member_removed", channel="presence-room")
    assert removed["member"] == {"id": "1", "info": {"name": "Alice"}}
    await carol.call("unsubscribe", channel="presence-room")
    await observer.wait_for(
        "member_removed", channel="presence-room", where=lambda m: m["member"]["id"] == "3"
    )
    assert [m["member"]["id"] for m in observer.seen("member_removed")] == ["1", "3"]


# -- client events -------------------------------------------------------------------------


async def test_client_event_on_private_channel_reaches_others_not_sender(
    server: ServerProcess, js: JSClients, auth_endpoint: AuthEndpoint
) -> None:
    a = await js.pusher(server, "a", auth=auth_endpoint)
    b = await js.pusher(server, "b", auth=auth_endpoint)
    await a.connected()
    await b.connected()
    await a.subscribed("private-chat")
    await a.call("bind", channel="private-chat", event="client-typing")
    await b.subscribed("private-chat")
    await b.call("bind", channel="private-chat", event="client-typing")

    assert (
        await a.call(
            "trigger", channel="private-chat", event="client-typing", data={"who": "a", "on": True}
        )
        is True
    )
    got = await b.wait_for("bound", channel="private-chat", event="client-typing")
    assert got["data"] == {"who": "a", "on": True}
    assert "user_id" not in got["metadata"]  # user_id is only added on presence channels

    # Sentinel: an API event published after b got the client event; had the sender been
    # echoed, that copy would have reached a before this one.
    await in_thread(sdk(server).trigger, "private-chat", "sentinel", {})
    await a.wait_for("event", channel="private-chat", event="sentinel")
    await no_events_named(a, "private-chat", "client-typing")


async def test_client_event_on_presence_channel_carries_user_id(
    server: ServerProcess, js: JSClients, auth_endpoint: AuthEndpoint
) -> None:
    alice, bob = await alice_and_bob(server, js, auth_endpoint, "presence-chat")
    await bob.call("bind", channel="presence-chat", event="client-msg")
    await alice.call("bind", channel="presence-chat", event="client-msg")

    assert (
        await alice.call(
            "trigger", channel="presence-chat", event="client-msg", data={"text": "hi"}
        )
        is True
    )
    got = await bob.wait_for("bound", channel="presence-chat", event="client-msg")
    assert got["data"] == {"text": "hi"}
    # pusher-js hands the envelope's user_id to callbacks as metadata.user_id.
    assert got["metadata"] == {"user_id": "1"}

    assert (
        await bob.call("trigger", channel="presence-chat", event="client-msg", data={"text": "yo"})
        is True
    )
    got = await alice.wait_for("bound", channel="presence-chat", event="client-msg")
    assert got["data"] == {"text": "yo"}
    assert got["metadata"] == {"user_id": "2"}
    # Neither sender got its own event back (each side's receipt is the other's sentinel,
    # and the API sentinel covers bob's event).
    await in_thread(sdk(server).trigger, "presence-chat", "sentinel", {})
    await alice.wait_for("event", channel="presence-chat", event="sentinel")
    await bob.wait_for("event", channel="presence-chat", event="sentinel")
    assert [m["data"] for m in alice.seen("bound", event="client-msg")] == [{"text": "yo"}]
    assert [m["data"] for m in bob.seen("bound", event="client-msg")] == [{"text": "hi"}]


async def test_client_event_on_public_channel_is_not_delivered(
    server: ServerProcess, js: JSClients
) -> None:
    a = await js.pusher(server, "a")
    b = await js.pusher(server, "b")
    await a.connected()
    await b.connected()
    await a.subscribed("lobby")
    await b.subscribed("lobby")
    await a.call("trigger", channel="lobby", event="client-shout", data={"x": 1})
    await in_thread(sdk(server).trigger, "lobby", "sentinel", {})
    await b.wait_for("event", channel="lobby", event="sentinel")
    assert b.seen("event", event="client-shout") == []
    # Refusing it is not fatal for the sender.
    assert (await a.call("state"))["state"] == "connected"


# -- server path prefix --------------------------------------------------------------------


@pytest.fixture
def prefixed_server(tmp_path: Path) -> Iterator[ServerProcess]:
    s = start_server(tmp_path, path="/ws")
    yield s
    s.stop()


async def test_server_path_prefix_with_wspath(
    prefixed_server: ServerProcess, js: JSClients
) -> None:
    client = await js.pusher(prefixed_server)  # sets wsPath: "/ws"
    socket_id = await client.connected()
    assert re.match(SOCKET_ID_RE, socket_id)
    await client.subscribed("prefixed")
    # The SDK signs /apps/{id}/events without the prefix; the server strips it before verifying.
    status, body = await signed_request(
        prefixed_server,
        "POST",
        f"/apps/{prefixed_server.app_id}/events",
        {"name": "hello", "channels": ["prefixed"], "data": json.dumps({"via": "prefix"})},
    )
    assert (status, body) == (200, {})
    msg = await client.wait_for("event", channel="prefixed", event="hello")
    assert msg["data"] == {"via": "prefix"}
