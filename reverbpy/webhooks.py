"""Webhook delivery (Pusher ``server_api/webhooks.md``; pusher-protocol.md section 4).

The hub calls ``Webhooks.emit`` from inside a broadcast, so ``emit`` only does bookkeeping: it
appends to an in-memory queue and returns. Everything that can wait (HTTP, retries, timers)
happens in background tasks.

How an event travels:

1. ``channel_vacated`` and ``member_removed`` are held for ``vacate_delay`` seconds. A matching
   ``channel_occupied`` (same app and channel) or ``member_added`` (same app, channel and user)
   inside that window cancels both: from the receiver's point of view nothing changed. This is
   Pusher's reconnect grace, and it also keeps a quick leave-and-return from arriving out of
   order.
2. Each target (``WebhookTarget``) of the app that ``wants()`` the event gets its own copy in its
   own *lane*. A lane has its own bounded queue and its own worker(s), so a receiver that is
   down or slow only delays itself, never another target or another app.
3. With ``app.webhook_batch_ms > 0`` a lane collects events for that window and sends them in
   one POST; otherwise each event is one POST.
4. A worker POSTs ``{"time_ms", "events"}`` signed with the app secret. A non-2xx answer, a
   connection error or a timeout is retried with exponential backoff for ``retry_for`` seconds
   (Pusher: 5 minutes), with the same body bytes each time.

Counters: ``delivered``/``failed``/``dropped`` count events (a batch of three is three),
``retried`` counts repeated POSTs and ``suppressed`` counts the events cancelled in pairs by a
quick return (a vacated and its occupied are two).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from yarl import URL

from reverbpy.config import AppConfig, WebhookTarget
from reverbpy.console.feed import Feed

log = logging.getLogger("reverbpy.webhooks")

# Held events and the events that cancel them: "left" -> "came back".
_RETURNS = {"channel_occupied": "channel_vacated", "member_added": "member_removed"}
_HELD = frozenset(_RETURNS.values())

_HeldKey = tuple[str, str, str, str]  # app id, event name, channel, user id ("" for channels)


@dataclass(slots=True)
class _Delivery:
    """One POST: its body is built once and reused by every retry, so the signature holds."""

    events: list[dict[str, Any]]
    time_ms: int
    body: bytes = b""
    attempts: int = 0
    first_attempt: float | None = None


@dataclass(slots=True)
class _Held:
    app: AppConfig
    event: dict[str, Any]
    time_ms: int
    timer: asyncio.TimerHandle


@dataclass(slots=True, eq=False)
class _Lane:
    """One app + target: its queue, its open batch and its workers."""

    app: AppConfig
    target: WebhookTarget
    headers: dict[str, str]
    where: str
    """The target URL without credentials or query, safe for logs."""
    queue: deque[_Delivery] = field(default_factory=deque)
    held: int = 0
    """Events waiting in ``queue`` and ``batch`` (not in flight); bounded by ``max_queue``."""
    batch: list[dict[str, Any]] = field(default_factory=list)
    batch_time_ms: int = 0
    batch_timer: asyncio.TimerHandle | None = None
    workers: set[asyncio.Task[None]] = field(default_factory=set)


class _ThrottledLog:
    """At most one line per key per ``every`` seconds, so a dead receiver or a flood of drops
    cannot flood the log; the lines that were skipped are counted in the next one."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.every:
            self._skipped[key] = self._skipped.get(key, 0) + 1
            return
        self._last[key] = now
        skipped = self._skipped.pop(key, 0)
        if skipped:
            msg, args = msg + " (%d similar messages suppressed)", (*args, skipped)
        log.warning(msg, *args, exc_info=exc_info)


