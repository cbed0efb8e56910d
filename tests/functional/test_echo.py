"""Laravel Echo 2 with `broadcaster: 'reverb'` (real npm packages, under Node) against reverbpy.

The Echo options are the ones a Laravel app uses; events are broadcast with the official
`pusher` Python SDK the way Laravel's broadcaster does, including `socket_id` for `toOthers()`.
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import ServerProcess
from tests.functional.jsclient import (
    SOCKET_ID_RE,
    AuthEndpoint,
    JSClients,
    echo_ready,
    in_thread,
    laravel_user,
    sdk,
    user,
)

pytestmark = pytest.mark.node





async def test_echo_connects_and_exposes_socket_id(server: ServerProcess, js: JSClients) -> None:
    client = await js.echo(server)
    socket_id = await client.connected()
    assert await client.call("socket_id") == socket_id
    assert re.match(SOCKET_ID_RE, socket_id)


async def test_echo_channel_listen_with_leading_dot(server: ServerProcess, js: JSClients) -> None:
    client = await js.echo(server)
    await echo_ready(client)
    assert (
        await client.call("echo_channel", channel="orders", listen=[".order.shipped"]) == "orders"
    )
    await client.wait_for("echo_subscribed", channel="orders")
    await in_thread(sdk(server).trigger, "orders", "order.shipped", {"order": {"id": 7}})
    msg = await client.wait_for("echo_event", channel="orders", listener=".order.shipped")
    assert msg["data"] == {"order": {"id": 7}}


async def test_echo_listen_uses_the_laravel_event_namespace(
    server: ServerProcess, js: JSClients
) -> None:
    # Laravel broadcasts `App\Events\OrderShipped`; Echo's listen('OrderShipped') adds the namespace.
    client = await js.echo(server)
    await echo_ready(client)
    await client.call("echo_channel", channel="orders", listen=["OrderShipped"])
    await client.wait_for("echo_subscribed", channel="orders")
    await in_thread(sdk(server).trigger, ["orders"], "App\\Events\\OrderShipped", {"id": 1})
    msg = await client.wait_for("echo_event", channel="orders", listener="OrderShipped")
    assert msg["data"] == {"id": 1}


async def test_echo_private_listen(
    server: ServerProcess, js: JSClients, auth_endpoint: AuthEndpoint
) -> None:
    client = await js.echo(server, auth=auth_endpoint)
    socket_id = await echo_ready(client)
    assert (
        await client.call("echo_channel", kind="private", channel="user.5", listen=[".balance"])
        == "private-user.5"
    )
    await client.wait_for("echo_subscribed", channel="private-user.5")
    assert auth_endpoint.requests == [{"socket_id": socket_id, "channel_name": "private-user.5"}]
    await in_thread(sdk(server).trigger, "private-user.5", "balance", {"cents": 99})
    msg = await client.wait_for("echo_event", channel="private-user.5", listener=".balance")
    assert msg["data"] == {"cents": 99}
    assert client.seen("echo_error") == []


async def test_echo_private_error_callback_gets_the_subscription_error(
    server: ServerProcess, js: JSClients, auth_endpoint: AuthEndpoint
) -> None:
    auth_endpoint.bad_channels.add("private-admin")
    client = await js.echo(server, auth=auth_endpoint)
    await echo_ready(client)
    await client.call("echo_channel", kind="private", channel="admin", listen=[".secret"])
    err = await client.wait_for("echo_error", channel="private-admin")
    assert err["error"]["type"] == "AuthError"
    assert err["error"]["status"] == 401
    assert isinstance(err["error"]["error"], str) and err["error"]["error"]
    assert client.seen("echo_subscribed", channel="private-admin") == []
    # The socket stays up: another private channel on it works.
    await client.call("echo_channel", kind="private", channel="ok", listen=[".fine"])
    await client.wait_for("echo_subscribed", channel="private-ok")
    assert (await client.call("state"))["state"] == "connected"
    api = sdk(server)
    await in_thread(api.trigger, "private-admin", "secret", {})
    await in_thread(api.trigger, "private-ok", "fine", {"n": 1})
    await client.wait_for("echo_event", channel="private-ok", listener=".fine")
    assert client.seen("echo_event", channel="private-admin") == []


async def test_echo_join_here_joining_leaving(
    server: ServerProcess, js: JSClients, auth_endpoint: AuthEndpoint
) -> None:
    alice = await js.echo(server, "alice", auth=auth_endpoint, params=laravel_user(1, "Alice"))
    bob = await js.echo(server, "bob", auth=auth_endpoint, params=laravel_user(2, "Bob"))
    await echo_ready(alice)
    await echo_ready(bob)

    assert await alice.call("echo_channel", kind="presence", channel="chat.1") == "presence-chat.1"
    here = await alice.wait_for("echo_here", channel="presence-chat.1")
    assert here["users"] == [{"id": 1, "name": "Alice"}]

    await bob.call("echo_channel", kind="presence", channel="chat.1")
    here = await bob.wait_for("echo_here", channel="presence-chat.1")
    assert sorted(here["users"], key=lambda u: u["id"]) == [
        {"id": 1, "name": "Alice"},
        {"id": 2, "name": "Bob"},
    ]
    joining = await alice.wait_for("echo_joining", channel="presence-chat.1")
    assert joining["user"] == {"id": 2, "name": "Bob"}
    assert bob.seen("echo_joining") == []

    # Echo.leave() unsubscribes: Alice sees Bob leave.
    await bob.call("leave", channel="chat.1")
    leaving = await alice.wait_for("echo_leaving", channel="presence-chat.1")
    assert leaving["user"] == {"id": 2, "name": "Bob"}

    # A second Bob tab that dies without a goodbye leaves too.
    bob2 = await js.echo(server, "bob-2", auth=auth_endpoint, params=laravel_user(2, "Bob"))
    await echo_ready(bob2)
    await bob2.call("echo_channel", kind="presence", channel="chat.1")
    await bob2.wait_for("echo_here", channel="presence-chat.1")
    joining = await alice.wait_for("echo_joining", channel="presence-chat.1")
    assert joining["user"] == {"id": 2, "name": "Bob"}
    await bob2.kill()
    leaving = await alice.wait_for("echo_leaving", channel="presence-chat.1")
    assert leaving["user"] == {"id": 2, "name": "Bob"}
    users = await in_thread(sdk(server).users_info, "presence-chat.1")
    # Pusher's users endpoint lists ids as strings.
    assert users == {"users": [{"id": "1"}]}


async def test_echo_whisper_on_private_channel(
    server: ServerProcess, js: JSClients, auth_endpoint: AuthEndpoint
) -> None:
    a = await js.echo(server, "a", auth=auth_endpoint)
    b = await js.echo(server, "b", auth=auth_endpoint)
    await echo_ready(a)
    await echo_ready(b)
    for c in (a, b):
        await c.call(
            "echo_channel", kind="private", channel="doc.3", listen=[".saved"], whispers=["typing"]
        )
        await c.wait_for("echo_subscribed", channel="private-doc.3")

    await a.call(
        "whisper",
        kind="private",
        channel="doc.3",
        event="typing",
        data={"name": "A", "typing": True},
    )
    got = await b.wait_for("echo_whisper", channel="private-doc.3", whisper="typing")
    assert got["data"] == {"name": "A", "typing": True}

    # Whispers are not echoed to the sender: an API event sent after b received the whisper
    # reaches a, and no whisper reached a before it.
    await in_thread(sdk(server).trigger, "private-doc.3", "saved", {})
    await a.wait_for("echo_event", channel="private-doc.3", listener=".saved")
    assert a.seen("echo_whisper") == []


async def test_echo_whisper_on_presence_channel_carries_user_id(
    server: ServerProcess, js: JSClients, auth_endpoint: AuthEndpoint
) -> None:
    alice = await js.echo(server, "alice", auth=auth_endpoint, params=user("u-alice", "Alice"))
    bob = await js.echo(server, "bob", auth=auth_endpoint, params=user("u-bob", "Bob"))
    await echo_ready(alice)
    await echo_ready(bob)
    for c in (alice, bob):
        await c.call("echo_channel", kind="presence", channel="room", whispers=["typing"])
        await c.wait_for("echo_here", channel="presence-room")

    await bob.call(
        "whisper", kind="presence", channel="room", event="typing", data={"typing": True}
    )
    got = await alice.wait_for("echo_whisper", channel="presence-room", whisper="typing")
    assert got["data"] == {"typing": True}
    assert got["metadata"] == {"user_id": "u-bob"}


async def test_echo_to_others_excludes_the_sender_socket(
    server: ServerProcess, js: JSClients
) -> None:
    sender = await js.echo(server, "sender")
    other = await js.echo(server, "other")
    sender_socket = await echo_ready(sender)
    other_socket = await echo_ready(other)
    assert sender_socket != other_socket
    for c in (sender, other):
        await c.call("echo_channel", channel="feed", listen=[".post.created"])
        await c.wait_for("echo_subscribed", channel="feed")

    api = sdk(server)
    # What Laravel's broadcast(...)->toOthers() does: the X-Socket-ID from Echo becomes socket_id.
    await in_thread(api.trigger, "feed", "post.created", {"n": 1}, socket_id=sender_socket)
    got = await other.wait_for("echo_event", channel="feed", listener=".post.created")
    assert got["data"] == {"n": 1}

    # Sentinel to everyone, published after the excluded one was delivered.
    await in_thread(api.trigger, "feed", "post.created", {"n": 2})
    got = await sender.wait_for("echo_event", channel="feed", listener=".post.created")
    assert got["data"] == {"n": 2}
    await other.wait_for(
        "echo_event",
        channel="feed",
        listener=".post.created",
        where=lambda m: m["data"] == {"n": 2},
    )
    assert [m["data"] for m in sender.seen("echo_event")] == [{"n": 2}]
    assert [m["data"] for m in other.seen("echo_event")] == [{"n": 1}, {"n": 2}]
