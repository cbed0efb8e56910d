"""Sign-in, server-to-user, watchlist, encrypted, cache and signed-in presence channels, with real peers.

The client is pusher-js 8 under Node (tests/js/features.mjs); the app backend is the official
`pusher` Python SDK: it signs users in (`authenticate_user`, behind pusher-js's
`userAuthentication.customHandler`), authorizes channels (`authenticate`, with the encryption
master key, so encrypted channels get their `shared_secret`), and publishes (`trigger`,
`send_to_user`, `terminate_user_connections`). tests/functional/test_pusher_features.py covers the
same features with raw frames; these tests prove the real libraries agree with the server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import nacl.secret
import pusher
import pytest
from aiohttp import web

from tests.conftest import ServerProcess
from tests.functional.jsclient import (
    JS_DIR,
    SOCKET_ID_RE,
    JSClient,
    in_thread,
    node_command,
    signed_request,
)
from tests.functional.raw import connect

pytestmark = pytest.mark.node

FEATURES_SCRIPT = JS_DIR / "features.mjs"
MASTER_KEY = bytes(range(32))  # any 32 bytes; the server never sees it
MASTER_KEY_B64 = base64.b64encode(MASTER_KEY).decode()
B64 = r"[A-Za-z0-9+/]+={0,2}"

# The users the app's backend knows: the client names one (`user` form field), the backend
# decides its user_data, as a real app does from its session.
USERS: dict[str, dict[str, Any]] = {
    "alice": {"id": "alice", "user_info": {"name": "Alice", "plan": "pro"}},
    "A": {"id": "A", "user_info": {"name": "Watcher"}, "watchlist": ["B"]},
    "B": {"id": "B", "user_info": {"name": "Watched"}},
    "carol": {"id": "carol", "user_info": {"name": "Carol"}},
    "dave": {"id": "dave", "user_info": {"name": "Dave"}},
}


def app_sdk(server: ServerProcess) -> pusher.Pusher:
    """The official Python SDK as the app's backend configures it, encryption key included."""
    return pusher.Pusher(
        app_id=server.app_id,
        key=server.key,
        secret=server.secret,
        host="127.0.0.1",
        port=server.port,
        ssl=False,
        timeout=5,
        encryption_master_key_base64=MASTER_KEY_B64,
    )