def sign(secret: str, body: bytes) -> str:
    """``X-Pusher-Signature``: lowercase hex HMAC-SHA256 of the exact body bytes."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _safe_url(url: str) -> str:
    # Target URLs may carry credentials (user:pass@ or ?token=); logs must not.
    try:
        return str(URL(url).with_user(None).with_query(None).with_fragment(None))
    except ValueError:
        return "<invalid url>"


class Webhooks:
    """Accepts events from the hub without ever blocking it; delivers them in the background.

    All options are keyword-only; times are in seconds:

    - ``vacate_delay``: how long ``channel_vacated``/``member_removed`` wait for a return (3.0).
    - ``retry_for``: how long a failing POST is retried, counted from its first attempt (300.0;
      SDK validators refuse bodies whose ``time_ms`` is over 5 minutes old anyway).
    - ``backoff``/``max_backoff``: first retry delay, doubled per attempt up to the cap (1.0, 60.0).
    - ``timeout``: per request, connect to last byte (5.0).
    - ``max_queue``: events waiting per target; beyond it new events are dropped (10 000).
    - ``concurrency``: POSTs in flight per target (1: a target gets its events in order, which
      matters for a ``member_removed`` that follows its ``member_added``; more raises
      throughput for a slow receiver but, as with Pusher, order is then not guaranteed).
    - ``max_batch``: events per batched POST; a full batch goes out before its window ends (100).
    - ``clock``: wall clock for ``time_ms``, replaceable in tests.
    """

    def __init__(
        self,
        *,
        vacate_delay: float = 3.0,
        retry_for: float = 300.0,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        timeout: float = 5.0,
        max_queue: int = 10_000,
        concurrency: int = 1,
        max_batch: int = 100,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.vacate_delay = vacate_delay
        self.retry_for = retry_for
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.max_queue = max_queue
        self.concurrency = max(1, concurrency)
        self.max_batch = max(1, max_batch)
        self.clock = clock
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self.retried = 0
        self.suppressed = 0
        self._lanes: dict[tuple[str, int], _Lane] = {}
        self._held: dict[_HeldKey, _Held] = {}
        self._session: aiohttp.ClientSession | None = None
        self._closing = False
        self._log = _ThrottledLog()
        self.observer: Feed | None = None
        """The console's log while a console stream is open (``hub.Hub.observer``)."""

    @property
    def queued(self) -> int:
        """Events waiting to be sent, in every lane (held returns not included)."""
        return sum(lane.held for lane in self._lanes.values())

    # --- the hub's side: synchronous and O(1) ------------------------------------------------

    def emit(self, app: AppConfig, event: dict[str, Any]) -> None:
        """Queue one webhook event (``{"name": ..., "channel": ..., ...}``) for ``app``'s targets.

        Never blocks and never raises: a webhook problem must not break the broadcast that
        caused it.
        """
        try:
            self._emit(app, event)
        except Exception:
            self._log.warning("emit", "webhook event for app %s not queued", app.id, exc_info=True)

    def _emit(self, app: AppConfig, event: dict[str, Any]) -> None:
        if self._closing:
            self._drop(app, "server is shutting down")
            return
        time_ms = int(self.clock() * 1000)
        name = event["name"]
        if name in _RETURNS:
            held = self._held.pop(_held_key(app, event, _RETURNS[name]), None)
            if held is not None:
                held.timer.cancel()
                self.suppressed += 2
                return
        elif name in _HELD and self.vacate_delay > 0 and len(self._held) < self.max_queue:
            # Past max_queue held events, sending at once beats losing them.
            key = _held_key(app, event, name)
            previous = self._held.pop(key, None)
            if previous is not None:  # two leaves without a return between: keep both
                previous.timer.cancel()
                self._route(previous.app, previous.event, previous.time_ms)
            timer = asyncio.get_running_loop().call_later(self.vacate_delay, self._release, key)
            self._held[key] = _Held(app, event, time_ms, timer)
            return
        self._route(app, event, time_ms)

    def _release(self, key: _HeldKey) -> None:
        held = self._held.pop(key, None)
        if held is not None:
            self._route(held.app, held.event, held.time_ms)

    def _route(self, app: AppConfig, event: dict[str, Any], time_ms: int) -> None:
        name, channel = event["name"], event.get("channel")
        for i, target in enumerate(app.webhooks):
            if not target.wants(name, channel):
                continue
            lane = self._lane(app, i, target)
            if lane.held >= self.max_queue:
                self._drop(app, "queue full", lane)
                continue
            lane.held += 1
            if app.webhook_batch_ms <= 0:
                lane.queue.append(_Delivery([event], time_ms))
                self._wake(lane)
                continue
            if not lane.batch:  # a batch is as old as its first event
                lane.batch_time_ms = time_ms
                lane.batch_timer = asyncio.get_running_loop().call_later(
                    app.webhook_batch_ms / 1000, self._close_batch, lane
                )
            lane.batch.append(event)
            if len(lane.batch) >= self.max_batch:
                self._close_batch(lane)

    def _lane(self, app: AppConfig, index: int, target: WebhookTarget) -> _Lane:
        lane = self._lanes.get((app.id, index))
        if lane is None:
            lane = self._lanes[(app.id, index)] = _Lane(app, target, {}, "")
        if lane.app is not app or not lane.headers:
            # First use, or the app was reconfigured: sign with its current key and secret.
            lane.app, lane.target, lane.where = app, target, _safe_url(target.url)
            lane.headers = dict(target.headers)
            lane.headers.update({"Content-Type": "application/json", "X-Pusher-Key": app.key})
        return lane

    def _close_batch(self, lane: _Lane) -> None:
        if lane.batch_timer is not None:
            lane.batch_timer.cancel()
            lane.batch_timer = None
        if lane.batch:
            lane.queue.append(_Delivery(lane.batch, lane.batch_time_ms))
            lane.batch = []
            self._wake(lane)

    def _drop(self, app: AppConfig, why: str, lane: _Lane | None = None) -> None:
        self.dropped += 1
        where = lane.where if lane is not None else "-"
        self._log.warning(
            f"drop:{app.id}:{where}",
            "webhook event dropped (%s): app %s, target %s, %d dropped so far",
            why,
            app.id,
            where,
            self.dropped,
        )

    # --- background delivery ----------------------------------------------------------------

    def _wake(self, lane: _Lane) -> None:
        """Give the lane another worker if it has work and room; before ``start`` it just waits."""
        if self._session is None or not lane.queue or len(lane.workers) >= self.concurrency:
            return
        task = asyncio.get_running_loop().create_task(self._work(lane))
        lane.workers.add(task)
        task.add_done_callback(lane.workers.discard)

    async def _work(self, lane: _Lane) -> None:
        try:
            await self._drain(lane)
        finally:
            # Leave the lane in the same step that found its queue empty: a done callback
            # runs a loop turn later, and a ``_wake`` in between would see this worker still
            # there and start none, stranding the event it queued.
            lane.workers.discard(asyncio.current_task())

    async def _drain(self, lane: _Lane) -> None:
        while lane.queue:
            delivery = lane.queue.popleft()
            lane.held -= len(delivery.events)
            try:
                await self._deliver(lane, delivery)
            except asyncio.CancelledError:
                self.failed += len(delivery.events)
                raise
            except Exception:
                self.failed += len(delivery.events)
                self._log.warning(
                    f"error:{lane.where}", "webhook to %s failed", lane.where, exc_info=True
                )

    async def _deliver(self, lane: _Lane, delivery: _Delivery) -> None:
        assert self._session is not None
        loop = asyncio.get_running_loop()
        if not delivery.body:
            delivery.body = orjson.dumps({"time_ms": delivery.time_ms, "events": delivery.events})
        headers = dict(lane.headers)
        headers["X-Pusher-Signature"] = sign(lane.app.secret.reveal(), delivery.body)
        while True:
            if delivery.first_attempt is None:
                delivery.first_attempt = loop.time()
            else:
                self.retried += 1
            delivery.attempts += 1
            try:
                # No redirects: a 3xx is not a receipt, and the signed body stays with its target.
                async with self._session.post(
                    lane.target.url, data=delivery.body, headers=headers, allow_redirects=False
                ) as resp:
                    await resp.read()  # so the connection goes back to the pool
                    status = resp.status
                problem = None if 200 <= status < 300 else f"HTTP {status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                problem = type(exc).__name__
            if (observer := self.observer) is not None:
                self._observe(observer, lane, delivery, problem or f"HTTP {status}")
            if problem is None:
                self.delivered += len(delivery.events)
                return
            delay = min(self.backoff * 2 ** (delivery.attempts - 1), self.max_backoff)
            if loop.time() + delay - delivery.first_attempt > self.retry_for:
                self.failed += len(delivery.events)
                self._log.warning(
                    f"failed:{lane.where}",
                    "webhook to %s (app %s) given up after %d attempts: %s",
                    lane.where,
                    lane.app.id,
                    delivery.attempts,
                    problem,
                )
                return
            self._log.warning(
                f"retry:{lane.where}",
                "webhook to %s (app %s) failed (%s), retrying in %.1fs",
                lane.where,
                lane.app.id,
                problem,
                delay,
            )
            await asyncio.sleep(delay)

    def _observe(self, observer: Feed, lane: _Lane, delivery: _Delivery, result: str) -> None:
        names = dict.fromkeys(str(e.get("name")) for e in delivery.events)
        channels = dict.fromkeys(str(e["channel"]) for e in delivery.events if "channel" in e)
        observer.record(
            "webhook",
            lane.app.id,
            channels=tuple(channels),
            event=",".join(names),
            detail=f"{result} from {lane.where} (attempt {delivery.attempts})",
        )

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the shared HTTP session (keep-alive) and start on anything queued before."""
        if self._session is not None:
            return
        self._closing = False
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            connector=aiohttp.TCPConnector(limit=100, limit_per_host=self.concurrency * 4),
            skip_auto_headers=("User-Agent",),
            headers={"User-Agent": "reverbpy-webhooks"},
        )
        for lane in self._lanes.values():
            self._wake(lane)

    async def close(self, grace: float = 5.0) -> None:
        """Send what is held, batched and queued within ``grace`` seconds, then stop.

        Held ``channel_vacated``/``member_removed`` go out at once: nobody can return to a
        server that is stopping. What is still unsent after ``grace`` counts as failed.
        """
        self._closing = True
        for key in list(self._held):
            held = self._held.pop(key)
            held.timer.cancel()
            self._route(held.app, held.event, held.time_ms)
        for lane in self._lanes.values():
            self._close_batch(lane)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._session is not None:
            workers = {t for lane in self._lanes.values() for t in lane.workers}
            if not workers or loop.time() >= deadline:
                break
            await asyncio.wait(workers, timeout=deadline - loop.time())
        workers = {t for lane in self._lanes.values() for t in lane.workers}
        for task in workers:
            task.cancel()
        for task in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        lost = sum(lane.held for lane in self._lanes.values())
        if lost:
            self.failed += lost
            log.warning("%d webhook events unsent at shutdown", lost)
        for lane in self._lanes.values():
            lane.queue.clear()
            lane.held = 0
        if self._session is not None:
            await self._session.close()
            self._session = None


def _held_key(app: AppConfig, event: dict[str, Any], name: str) -> _HeldKey:
    user = event.get("user_id") if name == "member_removed" else None
    return (app.id, name, str(event.get("channel", "")), "" if user is None else str(user))
