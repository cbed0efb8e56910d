"""The front door with a recording transport: answers, metrics, per-server state, timers and
shutdown (with a fake clock)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import orjson

from reverbpy.config import AppConfig, Secret, ServerConfig
from reverbpy.http_api.front import (
    KEEPALIVE_TIMEOUT,
    REQUEST_TIMEOUT,
    FrontDoor,
    Triggers,
)
from reverbpy.protocol.auth import sign_request
from reverbpy.protocol.http1 import HEAD_LIMIT
from reverbpy.server import NODE, create_app
from reverbpy.wire import WIRE


class Transport:
    def __init__(self) -> None:
        self.closed = False
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Aiohttp:
    """Stands for aiohttp's handler: records what the front door hands it."""

    def __init__(self, handed: list[bytes]) -> None:
        self.handed = handed

    def connection_made(self, transport: object) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        self.handed.append(data)


def door(secret: str = "s") -> tuple[FrontDoor, Triggers, Transport]:
    config = ServerConfig(apps=(AppConfig(id="1", key="k", secret=Secret(secret)),))
    triggers = create_app(config)[NODE].triggers
    return open_door(triggers)


def open_door(triggers: Triggers) -> tuple[FrontDoor, Triggers, Transport]:
    d = FrontDoor(triggers, lambda: None)  # type: ignore[arg-type,return-value]
    transport = Transport()
    t: Any = transport
    d.connection_made(t)
    return d, triggers, transport


def trigger(body: bytes = b'{"name":"e","channel":"c","data":"d"}', *, secret: str = "s", path: str = "/apps/1/events") -> bytes:
    params = {"auth_key": "k", "auth_timestamp": str(int(time.time())), "auth_version": "1.0", "body_md5": hashlib.md5(body).hexdigest()}
    query = "&".join(f"{k}={v}" for k, v in params.items()) + "&auth_signature=" + sign_request("POST", path, params, secret)
    return f"POST {path}?{query} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


def answers(transport: Transport) -> list[tuple[int, object]]:
    out = []
    for raw in transport.writes:
        head, _, body = raw.partition(b"\r\n\r\n")
        out.append((int(head.split(b" ")[1]), orjson.loads(body)))
    return out


def test_a_trigger_is_answered_and_counted_by_its_route_pattern() -> None:
    d, _, transport = door()
    before = WIRE.http_requests["/apps/{app_id}/events", "1", "200"]
    d.data_received(trigger() + trigger())  # pipelined
    assert answers(transport) == [(200, {}), (200, {})]
    assert WIRE.http_requests["/apps/{app_id}/events", "1", "200"] == before + 2
    assert not transport.closed


def test_an_app_removed_since_the_routes_were_made_gets_the_one_404() -> None:
    d, triggers, transport = door()
    triggers.api.hub.registry.reload(())  # without ``refresh``: the path is still the door's
    before = WIRE.http_requests["/apps/{app_id}/events", "unknown", "404"]
    d.data_received(trigger())
    assert answers(transport) == [(404, {"error": "No matching application for ID [1]."})]
    assert WIRE.http_requests["/apps/{app_id}/events", "unknown", "404"] == before + 1


def test_servers_in_one_process_keep_their_own_apps_and_pending_answers() -> None:
    """Two servers with the same app id and different secrets: nothing is shared."""
    a, a_triggers, a_transport = door(secret="secret-a")
    b, b_triggers, b_transport = door(secret="secret-b")
    for _ in range(2):  # interleaved: no cache of one server serves the other
        a.data_received(trigger(secret="secret-a"))
        b.data_received(trigger(secret="secret-a"))
    assert [s for s, _ in answers(a_transport)] == [200, 200]
    assert [s for s, _ in answers(b_transport)] == [401, 401]


