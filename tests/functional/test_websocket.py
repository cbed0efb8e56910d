"""The WebSocket endpoint on a real server, checked frame by frame."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.conftest import ServerProcess, start_server
from tests.functional.raw import api, connect


async def test_handshake(http: aiohttp.ClientSession, server: ServerProcess) -> None:
    c = await connect(http, server)
    assert re.fullmatch(r"\d+\.\d+", c.socket_id)
    # activity_timeout must be non-zero or pusher-js refuses the handshake
    ws = await http.ws_connect(f"{server.http_url}/app/{server.key}?protocol=7")
    msg = await ws.receive_json()
    assert msg["event"] == "pusher:connection_established"
    assert '"activity_timeout":30' in msg["data"]


@pytest.mark.parametrize(
    ("query", "key", "code"),
    [
        ("protocol=7", "no-such-key", 4001),
        ("client=js", None, 4008),
        ("protocol=3", None, 4007),
        ("protocol=seven", None, 4006),
    ],
)
async def test_refused_at_the_door(http: aiohttp.ClientSession, server: ServerProcess, query: str, key: str | None, code: int) -> None:
    c = await connect(http, server, query=query, key=key, established=False)
    err = await c.recv()
    assert err["event"] == "pusher:error"
    assert err["data"]["code"] == code
    close_code, _ = await c.closed()
    assert close_code == code


async def test_origin_allow_list(http: aiohttp.ClientSession, tmp_path: Path) -> None:
    server = start_server(tmp_path, extra_env={"REVERB_APP_ALLOWED_ORIGINS": "*.example.com,laravel.com"})
    try:
        for origin in ("https://app.example.com", "http://laravel.com:8000"):
            await connect(http, server, headers={"Origin": origin})
        for origin in ("https://example.com", "https://evil.com", None):
            c = await connect(http, server, headers={"Origin": origin} if origin else {}, established=False)
            assert (await c.recv())["data"]["code"] == 4009
            assert (await c.closed())[0] == 4009
    finally:
        server.stop()


async def test_connection_quota(http: aiohttp.ClientSession, tmp_path: Path) -> None:
    server = start_server(tmp_path, extra_env={"REVERB_APP_MAX_CONNECTIONS": "2"})
    try:
        a = await connect(http, server)
        b = await connect(http, server)
        c = await connect(http, server, established=False)
        assert (await c.recv())["data"]["code"] == 4004
        assert (await c.closed())[0] == 4004
        await a.ws.close()
        await asyncio.sleep(0.2)
        await connect(http, server)  # a freed slot can be used again
        assert not b.ws.closed
    finally:
        server.stop()


async def test_ping_pong_and_control_frames(http: aiohttp.ClientSession, server: ServerProcess) -> None:
    c = await connect(http, server)
    await c.send("pusher:ping", {})
    assert await c.recv() == {"event": "pusher:pong"}
    await c.ws.ping(b"abc")
    msg = await c.ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.PONG and msg.data == b"abc"


async def test_idle_socket_is_pinged_then_closed_4201(http: aiohttp.ClientSession, tmp_path: Path) -> None:
    server = start_server(tmp_path, extra_env={"REVERB_APP_PING_INTERVAL": "0.5", "REVERB_APP_PONG_TIMEOUT": "0.5"})
    try:
        # Not subscribed to anything: still reaped (Reverb #375).
        c = await connect(http, server)
        assert await c.recv(timeout=3) == {"event": "pusher:ping"}
        err = await c.recv(timeout=3)
        assert err["event"] == "pusher:error" and err["data"]["code"] == 4201
        assert (await c.closed())[0] == 4201
        # A client that answers stays connected.
        alive = await connect(http, server)
        for _ in range(3):
            assert await alive.recv(timeout=3) == {"event": "pusher:ping"}
            await alive.send("pusher:pong", {})
        assert not alive.ws.closed
    finally:
        server.stop()


async def test_subscribe_public_and_receive_api_event(http: aiohttp.ClientSession, server: ServerProcess) -> None:
    c = await connect(http, server)
    ok = await c.subscribe("test-channel")
    assert ok == {"event": "pusher_internal:subscription_succeeded", "data": {}, "channel": "test-channel"}
    status, body = await api(http, server, "POST", "/events", {"name": "App\\Events\\X", "channel": "test-channel", "data": '{"a":1}'})
    assert (status, body) == (200, {})
    assert await c.recv() == {"event": "App\\Events\\X", "channel": "test-channel", "data": '{"a":1}'}


async def test_bad_auth_gives_subscription_error_and_socket_stays_open(http: aiohttp.ClientSession, server: ServerProcess) -> None:
    c = await connect(http, server)
    err = await c.subscribe("private-x", secret="wrong", key=server.key)
    assert err["event"] == "pusher:subscription_error"
    assert err["channel"] == "private-x"
    assert err["data"]["type"] == "AuthError" and err["data"]["status"] == 401
    ok = await c.subscribe("private-x", secret=server.secret, key=server.key)
    assert ok["event"] == "pusher_internal:subscription_succeeded"


async def test_presence_members_and_abrupt_disconnect(http: aiohttp.ClientSession, server: ServerProcess) -> None:
    alice = await connect(http, server)
    a_data = '{"user_id":"1","user_info":{"name":"Alice"}}'
    ok = await alice.subscribe("presence-room", server.secret, server.key, a_data)
    assert ok["data"] == {"presence": {"count": 1, "ids": ["1"], "hash": {"1": {"name": "Alice"}}}}
    bob1 = await connect(http, server)
    b_data = '{"user_id":2,"user_info":{"name":"Bob"}}'
    ok = await bob1.subscribe("presence-room", server.secret, server.key, b_data)
    assert ok["data"]["presence"]["count"] == 2
    added = await alice.recv()
    assert added == {"event": "pusher_internal:member_added", "channel": "presence-room", "data": {"user_id": 2, "user_info": {"name": "Bob"}}}
    # Bob's second tab: no second member_added.
    bob2 = await connect(http, server)
    ok = await bob2.subscribe("presence-room", server.secret, server.key, b_data)
    assert ok["data"]["presence"]["count"] == 2
    # One tab leaves abruptly: Bob is still there.
    bob1.ws._response.connection.transport.abort()  # type: ignore[union-attr]
    await asyncio.sleep(0.3)
    status, users = await api(http, server, "GET", "/channels/presence-room/users")
    assert users == {"users": [{"id": "1"}, {"id": "2"}]}
    # The last tab unsubscribes: now member_removed.
    await bob2.send("pusher:unsubscribe", {"channel": "presence-room"})
    removed = await alice.recv()
    assert removed == {"event": "pusher_internal:member_removed", "channel": "presence-room", "data": {"user_id": 2}}


async def test_client_events(http: aiohttp.ClientSession, server: ServerProcess) -> None:
    a = await connect(http, server)
    b = await connect(http, server)
    outsider = await connect(http, server)
    for c in (a, b):
        await c.subscribe("private-chat", server.secret, server.key)
    await a.send("client-typing", {"who": "a"}, channel="private-chat")
    assert await b.recv() == {"event": "client-typing", "channel": "private-chat", "data": {"who": "a"}}
    # not echoed to the sender: the next thing a sees is its own pong
    await a.send("pusher:ping", {})
    assert await a.recv() == {"event": "pusher:pong"}
    # non-members may not whisper
    await outsider.send("client-typing", {}, channel="private-chat")
    err = await outsider.recv()
    assert err["event"] == "pusher:error" and err["data"]["code"] == 4009
    await outsider.send("pusher:ping", {})
    assert await outsider.recv() == {"event": "pusher:pong"}


async def test_presence_client_event_carries_user_id(http: aiohttp.ClientSession, server: ServerProcess) -> None:
    a, b = await connect(http, server), await connect(http, server)
    await a.subscribe("presence-c", server.secret, server.key, '{"user_id":"a"}')
    await b.subscribe("presence-c", server.secret, server.key, '{"user_id":"b"}')
    await a.recv_event("pusher_internal:member_added")
    await a.send("client-hi", "x", channel="presence-c")
    assert await b.recv() == {"event": "client-hi", "channel": "presence-c", "data": "x", "user_id": "a"}


@pytest.mark.parametrize(
    ("frame", "code"),
    [("not json", 4200), ('{"event":"pusher:nope"}', 4200), ('{"event":"pusher:subscribe","data":{"channel":1}}', 4200)],
)
async def test_malformed_messages_are_non_fatal(http: aiohttp.ClientSession, server: ServerProcess, frame: str, code: int) -> None:
    c = await connect(http, server)
    await c.ws.send_str(frame)
    err = await c.recv()
    assert err["event"] == "pusher:error" and err["data"]["code"] == code
    await c.send("pusher:ping", {})
    assert await c.recv() == {"event": "pusher:pong"}


async def test_binary_frames_are_refused_without_closing(http: aiohttp.ClientSession, server: ServerProcess) -> None:
    c = await connect(http, server)
    await c.ws.send_bytes(b"\x00\x01")
    assert (await c.recv())["data"]["code"] == 4200
    await c.send("pusher:ping", {})
    assert await c.recv() == {"event": "pusher:pong"}


async def test_oversized_message_closes_1009_and_spares_others(http: aiohttp.ClientSession, tmp_path: Path) -> None:
    server = start_server(tmp_path, extra_env={"REVERB_APP_MAX_MESSAGE_SIZE": "1000"})
    try:
        victim, bystander = await connect(http, server), await connect(http, server)
        await bystander.subscribe("news")
        await victim.send("client-big", "x" * 2000, channel="private-x")
        err = await victim.recv()
        assert err["data"] == {"code": 4200, "message": "Maximum message size exceeded"}
        code, reason = await victim.closed()
        assert (code, reason) == (1009, "Maximum message size exceeded")
        status, _ = await api(http, server, "POST", "/events", {"name": "e", "channel": "news", "data": "still here"})
        assert status == 200
        assert (await bystander.recv())["data"] == "still here"
    finally:
        server.stop()


async def _raw_subscriber(server: ServerProcess, channel: str) -> socket.socket:
    """A subscriber with a 4 KiB receive buffer that will never read: the slowest consumer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /app/{server.key}?protocol=7 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await asyncio.sleep(0.2)
    payload = orjson.dumps({"event": "pusher:subscribe", "data": {"channel": channel}})
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(bytes((0x81, 0x80 | len(payload))) + mask + masked)
    await asyncio.sleep(0.2)
    return sock


