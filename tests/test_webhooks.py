"""The webhook engine against a real aiohttp receiver on a loopback port.

Signatures are checked with the official Pusher SDK's validator, not with our own code.
Delays and backoffs are shrunk through the constructor so the suite stays fast.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pusher  # type: ignore[import-untyped]
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from reverbpy.config import AppConfig, Secret, WebhookTarget
from reverbpy.webhooks import Webhooks

APP_ID, KEY, SECRET = "42", "hook-key", "hook-secret"


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: bytes
    peer: tuple[str, int]
    at: float

    @property
    def payload(self) -> dict[str, Any]:
        """The body as the official SDK accepts it (key and HMAC checked); fails otherwise."""
        sdk = pusher.Pusher(app_id=APP_ID, key=KEY, secret=SECRET)
        data = sdk.validate_webhook(
            self.headers["X-Pusher-Key"], self.headers["X-Pusher-Signature"], self.body
        )
        assert data is not None, f"signature refused by the SDK: {self.headers} {self.body!r}"
        return dict(data)

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(self.payload["events"])


@dataclass
class Receiver:
    """Records every POST; answers ``script`` statuses first, then 200; can hang on demand."""

    url: str = ""
    calls: list[Call] = field(default_factory=list)
    script: list[int] = field(default_factory=list)
    hang: asyncio.Event | None = None
    hang_paths: tuple[str, ...] = ("/",)
    attempts: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        body = await request.read()
        if self.hang is not None and request.path.startswith(self.hang_paths):
            await self.hang.wait()
        if self.script:
            status = self.script.pop(0)
            return web.Response(status=status, text="nope")
        peer = request.transport.get_extra_info("peername") if request.transport else ("", 0)
        self.calls.append(Call(request.path, dict(request.headers), body, peer, time.monotonic()))
        return web.Response(text="ok")

    def events(self, path: str | None = None) -> list[dict[str, Any]]:
        return [e for c in self.calls if path is None or c.path == path for e in c.events]

    async def until(self, check: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"timed out; received {self.events()}"
            await asyncio.sleep(0.01)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", rec.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    rec.url = f"http://127.0.0.1:{server.port}"
    yield rec
    if rec.hang is not None:
        rec.hang.set()
    await server.close()


@pytest.fixture
async def engine() -> AsyncIterator[Callable[..., Awaitable[Webhooks]]]:
    started: list[Webhooks] = []

    async def make(**kw: Any) -> Webhooks:
        kw.setdefault("vacate_delay", 0.2)
        kw.setdefault("backoff", 0.02)
        w = Webhooks(**kw)
        await w.start()
        started.append(w)
        return w

    yield make
    for w in started:
        await w.close(grace=0.5)


def make_app(rec: Receiver, *targets: WebhookTarget, batch_ms: int = 0) -> AppConfig:
    return AppConfig(
        id=APP_ID,
        key=KEY,
        secret=Secret(SECRET),
        webhooks=targets or (WebhookTarget(f"{rec.url}/hook"),),
        webhook_batch_ms=batch_ms,
    )


def occupied(channel: str = "room") -> dict[str, Any]:
    return {"name": "channel_occupied", "channel": channel}


def vacated(channel: str = "room") -> dict[str, Any]:
    return {"name": "channel_vacated", "channel": channel}


def member(name: str, user_id: str, channel: str = "presence-room") -> dict[str, Any]:
    return {"name": name, "channel": channel, "user_id": user_id}


async def test_post_is_signed_and_shaped_like_pusher(receiver: Receiver, engine: Any) -> None:
    target = WebhookTarget(f"{receiver.url}/hook?token=t0p", headers=(("X-Extra", "yes"),))
    app = make_app(receiver, target)
    hooks = await engine()
    before = int(time.time() * 1000)
    event = {
        "name": "client_event",
        "channel": "private-chat",
        "event": "client-typing",
        "data": '{"who":"ann"}',
        "socket_id": "1.2",
    }
    hooks.emit(app, event)
    await receiver.until(lambda: len(receiver.calls) == 1)

    call = receiver.calls[0]
    assert call.path == "/hook"
    assert call.headers["Content-Type"] == "application/json"
    assert call.headers["X-Pusher-Key"] == KEY
    assert call.headers["X-Extra"] == "yes"
    payload = call.payload  # the SDK validator accepts key and signature
    assert payload["events"] == [event]
    assert before <= payload["time_ms"] <= int(time.time() * 1000)
    assert call.body == orjson.dumps(payload)  # compact JSON, signed as sent
    assert (hooks.delivered, hooks.failed, hooks.retried, hooks.dropped) == (1, 0, 0, 0)


async def test_a_wrong_secret_is_refused_by_the_sdk(receiver: Receiver, engine: Any) -> None:
    app = AppConfig(
        id=APP_ID, key=KEY, secret=Secret("other"), webhooks=(WebhookTarget(receiver.url),)
    )
    hooks = await engine()
    hooks.emit(app, occupied())
    await receiver.until(lambda: len(receiver.calls) == 1)
    call = receiver.calls[0]
    sdk = pusher.Pusher(app_id=APP_ID, key=KEY, secret=SECRET)
    assert sdk.validate_webhook(KEY, call.headers["X-Pusher-Signature"], call.body) is None


async def test_targets_filter_by_event_type_and_channel(receiver: Receiver, engine: Any) -> None:
    app = make_app(
        receiver,
        WebhookTarget(f"{receiver.url}/occupied", event_types=frozenset({"channel_occupied"})),
        WebhookTarget(f"{receiver.url}/private", channel_prefix="private-"),
        WebhookTarget(f"{receiver.url}/suffix", channel_suffix="-eu"),
    )
    hooks = await engine()
    hooks.emit(app, occupied("private-a"))
    hooks.emit(app, occupied("public-eu"))
    hooks.emit(app, {"name": "cache_miss", "channel": "private-b"})
    await receiver.until(lambda: len(receiver.calls) == 5)
    assert receiver.events("/occupied") == [occupied("private-a"), occupied("public-eu")]
    assert sorted(e["channel"] for e in receiver.events("/private")) == ["private-a", "private-b"]
    assert receiver.events("/suffix") == [occupied("public-eu")]


async def test_batching_window_sends_one_post(receiver: Receiver, engine: Any) -> None:
    app = make_app(receiver, batch_ms=150)
    hooks = await engine()
    t0 = time.monotonic()
    for ch in ("a", "b", "c"):
        hooks.emit(app, occupied(ch))
    await receiver.until(lambda: len(receiver.calls) == 1)
    assert receiver.calls[0].at - t0 >= 0.14
    assert receiver.calls[0].events == [occupied("a"), occupied("b"), occupied("c")]
    hooks.emit(app, occupied("d"))
    await receiver.until(lambda: len(receiver.calls) == 2)
    assert receiver.calls[1].events == [occupied("d")]
    assert hooks.delivered == 4


async def test_without_batching_each_event_is_one_post_in_order(
    receiver: Receiver, engine: Any
) -> None:
    app = make_app(receiver)
    hooks = await engine()
    for ch in ("a", "b", "c"):
        hooks.emit(app, occupied(ch))
    await receiver.until(lambda: len(receiver.calls) == 3)
    assert [c.events for c in receiver.calls] == [[occupied("a")], [occupied("b")], [occupied("c")]]


async def test_a_full_batch_goes_out_before_its_window(receiver: Receiver, engine: Any) -> None:
    app = make_app(receiver, batch_ms=10_000)
    hooks = await engine(max_batch=2)
    for ch in ("a", "b", "c"):
        hooks.emit(app, occupied(ch))
    await receiver.until(lambda: len(receiver.calls) == 1)
    assert receiver.calls[0].events == [occupied("a"), occupied("b")]


async def test_vacated_is_sent_after_the_delay(receiver: Receiver, engine: Any) -> None:
    app = make_app(receiver)
    hooks = await engine(vacate_delay=0.3)
    hooks.emit(app, occupied())
    t0 = time.monotonic()
    hooks.emit(app, vacated())
    hooks.emit(app, member("member_removed", "7"))
    await receiver.until(lambda: len(receiver.calls) == 3)
    assert [c.events[0]["name"] for c in receiver.calls] == [
        "channel_occupied",
        "channel_vacated",
        "member_removed",
    ]
    assert receiver.calls[1].at - t0 >= 0.29
    # time_ms is when the event happened, not when the delay ran out
    assert receiver.calls[1].payload["time_ms"] <= (time.time() - 0.25) * 1000


async def test_a_quick_return_cancels_both_events(receiver: Receiver, engine: Any) -> None:
    app = make_app(receiver)
    hooks = await engine(vacate_delay=0.3)
    hooks.emit(app, vacated("room"))
    hooks.emit(app, member("member_removed", "7"))
    hooks.emit(app, member("member_removed", "8"))
    await asyncio.sleep(0.1)
    hooks.emit(app, occupied("room"))  # the channel is back: no vacated, no occupied
    hooks.emit(app, member("member_added", "7"))  # user 7 is back
    hooks.emit(app, member("member_added", "9"))  # someone else: a real change
    hooks.emit(app, occupied("other"))  # another channel: a real change
    await asyncio.sleep(0.5)
    await receiver.until(lambda: len(receiver.calls) == 3)
    await asyncio.sleep(0.1)
    got = sorted((e["name"], e["channel"], e.get("user_id")) for e in receiver.events())
    assert got == [
        ("channel_occupied", "other", None),
        ("member_added", "presence-room", "9"),
        ("member_removed", "presence-room", "8"),
    ]
    assert hooks.suppressed == 4


async def test_a_return_after_the_delay_is_a_new_occupation(
    receiver: Receiver, engine: Any
) -> None:
    app = make_app(receiver)
    hooks = await engine(vacate_delay=0.1)
    hooks.emit(app, vacated())
    await receiver.until(lambda: len(receiver.calls) == 1)
    hooks.emit(app, occupied())
    await receiver.until(lambda: len(receiver.calls) == 2)
    assert [c.events[0]["name"] for c in receiver.calls] == ["channel_vacated", "channel_occupied"]


async def test_a_worker_leaves_its_lane_in_the_step_that_ends_it(receiver: Receiver) -> None:
    """A worker that found its lane's queue empty is gone from the lane at once: an event
    queued before its done callback runs (a loop turn later) gets a worker of its own instead
    of waiting, stranded, for the next event (the race behind a lost channel_occupied)."""
    hooks = Webhooks(vacate_delay=0)
    app = make_app(receiver)
    hooks.emit(app, occupied())  # not started: queued, no worker yet
    (lane,) = hooks._lanes.values()
    await hooks.start()
    try:
        worker = asyncio.get_running_loop().create_task(hooks._work(lane))
        lane.workers.add(worker)  # as _wake does, but with no done callback to tidy up
        await worker
        assert worker not in lane.workers
        await receiver.until(lambda: len(receiver.calls) == 1)  # by this worker or start's
    finally:
        await hooks.close(grace=0.5)


async def test_retries_with_the_same_signed_body(receiver: Receiver, engine: Any) -> None:
    receiver.script = [500, 503]
    app = make_app(receiver)
    hooks = await engine(backoff=0.05)
    t0 = time.monotonic()
    hooks.emit(app, occupied())
    await receiver.until(lambda: len(receiver.calls) == 1)
    # backoff 0.05 then 0.1
    assert receiver.calls[0].at - t0 >= 0.14
    assert receiver.attempts == 3
    assert receiver.calls[0].events == [occupied()]
    assert (hooks.delivered, hooks.retried, hooks.failed) == (1, 2, 0)


async def test_a_timeout_is_retried(receiver: Receiver, engine: Any) -> None:
    receiver.hang = asyncio.Event()
    app = make_app(receiver)
    hooks = await engine(timeout=0.2, backoff=0.05)
    hooks.emit(app, occupied())
    await receiver.until(lambda: receiver.attempts >= 2)
    receiver.hang.set()
    await receiver.until(lambda: hooks.delivered == 1)
    assert hooks.retried >= 1


async def test_gives_up_after_retry_for(
    receiver: Receiver, engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.script = [500] * 100
    app = make_app(receiver)
    hooks = await engine(backoff=0.02, retry_for=0.3)
    with caplog.at_level(logging.WARNING, "reverbpy.webhooks"):
        hooks.emit(app, occupied())
        await receiver.until(lambda: hooks.failed == 1)
    assert hooks.delivered == 0
    assert 3 <= receiver.attempts <= 6  # 0.02, 0.04, 0.08, 0.16 ... within 0.3 s
    assert hooks.retried == receiver.attempts - 1
    assert "given up" in caplog.text
    assert SECRET not in caplog.text


async def test_a_refused_connection_is_retried_then_fails(
    engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.conftest import free_port

    url = f"http://user:pw@127.0.0.1:{free_port()}/hook?token=t0p"
    app = AppConfig(id=APP_ID, key=KEY, secret=Secret(SECRET), webhooks=(WebhookTarget(url),))
    hooks = await engine(backoff=0.02, retry_for=0.2)
    with caplog.at_level(logging.WARNING, "reverbpy.webhooks"):
        hooks.emit(app, occupied())
        deadline = time.monotonic() + 3
        while hooks.failed == 0:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
    assert hooks.retried >= 2
    assert "ClientConnectorError" in caplog.text
    for secret in (SECRET, "t0p", "pw"):  # no secret, no URL credentials in the log
        assert secret not in caplog.text


async def test_one_session_keeps_the_connection_alive(receiver: Receiver, engine: Any) -> None:
    app = make_app(receiver)
    hooks = await engine()
    # one at a time, so the pool never needs a second socket
    hooks.emit(app, occupied("a"))
    await receiver.until(lambda: len(receiver.calls) == 1)
    await asyncio.sleep(0.02)
    hooks.emit(app, occupied("b"))
    await receiver.until(lambda: len(receiver.calls) == 2)
    await asyncio.sleep(0.02)
    hooks.emit(app, occupied("c"))
    await receiver.until(lambda: len(receiver.calls) == 3)
    assert len({c.peer for c in receiver.calls}) == 1  # same client port: one TCP connection


async def test_full_queue_drops_and_counts(
    receiver: Receiver, engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.hang = asyncio.Event()
    app = make_app(receiver)
    hooks = await engine(max_queue=3, concurrency=1, timeout=30)
    with caplog.at_level(logging.WARNING, "reverbpy.webhooks"):
        hooks.emit(app, occupied("in-flight"))
        await receiver.until(lambda: receiver.attempts == 1)
        t0 = time.perf_counter()
        for i in range(1000):
            hooks.emit(app, occupied(f"c{i}"))
        elapsed = time.perf_counter() - t0
    assert elapsed < 0.5  # emit only appends; nothing waited on the hanging receiver
    assert hooks.dropped == 997
    drops = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drops) == 1  # rate-limited: one line, not 997
    assert SECRET not in caplog.text
    receiver.hang.set()
    await receiver.until(lambda: hooks.delivered == 4)
    assert [e["channel"] for e in receiver.events()] == ["in-flight", "c0", "c1", "c2"]


async def test_a_hanging_target_does_not_hold_up_another(receiver: Receiver, engine: Any) -> None:
    receiver.hang = asyncio.Event()
    receiver.hang_paths = ("/slow",)
    app = make_app(
        receiver, WebhookTarget(f"{receiver.url}/slow"), WebhookTarget(f"{receiver.url}/fast")
    )
    hooks = await engine(timeout=30)
    for ch in ("a", "b", "c", "d", "e", "f"):
        hooks.emit(app, occupied(ch))
    await receiver.until(lambda: len(receiver.events("/fast")) == 6, timeout=1.0)
    assert receiver.events("/slow") == []


async def test_close_sends_held_events_at_once(receiver: Receiver) -> None:
    app = make_app(receiver, batch_ms=60_000)
    hooks = Webhooks(vacate_delay=60)
    await hooks.start()
    hooks.emit(app, vacated())
    hooks.emit(app, occupied("other"))
    t0 = time.monotonic()
    await hooks.close(grace=2)
    assert time.monotonic() - t0 < 1
    assert sorted(e["name"] for e in receiver.events()) == ["channel_occupied", "channel_vacated"]
    assert hooks.delivered == 2
    hooks.emit(app, occupied())  # after close: counted, not raised
    assert hooks.dropped == 1


async def test_close_gives_up_after_grace(receiver: Receiver) -> None:
    receiver.hang = asyncio.Event()
    app = make_app(receiver)
    hooks = Webhooks(timeout=30, concurrency=1)
    await hooks.start()
    hooks.emit(app, occupied("a"))
    hooks.emit(app, occupied("b"))
    await receiver.until(lambda: receiver.attempts == 1)
    t0 = time.monotonic()
    await hooks.close(grace=0.2)
    assert 0.15 <= time.monotonic() - t0 < 1
    assert (hooks.delivered, hooks.failed) == (0, 2)


async def test_events_emitted_before_start_wait_for_it(receiver: Receiver) -> None:
    app = make_app(receiver)
    hooks = Webhooks()
    hooks.emit(app, occupied())
    await asyncio.sleep(0.05)
    assert receiver.calls == []
    await hooks.start()
    await receiver.until(lambda: len(receiver.calls) == 1)
    await hooks.close()


async def test_emit_never_raises(
    receiver: Receiver, engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(receiver)
    hooks = await engine()
    with caplog.at_level(logging.WARNING, "reverbpy.webhooks"):
        hooks.emit(app, {"channel": "no-name"})
        hooks.emit(app, {"name": "cache_miss", "channel": "x", "data": object()})  # not JSON
        await receiver.until(lambda: hooks.failed == 1)
    hooks.emit(app, occupied())
    await receiver.until(lambda: hooks.delivered == 1)
    assert SECRET not in caplog.text


def test_emit_outside_a_loop_does_not_raise() -> None:
    hooks = Webhooks()
    hooks.emit(make_app(Receiver(url="http://127.0.0.1:9")), vacated())  # needs a loop: logged