async def test_an_answer_awaiting_channel_info_is_drained_by_its_own_server_only() -> None:
    a, a_triggers, a_transport = door()
    _, b_triggers, _ = door()
    body = b'{"name":"e","channel":"c","data":"d","info":"subscription_count"}'
    a.data_received(trigger(body) + trigger())  # the second waits for the first's answer
    assert a_transport.writes == []
    await b_triggers.drained(0)  # nothing of b's to wait for
    assert a_transport.writes == []
    await a_triggers.drained(1)
    await asyncio.sleep(0)  # the answer is written by the task's done callback
    assert answers(a_transport) == [(200, {"channels": {"c": {"subscription_count": 0}}}), (200, {})]


def test_a_trickled_head_expires_from_the_accept_whatever_its_method() -> None:
    for first_line in (b"POST /apps/1/events HTTP/1.1\r\n", b"GET /app/k?protocol=7 HTTP/1.1\r\n"):
        d, triggers, transport = door()
        start = d.request_started
        WIRE.reset()
        for i in range(5):  # bytes keep coming, slowly: the deadline does not move
            d.data_received(first_line[i : i + 1])
        assert not d.expired(start + triggers.head_timeout - 1)
        assert d.expired(start + triggers.head_timeout + 1)
        triggers.sweep(start + triggers.head_timeout + 1)
        assert transport.closed
        assert WIRE.refused == {"head_timeout": 1}


def test_a_connection_that_sends_nothing_gets_the_head_timeout_not_the_keep_alive() -> None:
    d, triggers, transport = door()
    assert d.expired(d.request_started + triggers.head_timeout + 1)


def test_a_trickled_body_expires_from_the_requests_first_byte() -> None:
    d, triggers, transport = door()
    d.data_received(b"POST /apps/1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n{")
    start = d.request_started
    assert d not in triggers.pending  # the head is in: the request timeout applies
    assert not d.expired(start + REQUEST_TIMEOUT - 1)
    assert d.expired(start + REQUEST_TIMEOUT + 1)


def test_an_idle_keep_alive_connection_lasts_as_long_as_aiohttps() -> None:
    d, triggers, transport = door()
    d.data_received(trigger())
    assert answers(transport) == [(200, {})] and not transport.closed
    assert not d.expired(d.last_active + KEEPALIVE_TIMEOUT - 1)
    assert d.expired(d.last_active + KEEPALIVE_TIMEOUT + 1)
    d.data_received(b"GET /up HT")  # a new request: its head timeout runs from its first byte
    assert d.expired(d.last_active + triggers.head_timeout + 1)


def test_a_head_is_handed_to_aiohttp_only_once_complete() -> None:
    handed: list[bytes] = []
    _, triggers, _ = door()
    d = FrontDoor(triggers, lambda: Aiohttp(handed))  # type: ignore[arg-type,return-value]
    t: Any = Transport()
    t.set_protocol = lambda protocol: None
    d.connection_made(t)
    upgrade = b"GET /app/k?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"
    for i in range(len(upgrade) - 1):
        d.data_received(upgrade[i : i + 1])
    assert handed == [] and d in triggers.pending
    d.data_received(upgrade[-1:])
    assert handed == [upgrade] and d not in triggers.pending and d not in triggers.doors


def test_a_head_past_the_limit_gets_431_and_a_close() -> None:
    d, triggers, transport = door()
    WIRE.reset()
    d.data_received(b"GET / HTTP/1.1\r\nCookie: " + b"a" * HEAD_LIMIT)
    assert answers(transport) == [(431, {"error": "Request head too large"})]
    assert transport.closed and WIRE.refused == {"head_too_large": 1}


def test_past_max_pending_heads_a_new_connection_closes_the_oldest_old_one() -> None:
    config = ServerConfig(apps=(AppConfig(id="1", key="k", secret=Secret("s")),), max_pending_heads=3)
    triggers = create_app(config)[NODE].triggers
    WIRE.reset()
    old = [open_door(triggers) for _ in range(3)]
    for d, _, _ in old:
        d.request_started -= 5  # waiting for 5 s already
    open_door(triggers)
    assert [t.closed for _, _, t in old] == [True, False, False]
    assert WIRE.refused == {"too_many_pending_heads": 1}
    # A burst of new connections evicts nobody young: three pending ones are not old yet.
    young = [open_door(triggers) for _ in range(5)]
    assert [t.closed for _, _, t in old] == [True, True, True]
    assert not any(t.closed for _, _, t in young)
    assert WIRE.refused == {"too_many_pending_heads": 3}


