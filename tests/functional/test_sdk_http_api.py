"""The HTTP API driven by the official `pusher` Python SDK (pusher-http-python), unmodified.

Subscribers are plain WebSocket connections whose private/presence subscriptions carry the
signature made by the SDK's own `authenticate()`, so the SDK's signing is checked both ways.
Calls the SDK has no method for (`info` on trigger, `/connections`) are signed by the SDK's
`pusher.http.Request` (see jsclient.signed_request).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pusher
import pusher.errors
import pusher.http
import pytest

from tests.conftest import ServerProcess
from tests.functional.jsclient import in_thread, sdk, signed_request


class Socket:
    """A bare protocol-7 WebSocket connection, enough to be a subscriber."""

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, socket_id: str, server: ServerProcess
    ) -> None:
        self.ws = ws
        self.socket_id = socket_id
        self.server = server

    async def recv(self, within: float = 5.0) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=within)
        assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data)
        decoded: dict[str, Any] = json.loads(msg.data)
        return decoded

    async def next_event(self, within: float = 5.0) -> dict[str, Any]:
        """The next non-protocol message (skips pusher:* / pusher_internal:* traffic)."""
        async with asyncio.timeout(within):
            while True:
                msg = await self.recv(within)
                if not msg["event"].startswith(("pusher:", "pusher_internal:")):
                    return msg

    async def subscribe(
        self, channel: str, *, user: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        data: dict[str, Any] = {"channel": channel, "auth": ""}
        if channel.startswith(("private-", "presence-")):
            data.update(sdk(self.server).authenticate(channel, self.socket_id, user))
        await self.ws.send_json({"event": "pusher:subscribe", "data": data})
        reply = await self.recv()
        assert reply["event"] == "pusher_internal:subscription_succeeded", reply
        assert reply["channel"] == channel
        return reply


class Sockets:
    def __init__(self, server: ServerProcess, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.session = session
        self.opened: list[Socket] = []  # kept referenced: they stay connected until teardown

    async def open(self, *channels: str, user: dict[str, Any] | None = None) -> Socket:
        ws = await self.session.ws_connect(self.server.ws_url)
        hello = json.loads((await ws.receive(timeout=5)).data)
        assert hello["event"] == "pusher:connection_established"
        sock = Socket(ws, json.loads(hello["data"])["socket_id"], self.server)
        self.opened.append(sock)
        for channel in channels:
            await sock.subscribe(channel, user=user)
        return sock


@pytest.fixture
async def sockets(server: ServerProcess) -> AsyncIterator[Sockets]:
    async with aiohttp.ClientSession() as session:
        sockets = Sockets(server, session)
        yield sockets
        for sock in sockets.opened:
            await sock.ws.close()


@pytest.fixture
def api(server: ServerProcess) -> pusher.Pusher:
    return sdk(server)


def alice() -> dict[str, Any]:
    return {"user_id": "1", "user_info": {"name": "Alice"}}


def bob() -> dict[str, Any]:
    return {"user_id": "2", "user_info": {"name": "Bob"}}


# -- health and connections ----------------------------------------------------------------


async def test_up(server: ServerProcess) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{server.http_url}/up") as resp:
        assert resp.status == 200
        assert await resp.json() == {"health": "OK"}


async def test_connections_count(server: ServerProcess, sockets: Sockets) -> None:
    path = f"/apps/{server.app_id}/connections"
    assert await signed_request(server, "GET", path) == (200, {"connections": 0})
    a = await sockets.open("room-a")
    await sockets.open("room-b")
    assert await signed_request(server, "GET", path) == (200, {"connections": 2})
    await a.ws.close()
    for _ in range(50):  # the server notices the close asynchronously
        status, body = await signed_request(server, "GET", path)
        if body == {"connections": 1}:
            break
        await asyncio.sleep(0.05)
    assert (status, body) == (200, {"connections": 1})


async def test_connections_needs_a_signature(server: ServerProcess) -> None:
    assert (
        await signed_request(server, "GET", f"/apps/{server.app_id}/connections", secret="wrong")
    )[0] == 401


# -- trigger -------------------------------------------------------------------------------


async def test_trigger_single_channel(api: pusher.Pusher, sockets: Sockets) -> None:
    sock = await sockets.open("orders")
    assert await in_thread(api.trigger, "orders", "order-shipped", {"id": 7, "note": "café"}) == {}
    msg = await sock.next_event()
    assert msg == {
        "event": "order-shipped",
        "channel": "orders",
        # The SDK's JSON string, passed through byte for byte.
        "data": json.dumps({"id": 7, "note": "café"}, ensure_ascii=False),
    }


async def test_trigger_multiple_channels(api: pusher.Pusher, sockets: Sockets) -> None:
    a = await sockets.open("chan-a")
    b = await sockets.open("chan-b")
    both = await sockets.open("chan-a", "chan-b")
    assert await in_thread(api.trigger, ["chan-a", "chan-b"], "multi", {"n": 1}) == {}
    got_a, got_b = await a.next_event(), await b.next_event()
    assert (got_a["channel"], got_a["event"], got_a["data"]) == ("chan-a", "multi", '{"n": 1}')
    assert (got_b["channel"], got_b["event"], got_b["data"]) == ("chan-b", "multi", '{"n": 1}')
    # A socket on both channels gets one copy per channel.
    got = [await both.next_event(), await both.next_event()]
    assert sorted(m["channel"] for m in got) == ["chan-a", "chan-b"]


async def test_trigger_with_socket_id_excludes_that_socket(
    api: pusher.Pusher, sockets: Sockets
) -> None:
    sender = await sockets.open("feed")
    other = await sockets.open("feed")
    await in_thread(api.trigger, "feed", "excluded", {"n": 1}, socket_id=sender.socket_id)
    assert (await other.next_event())["event"] == "excluded"
    await in_thread(api.trigger, "feed", "sentinel", {"n": 2})
    # The sender's first event is the sentinel: the excluded one never reached it.
    assert (await sender.next_event())["event"] == "sentinel"
    assert (await other.next_event())["event"] == "sentinel"


async def test_trigger_to_private_and_presence(api: pusher.Pusher, sockets: Sockets) -> None:
    priv = await sockets.open("private-inbox")
    pres = await sockets.open("presence-lobby", user=alice())
    await in_thread(api.trigger, ["private-inbox", "presence-lobby"], "ping", "plain text")
    assert await priv.next_event() == {
        "event": "ping",
        "channel": "private-inbox",
        "data": "plain text",
    }
    got = await pres.next_event()
    assert (got["event"], got["channel"], got["data"]) == ("ping", "presence-lobby", "plain text")
    assert "user_id" not in got  # only client events on presence channels carry a user_id


async def test_trigger_batch(api: pusher.Pusher, sockets: Sockets) -> None:
    a = await sockets.open("batch-a")
    b = await sockets.open("batch-b")
    result = await in_thread(
        api.trigger_batch,
        [
            {"channel": "batch-a", "name": "first", "data": {"i": 1}},
            {"channel": "batch-b", "name": "second", "data": {"i": 2}},
            {"channel": "batch-a", "name": "third", "data": "raw"},
        ],
    )
    assert result == {}
    assert [(m["event"], m["data"]) for m in [await a.next_event(), await a.next_event()]] == [
        ("first", '{"i": 1}'),
        ("third", "raw"),
    ]
    got = await b.next_event()
    assert (got["channel"], got["event"], got["data"]) == ("batch-b", "second", '{"i": 2}')


async def test_trigger_with_info_counts(server: ServerProcess, sockets: Sockets) -> None:
    await sockets.open("presence-room", user=alice())
    await sockets.open("presence-room", user=alice())  # same user, second socket
    await sockets.open("presence-room", user=bob())
    await sockets.open("news")
    status, body = await signed_request(
        server,
        "POST",
        f"/apps/{server.app_id}/events",
        {
            "name": "counted",
            "channels": ["presence-room", "news"],
            "data": "{}",
            "info": "subscription_count,user_count",
        },
    )
    assert status == 200
    # Pusher: per channel, user_count for presence and subscription_count for every type.
    assert body == {
        "channels": {
            "presence-room": {"user_count": 2, "subscription_count": 3},
            "news": {"subscription_count": 1},
        }
    }


async def test_trigger_batch_with_info(server: ServerProcess, sockets: Sockets) -> None:
    await sockets.open("presence-room", user=alice())
    await sockets.open("news")
    await sockets.open("news")
    status, body = await signed_request(
        server,
        "POST",
        f"/apps/{server.app_id}/batch_events",
        {
            "batch": [
                {"channel": "news", "name": "a", "data": "{}", "info": "subscription_count"},
                {"channel": "presence-room", "name": "b", "data": "{}", "info": "user_count"},
                {"channel": "news", "name": "c", "data": "{}"},
            ]
        },
    )
    assert status == 200
    assert body == {"batch": [{"subscription_count": 2}, {"user_count": 1}, {}]}


async def test_trigger_data_over_10kb_is_413(api: pusher.Pusher, sockets: Sockets) -> None:
    sock = await sockets.open("big")
    assert await in_thread(api.trigger, "big", "fits", "x" * 10_240) == {}
    assert (await sock.next_event())["data"] == "x" * 10_240
    # The SDK itself lets up to ~30 KB through; the server enforces Pusher's 10 KB.
    with pytest.raises(pusher.errors.PusherBadStatus) as exc:
        await in_thread(api.trigger, "big", "too-big", "x" * 10_241)
    status, _, body = exc.value.args[0].partition(": ")
    assert status == "413"
    assert "error" in json.loads(body)
    await in_thread(api.trigger, "big", "sentinel", {})
    assert (await sock.next_event())["event"] == "sentinel"


async def test_trigger_batch_over_10_events_is_400(api: pusher.Pusher, sockets: Sockets) -> None:
    sock = await sockets.open("batched")
    events = [{"channel": "batched", "name": f"e{i}", "data": "{}"} for i in range(11)]
    with pytest.raises(pusher.errors.PusherBadRequest) as exc:
        await in_thread(api.trigger_batch, events)
    assert "error" in json.loads(exc.value.args[0])
    # Nothing from the refused batch was delivered; ten is fine.
    assert await in_thread(api.trigger_batch, events[:10]) == {}
    assert [(await sock.next_event())["event"] for _ in range(10)] == [f"e{i}" for i in range(10)]


# -- channel queries -----------------------------------------------------------------------


async def test_channels_info(api: pusher.Pusher, sockets: Sockets) -> None:
    assert await in_thread(api.channels_info) == {"channels": {}}
    await sockets.open("chan-1", "chan-2", "private-x")
    await sockets.open("chan-1")
    await sockets.open("presence-room", user=alice())
    await sockets.open("presence-room", user=bob())
    assert await in_thread(api.channels_info) == {
        "channels": {"chan-1": {}, "chan-2": {}, "private-x": {}, "presence-room": {}}
    }
    assert await in_thread(api.channels_info, "chan-") == {"channels": {"chan-1": {}, "chan-2": {}}}
    assert await in_thread(api.channels_info, "nothing-") == {"channels": {}}
    assert await in_thread(api.channels_info, "presence-", ["user_count"]) == {
        "channels": {"presence-room": {"user_count": 2}}
    }


async def test_channels_info_user_count_needs_presence_prefix(api: pusher.Pusher) -> None:
    with pytest.raises(pusher.errors.PusherBadRequest) as exc:
        await in_thread(api.channels_info, None, ["user_count"])
    assert "error" in json.loads(exc.value.args[0])


async def test_channel_info(api: pusher.Pusher, sockets: Sockets) -> None:
    assert await in_thread(api.channel_info, "quiet") == {"occupied": False}
    await sockets.open("busy")
    await sockets.open("busy")
    assert await in_thread(api.channel_info, "busy") == {"occupied": True}
    assert await in_thread(api.channel_info, "busy", ["subscription_count"]) == {
        "occupied": True,
        "subscription_count": 2,
    }


async def test_channel_info_presence_user_count(api: pusher.Pusher, sockets: Sockets) -> None:
    await sockets.open("presence-team", user=alice())
    await sockets.open("presence-team", user=alice())
    await sockets.open("presence-team", user=bob())
    assert await in_thread(api.channel_info, "presence-team", ["user_count"]) == {
        "occupied": True,
        "user_count": 2,
    }
    assert await in_thread(
        api.channel_info, "presence-team", ["user_count", "subscription_count"]
    ) == {"occupied": True, "user_count": 2, "subscription_count": 3}


async def test_users_info(api: pusher.Pusher, sockets: Sockets) -> None:
    await sockets.open("presence-team", user=alice())
    await sockets.open("presence-team", user=alice())
    await sockets.open("presence-team", user={"user_id": 42, "user_info": {"name": "Int"}})
    users = await in_thread(api.users_info, "presence-team")
    assert sorted(users["users"], key=lambda u: str(u["id"])) == [{"id": "1"}, {"id": "42"}]


async def test_users_info_on_non_presence_channel_is_400(
    api: pusher.Pusher, sockets: Sockets
) -> None:
    await sockets.open("public-chan")
    with pytest.raises(pusher.errors.PusherBadRequest) as exc:
        await in_thread(api.users_info, "public-chan")
    assert "error" in json.loads(exc.value.args[0])


# -- signing -------------------------------------------------------------------------------


async def test_wrong_secret_is_401(server: ServerProcess, sockets: Sockets) -> None:
    sock = await sockets.open("guarded")
    bad = sdk(server, secret="not-the-secret")
    with pytest.raises(pusher.errors.PusherBadAuth) as exc:
        await in_thread(bad.trigger, "guarded", "forged", {})
    assert "error" in json.loads(exc.value.args[0])
    with pytest.raises(pusher.errors.PusherBadAuth):
        await in_thread(bad.channels_info)
    with pytest.raises(pusher.errors.PusherBadAuth):
        await in_thread(bad.channel_info, "guarded")
    # Nothing was delivered: the next event on the socket is the genuine sentinel.
    await in_thread(sdk(server).trigger, "guarded", "sentinel", {})
    assert (await sock.next_event())["event"] == "sentinel"


async def test_wrong_key_is_401(server: ServerProcess) -> None:
    other = pusher.Pusher(
        app_id=server.app_id,
        key="some-other-key",
        secret=server.secret,
        host="127.0.0.1",
        port=server.port,
        ssl=False,
    )
    with pytest.raises(pusher.errors.PusherBadAuth):
        await in_thread(other.channels_info)


async def test_expired_timestamp_is_401(
    server: ServerProcess, api: pusher.Pusher, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK stamps requests with time.time(); make it sign 11 minutes in the past.
    real_time = time.time
    monkeypatch.setattr(pusher.http.time, "time", lambda: real_time() - 660)
    with pytest.raises(pusher.errors.PusherBadAuth):
        await in_thread(api.trigger, "any", "late", {})
    monkeypatch.undo()
    assert await in_thread(api.trigger, "any", "on-time", {}) == {}


async def test_unknown_app_id_is_an_error(server: ServerProcess) -> None:
    other = pusher.Pusher(
        app_id="999999",
        key=server.key,
        secret=server.secret,
        host="127.0.0.1",
        port=server.port,
        ssl=False,
    )
    with pytest.raises(pusher.errors.PusherError) as exc:
        await in_thread(other.trigger, "c", "e", {})
    assert "404" in str(exc.value)


# -- authenticate() ------------------------------------------------------------------------


async def test_sdk_authenticate_signatures_are_accepted(
    server: ServerProcess, api: pusher.Pusher, sockets: Sockets
) -> None:
    sock = await sockets.open()
    auth = api.authenticate("private-orders", sock.socket_id)
    assert set(auth) == {"auth"}
    assert auth["auth"].startswith(f"{server.key}:")
    await sock.subscribe("private-orders")

    reply = await sock.subscribe("presence-room", user=alice())
    presence = json.loads(reply["data"])["presence"]
    assert presence == {"ids": ["1"], "hash": {"1": {"name": "Alice"}}, "count": 1}


async def test_signature_from_another_secret_is_refused(
    server: ServerProcess, sockets: Sockets
) -> None:
    sock = await sockets.open()
    forged = sdk(server, secret="not-the-secret").authenticate("private-vault", sock.socket_id)
    await sock.ws.send_json(
        {"event": "pusher:subscribe", "data": {"channel": "private-vault", **forged}}
    )
    reply = await sock.recv()
    assert reply["event"] == "pusher:subscription_error"
    assert reply["channel"] == "private-vault"
    data = json.loads(reply["data"]) if isinstance(reply["data"], str) else reply["data"]
    assert data["type"] == "AuthError"
    assert data["status"] == 401
    assert isinstance(data["error"], str) and data["error"]
    # The socket is still usable.
    await sock.subscribe("private-vault")
