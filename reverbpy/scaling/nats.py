"""The NATS adapter: several nodes share traffic through a NATS server (``nats-py``).

**Fan-out by interest.** Each envelope part (``protocol.cluster.route``) is published on its
topic's subject, ``{prefix}.{app}.{kind}.{name}``, where every part is one subject token
(``token``: letters, digits and ``-`` stay, any other byte is written ``_XX``, so no channel
name or user id can inject a ``.``, ``*`` or ``>``). A node subscribes to a topic's subject
while the hub follows it (``follow``/``unfollow``, counted; subscriptions made in the same loop
turn share one ``flush``, the round trip after which the server has the SUBs). One connection
publishes from one ordered queue, so one publisher's envelopes reach every node in order and
once. The connection is made with ``no_echo``, and each payload starts with the publishing
node's id (``{node}\\n{json}``), so a node never applies its own envelopes.

**Shared state in a JetStream key-value bucket** (named after the prefix). Every update is a
compare-and-set on the key's last revision (``Nats-Expected-Last-Subject-Sequence``), retried
on conflict, and the updates one node has for a key in the same loop turn are applied
together, so "first socket of this user in the cluster", "last subscriber of this channel" and
the presence member cap are decided once, cluster-wide. The keys (``{app}``, ``{channel}``,
``{user}`` are tokens):

- ``p.{app}.{channel}``: presence, ``{"node:socket": [user_id, user_info]}``;
- ``s.{app}.{channel}``: subscriptions, ``{node: count}``;
- ``u.{app}.{user}``: signed-in users, ``{node: 1}``;
- ``c.{app}.{channel}``: a cache channel's last event and its expiry (wall clock);
- ``n``: the nodes, ``{node: [heartbeat, {app: connections}]}``, the source of
  ``other_connections`` and ``connection_count``;
- ``r.{node}``: the lock of whoever removes a dead node.

A document left empty is deleted. Every entry names its node, so what a node added can be
found again: a node whose heartbeat has not moved for ``node_timeout`` seconds (measured on the
observer's own clock) is removed by one survivor, under its ``r.{node}`` lock, which walks the
``p``/``s``/``u`` documents and takes out the dead node's entries; whoever's compare-and-set
empties a user or a channel announces it (``member_gone``, ``user_gone``, ``channel_gone``),
so once.

**Outages.** While the connection is down ``healthy`` is False, the shared-state methods answer
from this node's own state (``None``), ``follow`` returns ``None`` (joins never wait for NATS),
and envelopes wait in order in a bounded buffer (``buffer_size``, ``buffer_age``; past them the
oldest are dropped, counted in ``dropped`` and logged once per outage). nats-py reconnects and
subscribes again by itself; then this node writes its own entries again from its registry (as
the Redis adapter does: entries of sockets that left meanwhile go, those that came are added),
waits until every other node has shown a heartbeat since the link came back (their
subscriptions are then in place again; at most ``node_timeout``), and only then sends the
buffer, so what was published during a server restart is not lost. A node the others took for
dead (an outage, or a stalled loop, longer than ``node_timeout``) notices on its next heartbeat,
writes its entries back and announces its members and users again (``member_added``,
``online``) to the nodes that were told they had gone.

**What is not (exactly) cluster-wide.** Joins, leaves and counts answered locally during an
outage reach the shared state only with the re-registration that follows (meanwhile the two
views differ), and a member who joined during an outage long enough to be taken for dead may
be announced twice. Envelopes nats-py had already taken when the link broke go out after the
reconnect without waiting for the other nodes. A document is one KV entry, so a presence
channel's members must fit in the server's maximum message size (1 MiB by default, thousands of
members). Removing a dead node, re-registering, ``channel_counts`` and ``close`` scan the
bucket's ``p``/``s``/``u`` (or one app's ``s``) keys through a KV watch: fine for rare events
and for the HTTP API, not for every socket. Expired cache entries stay in the bucket (they
answer as absent) until overwritten, and so do the tombstones of deleted documents.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar, cast

import orjson

from reverbpy.config import ServerConfig
from reverbpy.protocol.cluster import (
    Envelope,
    EnvelopeError,
    MemberAdded,
    Topic,
    UserOnline,
    decode,
    encode,
    route,
)
from reverbpy.protocol.presence import Member
from reverbpy.scaling.base import ClusterListener, PresenceFull, PresenceJoin
from reverbpy.scaling.buffer import OutageBuffer

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription
    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue

    from reverbpy.registry import AppState

log = logging.getLogger("reverbpy.scaling.nats")

T = TypeVar("T")
Doc = dict[str, Any]

HEARTBEAT = 2.0
"""Seconds between heartbeats at most (a third of ``node_timeout`` when that is shorter)."""
MAX_BACKOFF = 5.0
PUBLISH_BATCH = 1024
START_WAIT = 5.0
"""Seconds ``start`` waits for the server before serving local clients alone."""
KV_TIMEOUT = 3.0
FLUSH_TIMEOUT = 3
CAS_ATTEMPTS = 64
LOCK_TTL = 60.0
"""Seconds after which a survivor may take over a dead node's removal from another."""
DOC_CACHE = 4096
RECONCILE_BATCH = 64
"""Documents updated at once when a node's entries are removed or written again."""

_EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
_WRONG_LAST = (10071, 10164)
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")
_PLAIN = re.compile(r"[A-Za-z0-9-]+")
_ESCAPE = re.compile(r"_([0-9A-F]{2})")


@functools.lru_cache(maxsize=65_536)
def token(name: str) -> str:
    """One subject token (and KV key token) for any string, injectively.

    Letters, digits and ``-`` stay; every other UTF-8 byte becomes ``_XX`` (so ``_`` itself
    too); the empty string is ``_``. The result never holds ``.``, ``*``, ``>`` or a space.
    """
    if _PLAIN.fullmatch(name):
        return name
    if not name:
        return "_"
    out: list[str] = []
    for ch in name:
        if ch in _SAFE:
            out.append(ch)
        else:
            out.extend(f"_{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
    return "".join(out)


def untoken(text: str) -> str:
    """The string ``token`` made ``text`` from."""
    if text == "_":
        return ""
    if "_" not in text:
        return text
    raw = bytearray()
    pos = 0
    for match in _ESCAPE.finditer(text):
        raw += text[pos : match.start()].encode()
        raw.append(int(match.group(1), 16))
        pos = match.end()
    raw += text[pos:].encode()
    return raw.decode("utf-8", "surrogatepass")


class _Conflict(Exception):
    """Someone else wrote the key since we read it."""


class NatsAdapter:
    name = "nats"
    local = False

    def __init__(self, config: ServerConfig) -> None:
        scaling = config.scaling
        self._url = scaling.nats_url
        self._root = token(scaling.prefix)
        self._bucket = token(scaling.prefix)
        self._kv_subject = f"$KV.{self._bucket}."
        self._node_timeout = scaling.node_timeout
        self._beat_every = min(HEARTBEAT, scaling.node_timeout / 3)
        self.node_id = secrets.token_hex(8)
        self._tag = self.node_id.encode()
        self._listener: ClusterListener | None = None
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._kv: KeyValue | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._connected = False
        self._kv_ready = False
        """This node's entries are in the bucket (False from an outage until re-registered)."""
        self._flowing = False
        """The publisher may send (False from an outage until the other nodes are back)."""
        self._ever_flowed = False
        self._reaped = False
        self._outages = 0
        self._recovery: asyncio.Task[None] | None = None
        self._recover_again = False
        self._kv_warned = False
        # fan-out
        self._outbox: OutageBuffer[tuple[str, bytes]] = OutageBuffer(
            scaling.buffer_size, scaling.buffer_age, "NATS"
        )
        self._outbox_wake = asyncio.Event()
        self._failed = 0  # envelopes NATS refused while connected
        self._subjects: dict[Topic, str] = {}
        # interest
        self._interest: dict[Topic, int] = {}
        self._subs: dict[Topic, Subscription] = {}
        self._dirty: set[Topic] = set()
        self._round: asyncio.Future[None] | None = None
        self._waiting: dict[Topic, asyncio.Future[None]] = {}
        self._interest_wake = asyncio.Event()
        # shared state
        self._queued: dict[str, list[tuple[Callable[[Doc], Any], asyncio.Future[Any]]]] = {}
        self._docs: dict[str, tuple[int, Doc]] = {}
        self._cache_pending: dict[str, bytes] = {}
        self._cache_writer: asyncio.Task[None] | None = None
        self._others: dict[str, int] = {}
        self._seen: dict[str, tuple[int, float]] = {}
        # metrics (read with getattr)
        self.received = 0
        self.publish_batches = 0
        self.publish_seconds = 0.0

    # --- lifecycle --------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self._connected and self._kv_ready and self._flowing

    @property
    def buffered(self) -> int:
        return len(self._outbox)

    async def start(self, listener: ClusterListener) -> None:
        self._listener = listener
        listener.node_id = self.node_id
        self._spawn(self._publisher(), "nats-publish")
        self._spawn(self._interest_loop(), "nats-interest")
        self._spawn(self._heartbeat(), "nats-heartbeat")
        connect = self._spawn(self._connect(), "nats-connect")
        try:
            async with asyncio.timeout(START_WAIT):
                await asyncio.shield(connect)
                while self._recovery is not None and not self._recovery.done():
                    await asyncio.shield(self._recovery)
        except TimeoutError:
            log.warning("NATS unreachable at start: serving local clients, will retry")

    async def close(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)
        nc = self._nc
        if nc is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(3):
                if self._connected:
                    # What the hub published last still leaves.
                    for subject, payload in self._outbox.take(time.monotonic(), len(self._outbox)):
                        await nc.publish(subject, payload)
                if self._connected and self._kv is not None:
                    await self._reconcile(self.node_id, {}, announce=False)
                    await self._mutate("n", functools.partial(_drop_node, self.node_id))
        with contextlib.suppress(Exception):
            await nc.close()

    def _spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _connect(self) -> None:
        """Connect (nats-py retries until a server answers), then register this node."""
        import nats

        servers = [s.strip() for s in self._url.reveal().split(",") if s.strip()]
        backoff = 0.5
        while True:
            try:
                nc = await nats.connect(
                    servers,
                    name=f"reverbpy-{self.node_id}",
                    no_echo=True,  # this node's envelopes never come back to it
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    ping_interval=10,
                    max_outstanding_pings=2,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
                break
            except Exception as exc:
                log.error("cannot connect to NATS (%s: %s); retrying", type(exc).__name__, exc)
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
        self._nc = nc
        self._js = nc.jetstream(timeout=KV_TIMEOUT)
        self._connected = True
        log.info("connected to NATS as node %s", self.node_id)
        self._interest_wake.set()
        self._recover()

    async def _on_error(self, exc: Exception) -> None:
        if not self._closing:
            log.debug("NATS: %s: %s", type(exc).__name__, exc)

    async def _on_disconnected(self) -> None:
        if self._closing:
            return
        if self._connected:
            log.warning("lost NATS: serving local clients only until it is back")
        self._connected = False
        self._kv_ready = False
        self._flowing = False
        self._outages += 1
        self._seen.clear()
        # joins waiting for a subscription go on (follow answers None until the link is back)
        for fut in set(self._waiting.values()):
            if not fut.done():
                fut.set_result(None)
        self._waiting.clear()
        self._round = None

    async def _on_reconnected(self) -> None:
        if self._closing:
            return
        self._connected = True
        self._interest_wake.set()
        self._recover()

    def _recover(self) -> None:
        self._recover_again = True
        if self._recovery is None or self._recovery.done():
            self._recovery = self._spawn(self._recovery_loop(), "nats-recover")

    async def _recovery_loop(self) -> None:
        """Re-register this node's state, wait for the other nodes, then let the buffer go."""
        backoff = 0.2
        while self._recover_again and not self._closing and self._connected:
            self._recover_again = False
            peers: dict[str, int] | None = None
            outages = self._outages
            if not self._kv_ready:
                try:
                    peers = await self._rejoin()
                    if outages != self._outages:
                        continue  # the link broke meanwhile: again when it is back
                    self._kv_ready = True
                    self._kv_warned = False
                except Exception as exc:
                    self._kv_failed(exc, recover=False)
                    self._recover_again = True
            if not self._flowing and self._connected:
                if self._ever_flowed:
                    await self._await_peers(peers)
                if not self._connected:
                    return
                self._flowing = self._ever_flowed = True
                self._outbox.link_back()
                self._outbox_wake.set()
            if self._kv_ready:
                log.info("NATS link up: node %s registered", self.node_id)
            if self._recover_again:
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)

    async def _rejoin(self) -> dict[str, int]:
        """Register this node and write its entries again; returns the other nodes' beats."""
        if self._kv is None:
            assert self._js is not None
            try:
                self._kv = await self._js.create_key_value(bucket=self._bucket, history=1)
            except Exception:
                self._kv = await self._js.key_value(self._bucket)
        self._seen.clear()
        registered, nodes = await self._mutate("n", self._beat_op)
        # Taken for dead meanwhile: the others announced our members and users gone, so those
        # still here are announced again (a member who joined during the outage may then be
        # announced twice, once by the hub's buffered envelope).
        back = self._reaped or (self._ever_flowed and not registered)
        self._reaped = False
        # A fresh node id has no entries yet: only a node coming back looks for its old ones.
        await self._reconcile(
            self.node_id, self._own_entries(), announce=False, back=back, scan=self._ever_flowed
        )
        return {node: entry[0] for node, entry in nodes.items() if node != self.node_id}

    async def _await_peers(self, beats: dict[str, int] | None) -> None:
        """Until every other node has beaten since the link came back: it is reconnected, so
        its subscriptions are in place again and the buffer reaches it."""
        if beats is None:  # the bucket is not answering: give them a heartbeat's time
            await asyncio.sleep(self._beat_every * 2)
            return
        deadline = time.monotonic() + self._node_timeout
        while beats and self._connected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            with contextlib.suppress(Exception):
                _, nodes = await self._read("n")
                for node in list(beats):
                    entry = nodes.get(node)
                    if entry is None or entry[0] != beats[node]:
                        del beats[node]

    def _kv_failed(self, exc: BaseException, *, recover: bool = True) -> None:
        """A key-value call failed: answer locally and re-register once it works again."""
        if not self._kv_warned and not self._closing:
            self._kv_warned = True
            log.warning(
                "NATS key-value store failing (%s: %s): answering from local state",
                type(exc).__name__,
                exc,
            )
        self._kv_ready = False
        self._docs.clear()
        if recover and self._connected:
            self._recover()

    # --- fan-out ----------------------------------------------------------------------------

    def _subject(self, topic: Topic) -> str:
        subject = self._subjects.get(topic)
        if subject is None:
            if len(self._subjects) > 100_000:
                self._subjects.clear()
            app_id, kind, name = topic
            subject = self._subjects[topic] = f"{self._root}.{token(app_id)}.{kind}.{token(name)}"
        return subject

    def publish(self, envelope: Envelope) -> None:
        now = time.monotonic()
        for topic, part in route(envelope):
            payload = self._tag + b"\n" + orjson.dumps(encode(part))
            self._outbox.append((self._subject(topic), payload), now)
        if self._flowing:
            self._outbox_wake.set()

    @property
    def dropped(self) -> int:
        """Envelopes not relayed (``reverbpy_adapter_dropped_envelopes``): let go by the
        outage buffer, or refused by NATS."""
        return self._outbox.dropped + self._failed

    async def _publisher(self) -> None:
        """One queue, one connection: envelopes leave in the order they were published."""
        while True:
            await self._outbox_wake.wait()
            self._outbox_wake.clear()
            while self._outbox and self._flowing and self._connected and self._nc is not None:
                nc = self._nc
                started = time.perf_counter()
                batch = self._outbox.take(time.monotonic(), PUBLISH_BATCH)
                sent = 0
                for subject, payload in batch:
                    if not (self._flowing and nc.is_connected):
                        break
                    try:
                        await nc.publish(subject, payload)
                    except Exception as exc:
                        if not nc.is_connected:
                            break  # kept, in order, for when the link is back
                        log.warning("envelope not relayed (%s: %s)", type(exc).__name__, exc)
                        self._failed += 1
                    sent += 1
                self._outbox.put_back(len(batch) - sent)
                self.publish_batches += 1
                self.publish_seconds += time.perf_counter() - started
                if not sent:
                    break
                await asyncio.sleep(0)  # let nats-py's flusher write the batch

    async def _on_message(self, msg: Msg) -> None:
        data = msg.data
        cut = data.find(b"\n", 0, 64)
        if cut < 0 or data[:cut] == self._tag or self._listener is None:
            return
        try:
            envelope = decode(orjson.loads(memoryview(data)[cut + 1 :]))
        except (orjson.JSONDecodeError, EnvelopeError) as exc:
            log.warning("bad envelope from the cluster: %s", exc)
            return
        self.received += 1
        try:
            self._listener.receive(envelope)
        except Exception:
            log.exception("error delivering an envelope from the cluster")

    # --- interest ---------------------------------------------------------------------------

    def follow(self, topic: Topic) -> Awaitable[None] | None:
        self._interest[topic] = self._interest.get(topic, 0) + 1
        waiting = self._waiting.get(topic)
        if waiting is not None:
            return asyncio.shield(waiting)
        if topic in self._subs:
            return None
        self._dirty.add(topic)
        self._interest_wake.set()
        if not self._connected:
            return None  # subscribed when the link is back; a join does not wait for NATS
        if self._round is None:
            self._round = asyncio.get_running_loop().create_future()
        self._waiting[topic] = self._round
        return asyncio.shield(self._round)

    def unfollow(self, topic: Topic) -> None:
        left = self._interest.get(topic, 0) - 1
        if left > 0:
            self._interest[topic] = left
            return
        self._interest.pop(topic, None)
        self._dirty.add(topic)
        self._interest_wake.set()

    async def _interest_loop(self) -> None:
        """Subscribe and unsubscribe in rounds: one flush for all a loop turn followed."""
        while True:
            await self._interest_wake.wait()
            self._interest_wake.clear()
            nc = self._nc
            if nc is None or not self._connected or not self._dirty:
                continue
            dirty, self._dirty = self._dirty, set()
            done, self._round = self._round, None
            try:
                for topic in dirty:
                    want = topic in self._interest
                    sub = self._subs.get(topic)
                    if want and sub is None:
                        self._subs[topic] = await nc.subscribe(
                            self._subject(topic), cb=self._on_message
                        )
                    elif not want and sub is not None:
                        del self._subs[topic]
                        await sub.unsubscribe()
                if done is not None:
                    # nats-py writes flush()'s PING straight to the socket, ahead of what still
                    # waits for its flusher task (these SUBs): have those written first, so
                    # the PONG comes after the server has registered every SUB.
                    await nc._flush_pending(force_flush=True)
                    await nc.flush(timeout=FLUSH_TIMEOUT)
            except Exception as exc:
                log.debug("subscription round failed (%s): retried", type(exc).__name__)
                self._dirty |= dirty
                if self._connected:
                    self._spawn(self._kick_later(), "nats-interest-retry")
            finally:
                if done is not None:
                    if not done.done():
                        done.set_result(None)
                    for topic in dirty:
                        if self._waiting.get(topic) is done:
                            del self._waiting[topic]

    async def _kick_later(self) -> None:
        await asyncio.sleep(0.5)
        self._interest_wake.set()

    # --- the key-value bucket -----------------------------------------------------------------

    def _key(self, kind: str, app_id: str, name: str) -> str:
        return f"{kind}.{token(app_id)}.{token(name)}"

    async def _read(self, key: str) -> tuple[int, Doc]:
        """The document at ``key`` and its revision (0 and ``{}`` when there is none)."""
        from nats.js.errors import KeyNotFoundError

        assert self._kv is not None
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError as exc:
            revision = exc.entry.revision if exc.entry is not None else 0
            return revision or 0, {}
        doc = orjson.loads(entry.value) if entry.value else {}
        return entry.revision or 0, doc

    async def _write(self, key: str, revision: int, doc: Doc) -> int:
        """Compare-and-set: write ``doc`` (delete when empty) if ``key`` is still at
        ``revision``; raises ``_Conflict`` otherwise."""
        from nats.js.errors import APIError

        assert self._js is not None
        headers = {_EXPECTED_LAST: str(revision)}
        if doc:
            payload = orjson.dumps(doc)
        else:
            headers["KV-Operation"] = "DEL"
            payload = b""
        try:
            ack = await self._js.publish(self._kv_subject + key, payload, headers=headers)
        except APIError as exc:
            if exc.err_code in _WRONG_LAST:
                raise _Conflict(key) from None
            raise
        return int(ack.seq)

    async def _mutate(self, key: str, op: Callable[[Doc], T]) -> T:
        """Apply ``op`` to the document at ``key`` atomically, cluster-wide.

        ``op`` changes the document in place (replacing values, never changing them inside)
        and returns the caller's answer, or raises before changing anything. It may run
        several times (after a conflict); the answer is from the run that was written.
        """
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        queued = self._queued.get(key)
        if queued is None:
            self._queued[key] = [(op, fut)]
            self._spawn(self._commit(key), "nats-commit")
        else:
            queued.append((op, fut))
        return cast(T, await fut)

    async def _commit(self, key: str) -> None:
        try:
            while batch := self._queued[key]:
                self._queued[key] = []
                await self._commit_batch(key, batch)
        finally:
            for _, fut in self._queued.pop(key, ()):
                if not fut.done():
                    fut.set_exception(RuntimeError("the adapter closed"))

    async def _commit_batch(
        self, key: str, batch: list[tuple[Callable[[Doc], Any], asyncio.Future[Any]]]
    ) -> None:
        # The last document this node wrote saves a read when nobody wrote since; a stale one
        # costs a conflict, then a read.
        cached = self._docs.pop(key, None)
        try:
            for _ in range(CAS_ATTEMPTS):
                revision, doc = cached if cached is not None else await self._read(key)
                new = dict(doc)
                answers: list[tuple[Any, Exception | None]] = []
                for op, _fut in batch:
                    try:
                        answers.append((op(new), None))
                    except Exception as exc:
                        answers.append((None, exc))
                if new != doc:
                    try:
                        revision = await self._write(key, revision, new)
                    except _Conflict:
                        cached = None
                        continue
                elif cached is not None:  # nothing to write: answer from a fresh read only
                    cached = None
                    continue
                if len(self._docs) >= DOC_CACHE:
                    self._docs.clear()
                self._docs[key] = (revision, new)
                for (answer, error), (_op, fut) in zip(answers, batch, strict=True):
                    if fut.done():
                        continue
                    if error is not None:
                        fut.set_exception(error)
                    else:
                        fut.set_result(answer)
                return
            raise RuntimeError(f"too much contention on {key!r}")
        except Exception as exc:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)

    async def _scan(self, pattern: str) -> list[tuple[str, int, Doc]]:
        """Every live document whose key matches ``pattern``: a KV watch, read to the end of
        what the bucket held when it started.

        The end is counted from each entry's ``delta`` (what the server still had to send),
        not from the watcher's "no more" marker, which nats-py may put before entries that
        are already on their way; deletes are read (and skipped) so that every message counts.
        """
        assert self._kv is not None
        found: dict[str, tuple[int, Doc]] = {}
        watcher = await self._kv.watch(pattern)
        try:
            async with asyncio.timeout(30):
                left: int | None = None
                while left is None or left > 0:
                    entry = await watcher.updates(timeout=10)  # type: ignore[no-untyped-call]
                    if entry is None:
                        if left is None:  # nothing yet: empty, or the entries are still coming
                            assert watcher._sub is not None
                            info = await watcher._sub.consumer_info()
                            if info.num_pending == 0 and not info.delivered.consumer_seq:
                                break
                        continue
                    left = (entry.delta or 0) if left is None else min(left - 1, entry.delta or 0)
                    if entry.operation is None and entry.value:
                        found[entry.key] = (entry.revision or 0, orjson.loads(entry.value))
                    else:
                        found.pop(entry.key, None)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]
        return [(key, revision, doc) for key, (revision, doc) in found.items()]

    def _own_entries(self) -> dict[str, Doc]:
        """This node's entries in every document, from its registry."""
        assert self._listener is not None
        node = self.node_id
        out: dict[str, Doc] = {}
        for state in list(self._listener.registry.apps.values()):
            app_id = state.app.id
            for channel in list(state.channels.values()):
                if not channel.subscribers:
                    continue
                out[self._key("s", app_id, channel.name)] = {node: len(channel.subscribers)}
                if channel.presence is None:
                    continue
                fields = {}
                for socket_id, conn in list(channel.subscribers.items()):
                    member = conn.session.subscriptions.get(channel.name)
                    if member is not None:
                        fields[f"{node}:{socket_id}"] = [member.user_id, member.user_info]
                if fields:
                    out[self._key("p", app_id, channel.name)] = fields
            for user_id in list(state.users):
                out[self._key("u", app_id, user_id)] = {node: 1}
        return out

    async def _reconcile(
        self,
        node: str,
        wanted: dict[str, Doc],
        *,
        announce: bool,
        back: bool = False,
        scan: bool = True,
    ) -> None:
        """Make ``node``'s entries in the ``p``/``s``/``u`` documents exactly ``wanted``.

        ``announce``: ``node`` is dead; tell the listener of the users, members and channels
        whose last entry this removed. ``back``: this node returns after the others took it
        for dead; tell them of its members and users they had announced gone.
        """
        keys = dict.fromkeys(wanted)
        for pattern in ("p.>", "s.>", "u.>") if scan else ():
            for key, revision, doc in await self._scan(pattern):
                if any(_owned(node, f) for f in doc):
                    keys[key] = None
                    self._docs[key] = (revision, doc)

        async def settle(key: str) -> None:
            kind, app_tok, name_tok = key.split(".")
            change = functools.partial(_replace, node, wanted.get(key, {}))
            before, after = await self._mutate(key, change)
            if announce or back:
                self._tell(
                    kind, untoken(app_tok), untoken(name_tok), before, after, announce=announce
                )

        pending = list(keys)
        for start in range(0, len(pending), RECONCILE_BATCH):
            await asyncio.gather(*map(settle, pending[start : start + RECONCILE_BATCH]))

    def _tell(
        self, kind: str, app_id: str, name: str, before: Doc, after: Doc, *, announce: bool
    ) -> None:
        listener = self._listener
        if listener is None:
            return
        if kind == "p":
            old, new = _users(before), _users(after)
            if announce:
                for user_key in old.keys() - new.keys():
                    listener.member_gone(app_id, name, old[user_key][0])
            else:
                for user_key in new.keys() - old.keys():
                    user_id, user_info = new[user_key]
                    self.publish(
                        Envelope(app_id, self.node_id, MemberAdded(name, user_id, user_info))
                    )
        elif kind == "u":
            if announce and before and not after:
                listener.user_gone(app_id, name)
            elif not announce and after and not before:
                self.publish(Envelope(app_id, self.node_id, UserOnline(name)))
        elif kind == "s" and announce and _total(before) > 0 and _total(after) == 0:
            listener.channel_gone(app_id, name)

    # --- presence ---------------------------------------------------------------------------

    async def presence_join(
        self, state: AppState, channel: str, socket_id: str, member: Member
    ) -> PresenceJoin | None:
        if not self._kv_ready:
            return None
        field = f"{self.node_id}:{socket_id}"
        cap = state.app.max_presence_members

        def join(doc: Doc) -> PresenceJoin:
            users = {str(v[0]) for v in doc.values()}
            known = member.key in users
            if not known and cap > 0 and len(users) >= cap:
                raise PresenceFull(channel)
            new = field not in doc
            if new:
                doc[field] = [member.user_id, member.user_info]
            members = [Member(v[0], v[1]) for v in doc.values()]
            return PresenceJoin(first=new and not known, members=members)

        try:
            return await self._mutate(self._key("p", state.app.id, channel), join)
        except PresenceFull:
            raise
        except Exception as exc:
            self._kv_failed(exc)
            return None

    async def presence_leave(
        self, state: AppState, channel: str, socket_id: str, member: Member
    ) -> bool | None:
        if not self._kv_ready:
            return None
        field = f"{self.node_id}:{socket_id}"

        def leave(doc: Doc) -> bool:
            if doc.pop(field, None) is None:
                return False
            return all(str(v[0]) != member.key for v in doc.values())

        try:
            return await self._mutate(self._key("p", state.app.id, channel), leave)
        except Exception as exc:
            self._kv_failed(exc)
            return None

    async def presence_members(self, state: AppState, channel: str) -> list[Member] | None:
        if not self._kv_ready:
            return None
        try:
            _, doc = await self._read(self._key("p", state.app.id, channel))
        except Exception as exc:
            self._kv_failed(exc)
            return None
        return [Member(v[0], v[1]) for v in doc.values()]

    # --- counts -----------------------------------------------------------------------------

    async def subscriptions_changed(self, state: AppState, channel: str, delta: int) -> int | None:
        if not self._kv_ready:
            return None
        node = self.node_id

        def change(doc: Doc) -> int:
            count = int(doc.get(node, 0)) + delta
            if count > 0:
                doc[node] = count
            else:
                doc.pop(node, None)
            return _total(doc)

        try:
            return await self._mutate(self._key("s", state.app.id, channel), change)
        except Exception as exc:
            self._kv_failed(exc)
            return None

    async def channel_counts(self, state: AppState) -> dict[str, int] | None:
        if not self._kv_ready:
            return None
        try:
            docs = await self._scan(f"s.{token(state.app.id)}.>")
        except Exception as exc:
            self._kv_failed(exc)
            return None
        counts = {untoken(key.split(".")[2]): _total(doc) for key, _, doc in docs}
        return {name: n for name, n in counts.items() if n > 0}

    async def channel_count(self, state: AppState, channel: str) -> int | None:
        if not self._kv_ready:
            return None
        try:
            _, doc = await self._read(self._key("s", state.app.id, channel))
        except Exception as exc:
            self._kv_failed(exc)
            return None
        return max(0, _total(doc))

    async def connection_count(self, state: AppState) -> int | None:
        if not self._kv_ready:
            return None
        try:
            _, nodes = await self._read("n")
        except Exception as exc:
            self._kv_failed(exc)
            return None
        others = sum(
            int(entry[1].get(state.app.id, 0)) for n, entry in nodes.items() if n != self.node_id
        )
        return others + len(state.connections)

    def other_connections(self, state: AppState) -> int:
        return self._others.get(state.app.id, 0)

    async def user_signed_in(self, state: AppState, user_id: str) -> bool | None:
        if not self._kv_ready:
            return None
        node = self.node_id

        def sign_in(doc: Doc) -> bool:
            if node in doc:
                return False
            doc[node] = 1
            return len(doc) == 1

        try:
            return await self._mutate(self._key("u", state.app.id, user_id), sign_in)
        except Exception as exc:
            self._kv_failed(exc)
            return None

    async def user_signed_out(self, state: AppState, user_id: str) -> bool | None:
        if not self._kv_ready:
            return None
        node = self.node_id

        def sign_out(doc: Doc) -> bool:
            if doc.pop(node, None) is None:
                return False
            return not doc

        try:
            return await self._mutate(self._key("u", state.app.id, user_id), sign_out)
        except Exception as exc:
            self._kv_failed(exc)
            return None

    async def users_online(self, state: AppState, user_ids: tuple[str, ...]) -> list[str] | None:
        if not self._kv_ready or not user_ids:
            return None
        try:
            docs = await asyncio.gather(
                *(self._read(self._key("u", state.app.id, u)) for u in user_ids)
            )
        except Exception as exc:
            self._kv_failed(exc)
            return None
        return [u for u, (_, doc) in zip(user_ids, docs, strict=True) if doc]

    # --- cache channels ---------------------------------------------------------------------

    def cache_set(self, state: AppState, channel: str, event: str, data: Any, ttl: float) -> None:
        if not self._kv_ready:
            return
        value = orjson.dumps({"e": event, "d": data, "x": time.time() + ttl})
        self._cache_pending[self._key("c", state.app.id, channel)] = value
        if self._cache_writer is None or self._cache_writer.done():
            self._cache_writer = self._spawn(self._write_cache(), "nats-cache")

    async def _write_cache(self) -> None:
        """Last writer wins, as with a plain SET: only each key's latest value is written."""
        while self._cache_pending and self._kv is not None:
            key = next(iter(self._cache_pending))
            value = self._cache_pending.pop(key)
            try:
                await self._kv.put(key, value)
            except Exception as exc:
                self._kv_failed(exc)

    async def cache_get(self, state: AppState, channel: str) -> tuple[str, Any, float] | None:
        if not self._kv_ready:
            return None
        try:
            _, doc = await self._read(self._key("c", state.app.id, channel))
        except Exception as exc:
            self._kv_failed(exc)
            return None
        if not doc:
            return None
        left = float(doc["x"]) - time.time()
        if left <= 0:
            return None
        return doc["e"], doc["d"], left

    # --- heartbeat and dead nodes -----------------------------------------------------------

    def _beat_op(self, doc: Doc) -> tuple[bool, Doc]:
        assert self._listener is not None
        previous = doc.get(self.node_id)
        conns = {s.app.id: len(s.connections) for s in self._listener.registry.apps.values()}
        doc[self.node_id] = [(previous[0] + 1) if previous else 1, conns]
        return previous is not None, dict(doc)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._beat_every)
            if not (self._connected and self._kv_ready):
                continue
            try:
                registered, nodes = await self._mutate("n", self._beat_op)
                if not registered:
                    log.warning("this node was taken for dead by the cluster: registering again")
                    self._kv_ready = False
                    self._reaped = True
                    self._recover()
                    continue
                now = time.monotonic()
                others: dict[str, int] = {}
                stale = []
                for node, (beat, conns) in nodes.items():
                    if node == self.node_id:
                        continue
                    for app_id, n in conns.items():
                        others[app_id] = others.get(app_id, 0) + int(n)
                    seen = self._seen.get(node)
                    if seen is None or seen[0] != beat:
                        self._seen[node] = (beat, now)
                    elif now - seen[1] > self._node_timeout:
                        stale.append(node)
                for node in list(self._seen):
                    if node not in nodes:
                        del self._seen[node]
                self._others = others
                for node in stale:
                    await self._reap(node)
            except Exception as exc:
                self._kv_failed(exc)

    async def _reap(self, node: str) -> None:
        """Remove a silent node's entries, once: under ``r.{node}``, taken with a create."""
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        assert self._kv is not None
        lock = f"r.{node}"
        value = orjson.dumps({"by": self.node_id, "t": time.time()})
        try:
            revision = await self._kv.create(lock, value)
        except KeyWrongLastSequenceError:
            try:
                entry = await self._kv.get(lock)
            except KeyNotFoundError:
                return
            held = orjson.loads(entry.value) if entry.value else {}
            if time.time() - float(held.get("t", 0)) < LOCK_TTL:
                return  # another survivor is at it
            try:
                revision = await self._kv.update(lock, value, last=entry.revision)
            except KeyWrongLastSequenceError:
                return
        try:
            _, nodes = await self._read("n")
            seen = self._seen.get(node)
            record = nodes.get(node)
            if record is None or seen is None or record[0] != seen[0]:
                return  # removed already, or it beat again
            log.warning("node %s stopped answering: removing its members and counts", node)
            await self._reconcile(node, {}, announce=True)
            await self._mutate("n", functools.partial(_drop_node, node))
            self._seen.pop(node, None)
        finally:
            with contextlib.suppress(Exception):
                await self._js_delete(lock, revision)

    async def _js_delete(self, key: str, revision: int) -> None:
        with contextlib.suppress(_Conflict):
            await self._write(key, revision, {})


# --- document operations (pure) -------------------------------------------------------------


def _owned(node: str, field: str) -> bool:
    return field == node or field.startswith(node + ":")


def _replace(node: str, wanted: Doc, doc: Doc) -> tuple[Doc, Doc]:
    """``node``'s entries become ``wanted``; returns the document before and after."""
    before = dict(doc)
    for field in [f for f in doc if _owned(node, f)]:
        del doc[field]
    doc.update(wanted)
    return before, dict(doc)


def _drop_node(node: str, doc: Doc) -> None:
    doc.pop(node, None)


def _users(doc: Doc) -> dict[str, list[Any]]:
    """A presence document's users: user key to ``[user_id, user_info]``."""
    return {str(v[0]): v for v in doc.values()}


def _total(doc: Doc) -> int:
    return sum(int(n) for n in doc.values())