def test_shutdown_closes_idle_connections_and_lets_a_request_finish() -> None:
    idle, triggers, idle_transport = door()
    busy = FrontDoor(triggers, lambda: None)  # type: ignore[arg-type,return-value]
    busy_transport = Transport()
    t: Any = busy_transport
    busy.connection_made(t)
    busy.data_received(b"POST /apps/1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n")  # body to come
    triggers.shut_down()
    assert idle_transport.closed and not busy_transport.closed
    busy.data_received(b"{}")  # unsigned: 401, then the connection closes
    assert busy_transport.writes and b"Connection: close" in busy_transport.writes[0]
    assert busy_transport.closed


def test_a_plain_upgrade_is_accepted_at_the_door_and_others_go_to_aiohttp() -> None:
    config = ServerConfig(apps=(AppConfig(id="1", key="k", secret=Secret("s")),))
    triggers = create_app(config)[NODE].triggers
    accepted: list[tuple[str, bytes]] = []
    triggers.upgrade = lambda transport, upgrade, tail, remote: accepted.append((upgrade.key, tail))
    handed: list[bytes] = []

    def knock(data: bytes) -> FrontDoor:
        d = FrontDoor(triggers, lambda: Aiohttp(handed))  # type: ignore[arg-type,return-value]
        t: Any = Transport()
        t.set_protocol = lambda protocol: None
        d.connection_made(t)
        d.data_received(data)
        return d

    head = b"GET /app/k?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    d = knock(head + b"\x81")
    assert accepted == [("k", b"\x81")] and handed == []
    assert d not in triggers.doors and d not in triggers.pending
    knock(head.replace(b"13", b"8"))  # a handshake error: aiohttp's 426
    triggers.stopping = True
    knock(head)  # draining: aiohttp's middleware answers 503
    assert len(accepted) == 1 and len(handed) == 2


WIRE_CASES: dict[str, tuple[bytes, bool]] = {
    # name: (request, whether the answer is the door's last)
    "ok": (b"", False),
    "ok, Connection: close": (b"connection: close", True),
    "bad signature": (b"signature", False),
    "body_md5": (b"md5", False),
    "expired": (b"expired", False),
    "not JSON": (b"json", False),
    "no name": (b"name", False),
    "data too large": (b"large", False),
    "over the rate": (b"rate", False),
}


def _wire_request(case: bytes, now: int) -> bytes:
    body = {
        b"json": b"{nope", b"name": b'{"channel":"c","data":"d"}',
        b"large": b'{"name":"e","channel":"c","data":"' + b"x" * 11 + b'"}',
    }.get(case, b'{"name":"e","channel":"c","data":"d"}')  # fmt: skip
    md5 = hashlib.md5(b"other" if case == b"md5" else body).hexdigest()
    stamp = str(now - 601 if case == b"expired" else now)
    params = {"auth_key": "k", "auth_timestamp": stamp, "auth_version": "1.0", "body_md5": md5}
    signature = sign_request("POST", "/apps/1/events", params, "x" if case == b"signature" else "s")
    query = "&".join(f"{k}={v}" for k, v in params.items()) + "&auth_signature=" + signature
    extra = b"Connection: close\r\n" if case == b"connection: close" else b""
    return (
        f"POST /apps/1/events?{query} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n".encode()
        + extra + b"\r\n" + body
    )  # fmt: skip