async def test_slow_consumer_is_dropped_others_keep_receiving(http: aiohttp.ClientSession, tmp_path: Path) -> None:
    server = start_server(tmp_path, extra_env={"REVERB_MAX_WRITE_BUFFER": "65536"})
    try:
        slow = await _raw_subscriber(server, "firehose")
        fast = await connect(http, server)
        await fast.subscribe("firehose")
        status, body = await api(http, server, "GET", "/channels/firehose", params={"info": "subscription_count"})
        assert body["subscription_count"] == 2
        data = "x" * 10_000
        received = 0

        async def drain() -> None:
            nonlocal received
            while True:
                msg = await fast.recv(timeout=10)
                if msg["event"] == "big":
                    received += 1
                if msg["data"] == "done":
                    return

        reader = asyncio.create_task(drain())
        for _ in range(100):  # bounded: 100 batches x 10 events x 10 kB = 10 MB
            status, _ = await api(http, server, "POST", "/batch_events", {"batch": [{"name": "big", "channel": "firehose", "data": data}] * 10})
            assert status == 200
        await api(http, server, "POST", "/events", {"name": "big", "channel": "firehose", "data": "done"})
        await asyncio.wait_for(reader, 20)
        assert received == 1001  # nothing lost for the reader that keeps up
        status, body = await api(http, server, "GET", "/channels/firehose", params={"info": "subscription_count"})
        assert body["subscription_count"] == 1  # the slow one was dropped
        assert "slow consumer" in server.log()
        slow.close()
    finally:
        server.stop()


async def test_path_prefix(http: aiohttp.ClientSession, tmp_path: Path) -> None:
    server = start_server(tmp_path, path="/ws")
    try:
        c = await connect(http, server)
        await c.subscribe("news")
        status, body = await api(http, server, "POST", "/events", {"name": "e", "channel": "news", "data": "d"})
        assert (status, body) == (200, {})
        assert (await c.recv())["data"] == "d"
        async with http.get(f"http://127.0.0.1:{server.port}/up") as r:
            assert r.status == 404
    finally:
        server.stop()
