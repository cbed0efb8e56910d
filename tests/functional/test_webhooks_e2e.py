"""Webhooks end to end: a real reverbpy process POSTs to a real aiohttp receiver in the test.

Every body is checked with the official Pusher SDK's webhook validator. The server runs with its
real 3 s vacate delay, so the tests that wait for it take a few seconds each.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pusher  # type: ignore[import-untyped]
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import ServerProcess, start_server
from tests.functional.raw import Client, api, connect

VACATE_DELAY = 3.0


@dataclass
class Hook:
    path: str
    headers: dict[str, str]
    events: list[dict[str, Any]]
    at: float


@dataclass
class Receiver:
    """Records the events of every POST the SDK accepts; POSTs it refuses fail the test."""

    sdk: pusher.Pusher
    url: str = ""
    hooks: list[Hook] = field(default_factory=list)
    refused: list[bytes] = field(default_factory=list)
    hang: asyncio.Event | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        data = self.sdk.validate_webhook(
            request.headers.get("X-Pusher-Key", ""),
            request.headers.get("X-Pusher-Signature", ""),
            body,
        )
        if data is None or request.headers.get("Content-Type") != "application/json":
            self.refused.append(body)
            return web.Response(status=401)
        self.hooks.append(
            Hook(request.path, dict(request.headers), data["events"], time.monotonic())
        )
        if self.hang is not None:
            await self.hang.wait()
        return web.Response(text="ok")

    def events(self, channel: str | None = None, path: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for h in self.hooks
            if path is None or h.path == path
            for e in h.events
            if channel is None or e.get("channel") == channel
        ]

    def names(self, channel: str) -> list[str]:
        return [e["name"] for e in self.events(channel)]

    async def until(self, check: Callable[[], bool], timeout: float = 3.0) -> float:
        """Wait for ``check``; returns when it became true (monotonic)."""
        deadline = time.monotonic() + timeout
        while not check():
            assert not self.refused, f"SDK refused: {self.refused}"
            assert time.monotonic() < deadline, f"timed out; received {self.events()}"
            await asyncio.sleep(0.02)
        return time.monotonic()


Start = Callable[..., Awaitable[tuple[ServerProcess, Receiver]]]


@pytest.fixture
async def hooked(tmp_path: Path) -> AsyncIterator[Start]:
    """``await hooked(targets, **env)``: a receiver, then a server whose webhooks point at it.

    Each target is a webhook as REVERB_APP_WEBHOOKS takes it, with ``path`` instead of ``url``.
    """
    cleanup: list[Callable[[], Awaitable[None]]] = []

    async def start(
        targets: list[dict[str, Any]] | None = None, **env: str
    ) -> tuple[ServerProcess, Receiver]:
        receiver = Receiver(
            pusher.Pusher(app_id="123456", key="reverb-key", secret="reverb-secret")
        )
        app = web.Application()
        app.router.add_post("/{tail:.*}", receiver.handle)
        site = TestServer(app, host="127.0.0.1")
        await site.start_server()
        receiver.url = f"http://127.0.0.1:{site.port}"
        webhooks = [
            {
                "url": receiver.url + t.get("path", "/hook"),
                **{k: v for k, v in t.items() if k != "path"},
            }
            for t in targets or [{}]
        ]
        extra = {"REVERB_APP_WEBHOOKS": orjson.dumps(webhooks).decode(), **env}
        servers: list[ServerProcess] = []

        async def stop() -> None:
            if receiver.hang is not None:
                receiver.hang.set()
            for server in servers:  # stopping blocks; off the loop so the receiver still answers
                await asyncio.to_thread(server.stop)
            await site.close()

        cleanup.append(stop)
        servers.append(await asyncio.to_thread(start_server, tmp_path, extra_env=extra))
        return servers[0], receiver

    yield start
    for stop in cleanup:
        await stop()


def presence_data(user_id: str) -> str:
    return orjson.dumps({"user_id": user_id, "user_info": {"name": user_id}}).decode()


async def join(
    http: aiohttp.ClientSession, server: ServerProcess, channel: str, user: str | None = None
) -> Client:
    c = await connect(http, server)
    private = channel.startswith(("private-", "presence-"))
    reply = await c.subscribe(
        channel,
        secret=server.secret if private else "",
        key=server.key,
        channel_data=presence_data(user) if user is not None else None,
    )
    assert reply["event"] == "pusher_internal:subscription_succeeded", reply
    return c


async def test_occupied_then_vacated_after_the_delay(
    http: aiohttp.ClientSession, hooked: Start
) -> None:
    server, rec = await hooked(
        [{"event_types": ["channel_occupied", "channel_vacated"], "headers": {"X-Extra": "1"}}]
    )
    a = await join(http, server, "news")
    await rec.until(lambda: rec.names("news") == ["channel_occupied"])
    assert rec.events("news")[0] == {"name": "channel_occupied", "channel": "news"}
    assert rec.hooks[0].headers["X-Extra"] == "1"
    assert rec.hooks[0].headers["X-Pusher-Key"] == server.key
    b = await join(http, server, "news")  # 1 -> 2 subscribers: no second occupied
    await a.send("pusher:unsubscribe", {"channel": "news"})  # 2 -> 1: not vacated yet
    await asyncio.sleep(0.3)
    await b.ws.close()
    left = time.monotonic()
    arrived = await rec.until(lambda: "channel_vacated" in rec.names("news"), timeout=6)
    assert VACATE_DELAY - 0.5 <= arrived - left <= VACATE_DELAY + 2.5
    assert rec.names("news") == ["channel_occupied", "channel_vacated"]


async def test_members_added_once_and_removed_after_the_delay(
    http: aiohttp.ClientSession, hooked: Start
) -> None:
    server, rec = await hooked([{"event_types": ["member_added", "member_removed"]}])
    ann1 = await join(http, server, "presence-room", "ann")
    ann2 = await join(http, server, "presence-room", "ann")  # second socket, same user
    bob = await join(http, server, "presence-room", "bob")
    await rec.until(lambda: len(rec.events()) == 2)
    await asyncio.sleep(0.3)
    assert rec.events() == [
        {"name": "member_added", "channel": "presence-room", "user_id": "ann"},
        {"name": "member_added", "channel": "presence-room", "user_id": "bob"},
    ]
    await ann1.ws.close()  # ann is still there on another socket
    await bob.ws.close()
    left = time.monotonic()
    arrived = await rec.until(lambda: len(rec.events()) == 3, timeout=6)
    assert arrived - left >= VACATE_DELAY - 0.5
    assert rec.events()[2] == {
        "name": "member_removed",
        "channel": "presence-room",
        "user_id": "bob",
    }
    await asyncio.sleep(0.3)
    assert len(rec.events()) == 3
    await ann2.ws.close()


async def test_client_events_on_private_and_presence_channels(
    http: aiohttp.ClientSession, hooked: Start
) -> None:
    server, rec = await hooked([{"event_types": ["client_event"]}])
    a = await join(http, server, "private-chat")
    b = await join(http, server, "private-chat")
    await a.send("client-typing", {"who": "ann"}, channel="private-chat")
    relayed = await b.recv_event("client-typing")
    assert relayed["channel"] == "private-chat"
    p = await join(http, server, "presence-chat", "ann")
    q = await join(http, server, "presence-chat", "bob")
    await p.send("client-wave", "hi", channel="presence-chat")
    await rec.until(lambda: len(rec.events()) == 2)
    private, presence = rec.events()
    assert private == {
        "name": "client_event",
        "channel": "private-chat",
        "event": "client-typing",
        "data": '{"who":"ann"}',
        "socket_id": a.socket_id,
    }
    assert orjson.loads(private["data"]) == {"who": "ann"}
    assert presence["event"] == "client-wave"
    assert presence["socket_id"] == p.socket_id
    assert presence["user_id"] == "ann"
    assert isinstance(presence["data"], str)
    assert (await q.recv_event("client-wave"))["data"] == "hi"


async def test_cache_miss_once_per_empty_cache(http: aiohttp.ClientSession, hooked: Start) -> None:
    server, rec = await hooked([{"event_types": ["cache_miss"]}])
    c = await join(http, server, "cache-x")
    assert (await c.recv())["event"] == "pusher:cache_miss"
    d = await join(http, server, "cache-x")  # de-duplicated: still empty, already reported
    assert (await d.recv())["event"] == "pusher:cache_miss"
    await rec.until(lambda: len(rec.events()) == 1)
    await asyncio.sleep(0.3)
    assert rec.events() == [{"name": "cache_miss", "channel": "cache-x"}]


async def test_subscription_count(http: aiohttp.ClientSession, hooked: Start) -> None:
    server, rec = await hooked(
        [{"event_types": ["subscription_count"]}], REVERB_APP_SUBSCRIPTION_COUNT_EVENTS="true"
    )
    a = await join(http, server, "counted")
    b = await join(http, server, "counted")  # kept: a collected socket would leave the channel
    await rec.until(lambda: len(rec.events()) == 2)
    await a.send("pusher:unsubscribe", {"channel": "counted"})
    await rec.until(lambda: len(rec.events()) == 3)
    assert rec.events() == [
        {"name": "subscription_count", "channel": "counted", "subscription_count": n}
        for n in (1, 2, 1)
    ]
    await b.ws.close()


async def test_event_type_and_channel_filters(http: aiohttp.ClientSession, hooked: Start) -> None:
    server, rec = await hooked(
        [
            {"path": "/occupied", "event_types": ["channel_occupied"]},
            {
                "path": "/private",
                "event_types": ["channel_occupied", "channel_vacated"],
                "filter": {"channel_name_starts_with": "private-"},
            },
            {
                "path": "/eu",
                "event_types": ["channel_occupied"],
                "filter": {"channel_name_ends_with": "-eu"},
            },
        ]
    )
    clients = [await join(http, server, ch) for ch in ("news", "private-orders", "prices-eu")]
    await rec.until(lambda: len(rec.events()) == 5)
    await asyncio.sleep(0.3)
    assert [e["channel"] for e in rec.events(path="/occupied")] == [
        "news",
        "private-orders",
        "prices-eu",
    ]
    assert rec.events(path="/private") == [
        {"name": "channel_occupied", "channel": "private-orders"}
    ]
    assert rec.events(path="/eu") == [{"name": "channel_occupied", "channel": "prices-eu"}]
    for c in clients:
        await c.ws.close()


async def test_batching_window(http: aiohttp.ClientSession, hooked: Start) -> None:
    server, rec = await hooked(
        [{"event_types": ["channel_occupied"]}], REVERB_APP_WEBHOOK_BATCH_MS="400"
    )
    c = await connect(http, server)
    for ch in ("b1", "b2", "b3"):
        await c.send("pusher:subscribe", {"channel": ch})
    await rec.until(lambda: len(rec.events()) == 3)
    assert len(rec.hooks) == 1
    assert [e["channel"] for e in rec.hooks[0].events] == ["b1", "b2", "b3"]


async def test_a_quick_return_sends_nothing(http: aiohttp.ClientSession, hooked: Start) -> None:
    server, rec = await hooked(
        [{"event_types": ["channel_occupied", "channel_vacated", "member_added", "member_removed"]}]
    )
    c = await join(http, server, "presence-lobby", "ann")
    await rec.until(lambda: len(rec.events()) == 2)
    await c.send("pusher:unsubscribe", {"channel": "presence-lobby"})
    await asyncio.sleep(0.5)
    again = await c.subscribe(
        "presence-lobby", secret=server.secret, key=server.key, channel_data=presence_data("ann")
    )
    assert again["event"] == "pusher_internal:subscription_succeeded"
    await asyncio.sleep(VACATE_DELAY + 1.5)
    assert sorted(rec.names("presence-lobby")) == ["channel_occupied", "member_added"]
    # a real leave still reaches the receiver once the delay is over
    await c.ws.close()
    await rec.until(lambda: len(rec.events()) == 4, timeout=6)
    assert sorted(rec.names("presence-lobby")[2:]) == ["channel_vacated", "member_removed"]


async def test_a_hanging_receiver_does_not_delay_broadcasts(
    http: aiohttp.ClientSession, hooked: Start
) -> None:
    server, rec = await hooked()
    rec.hang = asyncio.Event()  # every webhook POST now hangs (the server's timeout is 5 s)
    subscribers = [await join(http, server, "live") for _ in range(3)]
    await rec.until(lambda: len(rec.hooks) >= 1)
    for i in range(5):
        t0 = time.monotonic()
        status, _ = await api(
            http, server, "POST", "/events", {"name": "tick", "channels": ["live"], "data": str(i)}
        )
        assert status == 200
        for s in subscribers:
            msg = await s.recv_event("tick", timeout=2)
            assert msg["data"] == str(i)
        assert time.monotonic() - t0 < 0.5
    # joining and leaving (more webhooks queued behind the hung ones) stays quick too
    t0 = time.monotonic()
    for _ in range(5):
        c = await join(http, server, "live")
        await c.ws.close()
    assert time.monotonic() - t0 < 2


async def test_shutdown_sends_held_events_at_once(
    http: aiohttp.ClientSession, hooked: Start
) -> None:
    server, rec = await hooked([{"event_types": ["channel_occupied", "channel_vacated"]}])
    c = await join(http, server, "leaving")
    await rec.until(lambda: len(rec.events()) == 1)
    t0 = time.monotonic()
    await asyncio.to_thread(server.stop)  # SIGTERM: sockets close, so the channel is vacated
    assert rec.names("leaving") == ["channel_occupied", "channel_vacated"]
    assert time.monotonic() - t0 < VACATE_DELAY  # not held for the delay: nobody can come back
    assert server.proc is not None and server.proc.returncode == 0
    await c.closed()