def test_the_answers_bytes_for_success_and_each_refusal(monkeypatch: Any) -> None:
    """Byte for byte, at a fixed clock: what the fast path's shortcuts (the prebuilt ``{}``, the
    one clock read per request) must leave as they were."""
    now = 1_765_000_000
    monkeypatch.setattr(time, "time", lambda: now + 0.25)

    def door_of(rate: int | None) -> tuple[FrontDoor, Transport]:
        app = AppConfig(id="1", key="k", secret=Secret("s"), max_event_payload=10,
                        backend_event_rate=rate)  # fmt: skip
        d, _, transport = open_door(create_app(ServerConfig(apps=(app,)))[NODE].triggers)
        return d, transport

    date = b"Date: Sat, 06 Dec 2025 05:46:40 GMT\r\nServer: reverbpy\r\n"

    def expected(status: bytes, body: bytes, close: bool = False) -> bytes:
        return (
            b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n" + date
            + (b"Connection: close\r\n" if close else b"") + b"\r\n" + body
        )  # fmt: skip

    got = {}
    for name, (case, last) in WIRE_CASES.items():
        d, transport = door_of(1 if name == "over the rate" else None)
        if name == "over the rate":
            d.data_received(_wire_request(b"", now))
            transport.writes.clear()
        d.data_received(_wire_request(case, now))
        assert transport.closed is last, name
        got[name] = transport.writes
    d, transport = door_of(None)
    d.data_received(b"POST /apps/1/events HTTP/1.1\r\nX: " + b"x" * HEAD_LIMIT)
    got["head too large"] = transport.writes
    sig = b'{"error":"Invalid signature: you should have sent HmacSHA256Hex(secret, METHOD\\\\nPATH\\\\nQUERY)"}'
    assert got == {
        "ok": [expected(b"200 OK", b"{}")],
        "ok, Connection: close": [expected(b"200 OK", b"{}", close=True)],
        "bad signature": [expected(b"401 Unauthorized", sig)],
        "body_md5": [expected(b"401 Unauthorized", b'{"error":"body_md5 does not match the request body"}')],
        "expired": [expected(b"401 Unauthorized", b'{"error":"Timestamp expired: Given timestamp (1764999399) not within 600s of server time (1765000000)"}')],
        "not JSON": [expected(b"400 Bad Request", b'{"error":"Request body is not valid JSON"}')],
        "no name": [expected(b"400 Bad Request", b'{"error":"\'name\' must be a string"}')],
        "data too large": [expected(b"413 Payload Too Large", b'{"error":"Event data larger than 10 bytes"}')],
        "over the rate": [expected(b"429 Too Many Requests", b'{"error":"Over the limit of 1 events per second"}')],
        "head too large": [expected(b"431 Request Header Fields Too Large", b'{"error":"Request head too large"}', close=True)],
    }  # fmt: skip


async def test_frames_pipelined_after_an_upgrade_are_read_after_its_101_is_written() -> None:
    """A client that sends a frame in the same packet as its upgrade gets its 101 and
    ``connection_established`` first, whatever the frame: a close frame there ends the socket
    after them, not instead of them, and a ping's pong follows them."""
    config = ServerConfig(apps=(AppConfig(id="1", key="k", secret=Secret("s")),))
    triggers = create_app(config)[NODE].triggers
    head = b"GET /app/k?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    ping, close = b"\x89\x80\0\0\0\0", b"\x88\x82\0\0\0\0\x03\xe8"  # masked with zeros; close 1000
    for tail, last in ((close, b"\x88"), (ping, b"\x8a")):
        t: Any = Transport()
        t.set_protocol = lambda protocol: None
        t.abort = t.close
        t.get_write_buffer_size = lambda: 0
        d = FrontDoor(triggers, lambda: None)  # type: ignore[arg-type,return-value]
        d.connection_made(t)
        d.data_received(head + tail)
        await asyncio.sleep(0)  # the outbox's turn
        assert t.writes[0].startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert b'"pusher:connection_established"' in t.writes[0]
        assert t.writes[-1].startswith(last)