class Backend:
    """The app's auth endpoints, signing with the official SDK.

    `/broadcasting/user-auth` (form `socket_id`, `user`) answers `authenticate_user(socket_id,
    USERS[user])`; `/broadcasting/auth` (form `socket_id`, `channel_name`) answers
    `authenticate(channel, socket_id)` without channel_data (presence members then come from the
    signed-in user), plus `shared_secret` for encrypted channels.
    """

    def __init__(self, server: ServerProcess) -> None:
        self.sdk = app_sdk(server)
        self.user_requests: list[dict[str, str]] = []
        self.channel_requests: list[dict[str, str]] = []
        self.channel_responses: list[dict[str, Any]] = []
        self.base = ""
        self._runner: web.AppRunner | None = None

    async def _user_auth(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.user_requests.append(form)
        user = USERS.get(form.get("user", ""))
        if user is None:
            return web.json_response({"error": "unknown user"}, status=403)
        return web.json_response(self.sdk.authenticate_user(form["socket_id"], user))

    async def _channel_auth(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.channel_requests.append(form)
        payload = self.sdk.authenticate(form["channel_name"], form["socket_id"])
        # pusher 3.3.4 returns shared_secret as base64 *bytes*, which no JSON encoder takes.
        if isinstance(payload.get("shared_secret"), bytes):
            payload["shared_secret"] = payload["shared_secret"].decode()
        self.channel_responses.append(payload)
        return web.json_response(payload)

    async def __aenter__(self) -> Backend:
        app = web.Application()
        app.router.add_post("/broadcasting/user-auth", self._user_auth)
        app.router.add_post("/broadcasting/auth", self._channel_auth)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class Peer(JSClient):
    """One tests/js/features.mjs process (the JSClient plumbing, another script)."""

    @classmethod
    async def start(cls, name: str, config: dict[str, Any]) -> Peer:
        # node_command() also fails the test with a clear message if node or the npm deps are missing.
        node = node_command()[0]
        proc = await asyncio.create_subprocess_exec(
            node,
            str(FEATURES_SCRIPT),
            json.dumps(config),
            cwd=JS_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(name, proc)

    def frames(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        """pusher:* / pusher_internal:* frames this client received, as pusher-js decoded them."""
        return self.seen("message", event=event, **fields)


class Peers:
    def __init__(self, server: ServerProcess, backend: Backend) -> None:
        self.server, self.backend = server, backend
        self.started: list[Peer] = []

    async def new(self, name: str, *, user: str | None = None) -> Peer:
        """`new Pusher(key, {wsHost, wsPort, forceTLS:false, channelAuthorization, userAuthentication:
        {customHandler}})`; `user` is who the backend signs in when pusher-js asks."""
        config: dict[str, Any] = {
            "key": self.server.key,
            "host": "127.0.0.1",
            "port": self.server.port,
            "authEndpoint": f"{self.backend.base}/broadcasting/auth",
            "userAuthEndpoint": f"{self.backend.base}/broadcasting/user-auth",
        }
        if self.server.path:
            config["wsPath"] = self.server.path
        if user is not None:
            config["user"] = user
        peer = await Peer.start(name, config)
        self.started.append(peer)
        return peer

    async def close(self) -> None:
        await asyncio.gather(*(p.close() for p in self.started), return_exceptions=True)


@pytest.fixture
async def backend(server: ServerProcess) -> AsyncIterator[Backend]:
    async with Backend(server) as b:
        yield b


@pytest.fixture
async def peers(server: ServerProcess, backend: Backend) -> AsyncIterator[Peers]:
    p = Peers(server, backend)
    try:
        yield p
    finally:
        await p.close()


async def signed_in(peer: Peer, user_id: str) -> str:
    """pusher.signin(), then wait until pusher-js holds the user and its #server-to-user channel is live."""
    if not peer.seen("connected"):
        await peer.wait_for("connected")
    socket_id = str(peer.seen("connected")[0]["socket_id"])
    await peer.call("signin")
    done = await peer.call("signin_done")
    assert done["user_data"] == USERS[user_id], peer.describe()
    await peer.wait_for(
        "message",
        event="pusher_internal:subscription_succeeded",
        channel=f"#server-to-user-{user_id}",
    )
    return socket_id


# -- 1. sign-in, server-to-user, terminate_connections --------------------------------------


async def test_signin_send_to_user_and_terminate(
    server: ServerProcess, backend: Backend, peers: Peers
) -> None:
    alice = await peers.new("alice", user="alice")
    bystander = await peers.new("bystander")  # never signs in
    socket_id = await alice.connected()
    bystander_id = await bystander.connected()
    assert re.match(SOCKET_ID_RE, socket_id)

    await alice.call("bind_user", event="order-shipped")
    await alice.call("signin")
    # The customHandler asked the backend for this very socket and got the SDK's answer.
    auth = await alice.wait_for("user_auth")
    assert auth["socket_id"] == socket_id and auth["status"] == 200
    assert backend.user_requests == [{"socket_id": socket_id, "user": "alice"}]
    user_data = json.dumps(USERS["alice"])  # the exact string the SDK signed
    assert auth["response"] == {
        "auth": backend.sdk.authenticate_user(socket_id, USERS["alice"])["auth"],
        "user_data": user_data,
    }
    success = await alice.wait_for("message", event="pusher:signin_success")
    assert success["data"] == {"user_data": user_data}
    assert (await alice.call("signin_done"))["user_data"] == USERS["alice"]
    await alice.wait_for(
        "message", event="pusher_internal:subscription_succeeded", channel="#server-to-user-alice"
    )
    assert await alice.call("user") == {
        "user_data": USERS["alice"],
        "server_to_user": {"name": "#server-to-user-alice", "subscribed": True},
    }
    assert alice.seen("signin_error") == [] and alice.seen("connection_error") == []

    # sendToUser from the SDK reaches pusher.user.bind('order-shipped').
    sdk = backend.sdk
    payload = {"order": 17, "items": ["book", "pen"], "note": "déjà vu ✓"}
    assert await in_thread(sdk.send_to_user, "alice", "order-shipped", payload) == {}
    got = await alice.wait_for("user_event", event="order-shipped")
    assert got["data"] == payload
    # Another user's event does not reach alice.
    await in_thread(sdk.send_to_user, "bob", "order-shipped", {"order": 99})
    await in_thread(sdk.send_to_user, "alice", "order-shipped", {"order": 18})
    assert (await alice.wait_for("user_event", event="order-shipped"))["data"] == {"order": 18}
    assert [m["data"] for m in alice.seen("user_event")] == [payload, {"order": 18}]

    # terminate_connections (signed by the SDK's own request signer; the SDK's
    # terminate_user_connections() is covered by test_sdk_terminate_user_connections below):
    # pusher:error 4009, then the socket closes with 4009 ...
    path = f"/apps/{server.app_id}/users/alice/terminate_connections"
    assert await signed_request(server, "POST", path, {}) == (200, {})
    bye = {"code": 4009, "message": "You got disconnected by the app."}
    assert (await alice.wait_for("message", event="pusher:error"))["data"] == bye
    closed = await alice.wait_for("closed")
    assert closed == {"type": "closed", "code": 4009, "reason": bye["message"]}
    # ... which pusher-js classifies as 'refused' (4000-4099: its WebSocketError wraps the close)
    # and so goes to `disconnected` without retrying, not even after its 1 s backoff.
    refused = await alice.wait_for(
        "connection_error", where=lambda m: m["error"].get("type") == "WebSocketError"
    )
    assert refused["error"] == {
        "type": "WebSocketError",
        "error": {"type": "PusherError", "data": bye},
    }
    await alice.wait_for("state", previous="connected", current="disconnected")
    await asyncio.sleep(2.5)
    assert (await alice.call("state"))["state"] == "disconnected"
    assert [(m["previous"], m["current"]) for m in alice.seen("state")] == [
        ("connecting", "connected"),
        ("connected", "disconnected"),
    ]
    assert len(alice.seen("connected")) == 1 and len(alice.seen("closed")) == 1
    assert len(backend.user_requests) == 1  # no second signin either

    # The bystander (not signed in) never noticed: same socket, still connected, still served.
    assert [m["current"] for m in bystander.seen("state")] == ["connected"]
    assert (await bystander.call("state"))["state"] == "connected"
    assert (await bystander.call("state"))["socket_id"] == bystander_id
    await bystander.call("subscribe", channel="after-terminate", bind=["ping"])
    await bystander.wait_for("subscription_succeeded", channel="after-terminate")
    await in_thread(sdk.trigger, "after-terminate", "ping", {"still": "here"})
    assert (await bystander.wait_for("bound", channel="after-terminate", event="ping"))["data"] == {
        "still": "here"
    }
    assert bystander.frames("pusher:error") == []


async def test_sdk_terminate_user_connections(backend: Backend, peers: Peers) -> None:
    """The official SDK's own `terminate_user_connections()` closes the signed-in pusher-js socket.

    pusher (Python) 3.3.4 signs and POSTs `/users/{user_id}/terminate_connections`, without the
    `/apps/{app_id}` prefix every other SDK method has; only `auth_key` names the app.
    """
    alice = await peers.new("alice", user="alice")
    await signed_in(alice, "alice")
    assert await in_thread(backend.sdk.terminate_user_connections, "alice") == {}
    closed = await alice.wait_for("closed")
    assert closed == {"type": "closed", "code": 4009, "reason": "You got disconnected by the app."}
    await alice.wait_for("state", previous="connected", current="disconnected")


# -- 2. watchlist ------------------------------------------------------------------------------


async def test_watchlist_online_then_offline(peers: Peers) -> None:
    a = await peers.new("A", user="A")
    await a.connected()
    await a.call("bind_watchlist", name="online")
    await a.call("bind_watchlist", name="offline")
    await signed_in(a, "A")
    assert a.seen("watchlist") == []  # B is not online yet

    b = await peers.new("B", user="B")
    await signed_in(b, "B")
    online = await a.wait_for("watchlist", name="online")
    assert online["event"] == {"name": "online", "user_ids": ["B"]}

    await b.call("disconnect")
    offline = await a.wait_for("watchlist", name="offline")
    assert offline["event"] == {"name": "offline", "user_ids": ["B"]}
    assert [m["event"] for m in a.seen("watchlist")] == [
        {"name": "online", "user_ids": ["B"]},
        {"name": "offline", "user_ids": ["B"]},
    ]
    assert b.seen("watchlist") == []  # B watches nobody


async def test_watchlist_reports_already_online_user_at_signin_and_abrupt_disconnect(
    peers: Peers,
) -> None:
    b = await peers.new("B", user="B")
    await signed_in(b, "B")

    a = await peers.new("A", user="A")
    await a.connected()
    await a.call("bind_watchlist", name="online")
    await a.call("bind_watchlist", name="offline")
    await a.call("signin")
    online = await a.wait_for("watchlist", name="online")
    assert online["event"] == {"name": "online", "user_ids": ["B"]}

    await b.kill()  # the kernel drops B's TCP connection: no close frame
    offline = await a.wait_for("watchlist", name="offline")
    assert offline["event"] == {"name": "offline", "user_ids": ["B"]}
    assert len(a.seen("watchlist")) == 2


# -- 3. encrypted channel ----------------------------------------------------------------------


async def test_encrypted_channel_end_to_end(
    server: ServerProcess, backend: Backend, peers: Peers, http: aiohttp.ClientSession
) -> None:
    channel = "private-encrypted-x"
    js = await peers.new("pusher-js")
    socket_id = await js.connected()
    await js.call("subscribe", channel=channel, bind=["secret-news"])
    await js.wait_for("subscription_succeeded", channel=channel)

    # The backend's answer held the SDK's shared secret: base64(SHA-256(channel ‖ master key)).
    assert backend.channel_requests[-1]["channel_name"] == channel
    assert backend.channel_requests[-1]["socket_id"] == socket_id
    response = backend.channel_responses[-1]
    assert set(response) == {"auth", "shared_secret"}
    shared_secret = base64.b64decode(response["shared_secret"])
    assert shared_secret == pusher.crypto.generate_shared_secret(channel.encode(), MASTER_KEY)

    # A raw WebSocket on the same channel sees what the server forwards, byte for byte.
    raw = await connect(http, server)
    ok = await raw.subscribe(channel, server.secret, server.key)
    assert ok["event"] == "pusher_internal:subscription_succeeded", ok

    payload = {
        "headline": "Épreuve ✓ 漢字",
        "n": 42,
        "nested": {"ok": True, "list": [1, 2.5, None]},
    }
    assert await in_thread(backend.sdk.trigger, channel, "secret-news", payload) == {}

    # pusher-js decrypted it with the shared secret and hands the app the original object.
    got = await js.wait_for("bound", channel=channel, event="secret-news")
    assert got["data"] == payload
    assert js.seen("connection_error") == []

    # On the wire: exactly the SDK's `json.dumps({"nonce", "ciphertext"})` string (its ", " and
    # ": " separators prove the server did not re-serialise it), decrypting to the SDK's plaintext.
    frame = await raw.recv()
    assert set(frame) == {"event", "channel", "data"}
    assert (frame["event"], frame["channel"]) == ("secret-news", channel)
    data = frame["data"]
    assert isinstance(data, str)
    assert re.fullmatch(rf'\{{"nonce": "{B64}", "ciphertext": "{B64}"\}}', data), data
    envelope = json.loads(data)
    plaintext = nacl.secret.SecretBox(shared_secret).decrypt(
        base64.b64decode(envelope["ciphertext"]), base64.b64decode(envelope["nonce"])
    )
    assert plaintext.decode() == json.dumps(payload, ensure_ascii=False)  # the SDK's data_to_string
    assert "Épreuve" not in data and "headline" not in data


# -- 4. cache channel --------------------------------------------------------------------------


async def test_cache_channel_miss_then_replay(backend: Backend, peers: Peers) -> None:
    channel = "cache-x"
    first = await peers.new("first")
    await first.connected()
    await first.call("subscribe", channel=channel, bind=["pusher:cache_miss", "score"])
    await first.wait_for("subscription_succeeded", channel=channel)
    miss = await first.wait_for("bound", channel=channel, event="pusher:cache_miss")
    assert miss["data"] is None  # the frame has no data field
    frame = await first.wait_for("message", event="pusher:cache_miss")
    assert frame == {
        "type": "message",
        "event": "pusher:cache_miss",
        "channel": channel,
        "data": None,
        "user_id": None,
    }

    payload = {"home": 2, "away": 1, "minute": 90}
    assert await in_thread(backend.sdk.trigger, channel, "score", payload) == {}
    assert (await first.wait_for("bound", channel=channel, event="score"))["data"] == payload

    late = await peers.new("late")
    await late.connected()
    await late.call("subscribe", channel=channel, bind=["pusher:cache_miss", "score"])
    replay = await late.wait_for("bound", channel=channel, event="score")
    assert replay["data"] == payload
    # Right after subscription_succeeded: nothing of that channel in between, and no cache miss.
    channel_obs = [
        m
        for m in late.messages
        if m.get("channel") == channel
        and m.get("type") in ("subscription_succeeded", "event", "bound")
    ]
    assert [(m["type"], m.get("event")) for m in channel_obs[:3]] == [
        ("subscription_succeeded", None),
        ("event", "score"),
        ("bound", "score"),
    ], late.describe()
    assert late.seen("bound", event="pusher:cache_miss") == []
    assert late.frames("pusher:cache_miss") == []


# -- 5. presence with a signed-in user and no channel_data --------------------------------------


async def test_presence_member_comes_from_signed_in_user(backend: Backend, peers: Peers) -> None:
    channel = "presence-room"
    carol = await peers.new("carol", user="carol")
    await signed_in(carol, "carol")
    await carol.call("subscribe", channel=channel)
    ok = await carol.wait_for("subscription_succeeded", channel=channel)
    # The backend's answer had no channel_data: pusher-js (>= 7.4) took its id from pusher.user.
    assert backend.channel_responses[-1].keys() == {"auth"}
    assert ok["members"] == {
        "count": 1,
        "me": {"id": "carol", "info": {"name": "Carol"}},
        "members": {"carol": {"name": "Carol"}},
    }

    dave = await peers.new("dave", user="dave")
    await signed_in(dave, "dave")
    await dave.call("subscribe", channel=channel)
    joined = await dave.wait_for("subscription_succeeded", channel=channel)
    assert joined["members"] == {
        "count": 2,
        "me": {"id": "dave", "info": {"name": "Dave"}},
        "members": {"carol": {"name": "Carol"}, "dave": {"name": "Dave"}},
    }
    added = await carol.wait_for("member_added", channel=channel)
    assert added["member"] == {"id": "dave", "info": {"name": "Dave"}}

    await dave.call("disconnect")
    removed = await carol.wait_for("member_removed", channel=channel)
    assert removed["member"] == {"id": "dave", "info": {"name": "Dave"}}
    assert await carol.call("members", channel=channel) == {
        "count": 1,
        "me": {"id": "carol", "info": {"name": "Carol"}},
        "members": {"carol": {"name": "Carol"}},
    }
