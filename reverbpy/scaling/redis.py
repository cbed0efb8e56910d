"""The Redis adapter: several processes and machines behave as one server.

- **Fan-out, routed by interest.** Each node delivers to its own sockets at once, then
  publishes one envelope per topic (``protocol.cluster.route``: a channel, a user, a watched
  user) on ``{prefix}:t:{app}:{kind}:{name}``. A node subscribes to a topic while it serves it
  (``follow``/``unfollow``, counted by the hub), batching a burst of joins into a few
  ``SUBSCRIBE`` commands, so it never receives traffic for channels it has no socket on: the
  cluster's capacity grows with its nodes instead of being capped by what one node can parse.
  One Redis connection publishes in order, so events from one publisher arrive in order
  everywhere; each envelope carries its node's sequence number, so a node applies it once
  even when it arrives twice (a retried batch, a catch-up read).
- **No silent loss on a blip.** Envelopes wait in a bounded, ordered buffer
  (``buffer_size``, ``buffer_age``) until Redis takes them, and each is also appended to a
  short stream per topic (kept ``buffer_age``), atomically with its ``PUBLISH``. A node whose
  subscriptions dropped re-subscribes, then reads those streams from just before it lost the
  link, so what was published while it was away (or before it was back) is delivered, in
  order, before anything newer. What overflows the buffer is counted
  (``reverbpy_adapter_dropped_envelopes``) and logged once per outage.
- **Shared state, in Redis hashes.** Presence members (``presence:{app}:{channel}``, field per
  socket, plus a per-user socket count), subscription counts per channel and connection
  counts per node. Updates are Lua scripts, so "first socket of this user" and "last
  subscriber of this channel" are decided once for the whole cluster.
- **Dead nodes.** Each node refreshes its score in the ``nodes`` sorted set every few seconds
  and records what it added in per-node keys. A node silent for ``node_timeout`` seconds is
  reaped by a survivor (under a lock): its members leave (``member_removed`` once) and its
  counts are subtracted.
- **Outages.** While Redis is unreachable the node keeps serving its own sockets from its own
  state (``healthy`` is False, ``/up`` says so): presence and counts answer locally, envelopes
  wait in the buffer. On reconnect the node re-registers its sockets' state, so the cluster
  view heals, then sends what it buffered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson

from reverbpy.config import ServerConfig
from reverbpy.protocol.cluster import Envelope, EnvelopeError, Topic, decode, encode, route
from reverbpy.protocol.presence import Member
from reverbpy.scaling.base import ClusterListener, PresenceFull, PresenceJoin
from reverbpy.scaling.buffer import OutageBuffer

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from reverbpy.registry import AppState

log = logging.getLogger("reverbpy.scaling.redis")

HEARTBEAT = 2.0
POOL_SIZE = 32
MAX_BACKOFF = 5.0
BATCH = 512  # envelopes per pipelined round trip
SUBSCRIBE_CHUNK = 1000  # topics per SUBSCRIBE command
SUBSCRIBE_WAIT = 5.0  # a join waits at most this for its topic's subscription
CATCH_UP_MARGIN_MS = 3000  # read streams from this long before the link was last known up
CATCH_UP_COUNT = 100_000  # entries per stream read while catching up, at most

# KEYS: the topic's stream; ARGV: topic, message, retention ms. The stream keeps what was
# published for ``retention`` ms (a node catching up after a blip reads it); the message is
# published in the same step, so whatever a catch-up read misses, the subscription gets.
_SEND = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('XADD', KEYS[1], 'MINID', '~', now - tonumber(ARGV[3]), '*', 'm', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return redis.call('PUBLISH', ARGV[1], ARGV[2])
"""

# KEYS: presence hash, users hash, node set; ARGV: field, user key, member json, cap, node entry
_PRESENCE_JOIN = """
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 then  -- (0 is true in Lua)
  local cap = tonumber(ARGV[4])
  if cap > 0 and redis.call('HLEN', KEYS[2]) >= cap then return {-1} end
end
local existed = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[3])
local n = redis.call('HGET', KEYS[2], ARGV[2])
if existed == 1 then
  n = redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
  redis.call('SADD', KEYS[3], ARGV[5])
end
return {tonumber(n) == 1 and existed == 1 and 1 or 0, redis.call('HVALS', KEYS[1])}
"""

# KEYS: presence hash, users hash, node set; ARGV: field, user key, node entry
_PRESENCE_LEAVE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('SREM', KEYS[3], ARGV[3])
local n = redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
if n <= 0 then redis.call('HDEL', KEYS[2], ARGV[2]) return 1 end
return 0
"""

# KEYS: cluster subs hash, node subs hash; ARGV: channel, node field, delta
_SUBS_DELTA = """
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[3])
local m = redis.call('HINCRBY', KEYS[2], ARGV[2], ARGV[3])
if m <= 0 then redis.call('HDEL', KEYS[2], ARGV[2]) end
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) n = 0 end
return n
"""

# KEYS: users hash, node users set; ARGV: user id, node entry. Counts the nodes the user is on.
_USER_IN = """
if redis.call('SADD', KEYS[2], ARGV[2]) == 1 then
  return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
end
return tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or 0)
"""

# KEYS: users hash, node users set; ARGV: user id, node entry. -1 when the node had no record.
_USER_OUT = """
if redis.call('SREM', KEYS[2], ARGV[2]) == 0 then return -1 end
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) return 0 end
return n
"""

_SEP = "\x1f"


class RedisAdapter:
    name = "redis"

    def __init__(self, config: ServerConfig) -> None:
        scaling = config.scaling
        self._url = scaling.redis_url
        self._prefix = scaling.prefix
        self._node_timeout = scaling.node_timeout
        self._retention_ms = max(1000, int(scaling.buffer_age * 1000))
        self._apps = [a.id for a in config.apps]
        self.node_id = secrets.token_hex(8)
        self._origin = self.node_id.encode()  # what every message it publishes starts with
        self._hub: ClusterListener | None = None
        self._redis: Redis | None = None
        # What waits for Redis, oldest first: (topic or cache key, message, ttl ms); a ttl
        # means SET with expiry (a cache entry), else an envelope for the topic.
        self._buffer: OutageBuffer[tuple[str, bytes, int]] = OutageBuffer(
            scaling.buffer_size, scaling.buffer_age, "Redis"
        )
        self._queued = asyncio.Event()
        self._up = asyncio.Event()  # set while healthy: the publisher waits on it
        self._seq = 0  # this node's envelopes, numbered
        self._seen: dict[str, int] = {}  # the last sequence number applied, per origin node
        # Interest: topic -> local count (``follow``); topic names subscribed or unsubscribed
        # as Redis confirmed; the joins waiting for a subscription; topics to reconcile.
        self._interest: dict[Topic, int] = {}
        self._subscribed: set[str] = set()
        self._unsubscribing: set[str] = set()
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._changed: set[Topic] = set()
        self._reconcile = asyncio.Event()
        self._pubsub: Any = None
        # Catching up after the subscriptions dropped: Redis's clock (ms) when the link was
        # last known up, the topics subscribed then, and the data epoch (a Redis that lost
        # its data has a new one, and its streams are read whole).
        self._clock_ms = 0
        self._catch_up: set[str] = set()
        self._epoch = ""
        self._others: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._healthy = False
        self._closing = False
        self._recovering = asyncio.Lock()
        self.received = 0
        self.publish_batches = 0
        self.publish_seconds = 0.0

    # --- lifecycle --------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self._healthy

    @property
    def buffered(self) -> int:
        """Envelopes waiting for Redis (``reverbpy_adapter_buffered_envelopes``)."""
        return len(self._buffer)

    @property
    def dropped(self) -> int:
        """Envelopes the buffer let go (``reverbpy_adapter_dropped_envelopes``)."""
        return self._buffer.dropped

    async def start(self, hub: ClusterListener) -> None:
        from redis.asyncio import BlockingConnectionPool, Redis

        self._hub = hub
        hub.node_id = self.node_id
        # A bounded pool that makes callers wait for a free connection: 2,000 sockets joining
        # at once must queue for Redis, not open 2,000 connections (or fail on the 101st).
        pool = BlockingConnectionPool.from_url(
            self._url.reveal(),
            max_connections=POOL_SIZE,
            timeout=5,
            socket_connect_timeout=2,
            decode_responses=True,
            socket_timeout=5,
            health_check_interval=10,
        )
        self._redis = Redis(connection_pool=pool)
        self._send = self._redis.register_script(_SEND)
        self._join = self._redis.register_script(_PRESENCE_JOIN)
        self._leave = self._redis.register_script(_PRESENCE_LEAVE)
        self._subs = self._redis.register_script(_SUBS_DELTA)
        self._user_in = self._redis.register_script(_USER_IN)
        self._user_out = self._redis.register_script(_USER_OUT)
        try:
            await self._register()
            self._set_healthy()
        except Exception as exc:
            log.warning(
                "Redis unreachable at start (%s); serving local clients, will retry",
                type(exc).__name__,
            )
        self._tasks = [
            asyncio.create_task(self._listen(), name="redis-listen"),
            asyncio.create_task(self._publisher(), name="redis-publish"),
            asyncio.create_task(self._subscriber(), name="redis-subscribe"),
            asyncio.create_task(self._heartbeat(), name="redis-heartbeat"),
        ]

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        # Bounded: redis-py may turn a cancellation inside a command into a ConnectionError,
        # which the loops would otherwise treat as an outage and retry.
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_result(None)
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._forget_node(self.node_id), 3)
            await self._redis.aclose(close_connection_pool=True)

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    def _topic(self, topic: Topic) -> str:
        return self._key("t", *topic)

    def _stream(self, name: str) -> str:
        """The stream that keeps a topic's recent messages (``name``: the topic's channel)."""
        return self._prefix + ":s" + name[len(self._prefix) + 2 :]

    async def _register(self) -> None:
        """Join the cluster: the node's heartbeat entry; the data epoch, noted (or set by the
        first node): another epoch means Redis lost its data since we last looked."""
        assert self._redis is not None
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self._key("nodes"), {self.node_id: time.time()})
            pipe.set(self._key("epoch"), secrets.token_hex(8), nx=True)
            pipe.get(self._key("epoch"))
            pipe.time()
            _, _, epoch, now = await pipe.execute()
        if self._epoch and epoch != self._epoch:
            log.warning("Redis lost its data (new epoch): catching up from its streams' start")
            self._clock_ms = -1
        self._epoch = str(epoch)
        if self._clock_ms == 0:
            self._clock_ms = _ms(now)

    def _set_healthy(self) -> None:
        self._healthy = True
        self._buffer.link_back()
        self._up.set()
        self._reconcile.set()  # the interest that changed while Redis was away

    def _lost(self, exc: BaseException) -> None:
        if self._healthy:
            log.warning(
                "lost Redis (%s): serving local clients only until it is back; envelopes wait"
                " in a buffer (%d at most, %gs)",
                type(exc).__name__,
                self._buffer.size,
                self._buffer.age,
            )
        self._healthy = False
        self._up.clear()

    # --- fan-out ----------------------------------------------------------------------------

    def publish(self, envelope: Envelope) -> None:
        for topic, part in route(envelope):
            self._seq += 1
            message = b"%s %d %s" % (self._origin, self._seq, orjson.dumps(encode(part)))
            self._enqueue(self._topic(topic), message, 0)

    def _enqueue(self, target: str, message: bytes, ttl_ms: int) -> None:
        self._buffer.append((target, message, ttl_ms), time.monotonic())
        self._queued.set()

    async def _publisher(self) -> None:
        """One connection, one buffer: envelopes leave in the order they were published. A
        batch Redis did not take goes back to the front and waits for the link (it may be
        sent twice; receivers apply each envelope once)."""
        from redis.exceptions import NoScriptError

        assert self._redis is not None
        while not self._closing:
            if not self._buffer:
                self._queued.clear()
                await self._queued.wait()
                continue
            await self._up.wait()
            batch = self._buffer.take(time.monotonic(), BATCH)
            if not batch:
                continue
            try:
                started = time.perf_counter()
                async with self._redis.pipeline(transaction=False) as pipe:
                    # EVALSHA by hand: redis-py's scripts in a pipeline cost a SCRIPT EXISTS
                    # round trip per batch, which at one trigger per batch doubles them.
                    sha, retention = self._send.sha, self._retention_ms
                    for target, message, ttl_ms in batch:
                        if ttl_ms:
                            pipe.set(target, message, px=ttl_ms)
                        else:
                            pipe.evalsha(sha, 1, self._stream(target), target, message, retention)
                    await pipe.execute()
                self._buffer.put_back(0)
                self.publish_batches += 1
                self.publish_seconds += time.perf_counter() - started
            except NoScriptError:  # a restarted Redis: nothing of the batch ran
                self._buffer.put_back(len(batch))
                with contextlib.suppress(Exception):
                    await self._redis.script_load(_SEND)
            except Exception as exc:
                self._buffer.put_back(len(batch))
                if self._closing:
                    return
                self._lost(exc)

    # --- interest ---------------------------------------------------------------------------

    def follow(self, topic: Topic) -> asyncio.Future[None] | None:
        count = self._interest.get(topic, 0)
        self._interest[topic] = count + 1
        name = self._topic(topic)
        if name in self._subscribed and name not in self._unsubscribing:
            return None
        if count == 0 or name in self._unsubscribing:
            self._changed.add(topic)
            self._reconcile.set()
        if not self._healthy:
            return None  # not waited for: the subscriptions are renewed when Redis is back
        waiter = self._waiters.get(name)
        if waiter is None:
            loop = asyncio.get_running_loop()
            waiter = self._waiters[name] = loop.create_future()
            loop.call_later(SUBSCRIBE_WAIT, self._release, name)
        return waiter

    def unfollow(self, topic: Topic) -> None:
        count = self._interest.get(topic, 0) - 1
        if count > 0:
            self._interest[topic] = count
            return
        self._interest.pop(topic, None)
        self._changed.add(topic)
        self._reconcile.set()

    def _release(self, name: str) -> None:
        """The joins waiting for ``name`` go on: it is subscribed, or Redis is too slow to say
        (then they are not held up longer; the events they miss are the outage's)."""
        waiter = self._waiters.pop(name, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _subscriber(self) -> None:
        """Bring the subscriptions in line with the interest, a burst of changes at a time."""
        while not self._closing:
            await self._reconcile.wait()
            self._reconcile.clear()
            pubsub = self._pubsub
            if pubsub is None or not self._healthy:
                continue  # the listener subscribes to everything followed when it is back
            changed, self._changed = self._changed, set()
            wanted, subscribed, leaving = self._interest, self._subscribed, self._unsubscribing
            add, remove = [], []
            for topic in changed:
                name = self._topic(topic)
                if topic in wanted:
                    if name not in subscribed or name in leaving:
                        add.append(name)
                elif name in subscribed and name not in leaving:
                    remove.append(name)
            leaving.update(remove)
            try:
                for chunk in _chunks(add, SUBSCRIBE_CHUNK):
                    await pubsub.subscribe(*chunk)
                for chunk in _chunks(remove, SUBSCRIBE_CHUNK):
                    await pubsub.unsubscribe(*chunk)
            except Exception as exc:
                if self._closing:
                    return
                self._lost(exc)

    # --- receiving --------------------------------------------------------------------------

    async def _listen(self) -> None:
        """Subscribe to every topic followed, catch up after an outage, then deliver; on any
        failure start again with backoff."""
        assert self._redis is not None
        backoff = 0.1
        while not self._closing:
            pubsub = self._redis.pubsub()
            try:
                self._subscribed.clear()
                self._unsubscribing.clear()
                self._changed.clear()
                names = [self._topic(t) for t in self._interest]
                await pubsub.subscribe(self._key("control"))
                for chunk in _chunks(names, SUBSCRIBE_CHUNK):
                    await pubsub.subscribe(*chunk)
                early = await self._confirmed(pubsub, len(names) + 1)
                self._pubsub = pubsub
                if not self._healthy:
                    await self._recover()
                await self._catch_up_streams()
                for message in early:
                    self._on_message(message)
                self._reconcile.set()  # what changed meanwhile
                backoff = 0.1
                async for message in pubsub.listen():
                    self._on_message(message)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                raise
            except Exception as exc:
                if self._closing:
                    return
                self._lost(exc)
            self._pubsub = None
            if not self._catch_up:
                self._catch_up = set(self._subscribed)
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            await asyncio.sleep(backoff)
            backoff = min(MAX_BACKOFF, backoff * 2)

    async def _confirmed(self, pubsub: Any, count: int) -> list[dict[str, Any]]:
        """Wait until Redis has confirmed ``count`` subscriptions; the messages that came
        meanwhile are returned, to be applied after the catch-up (which is older)."""
        early: list[dict[str, Any]] = []
        async with asyncio.timeout(SUBSCRIBE_WAIT + count / 1000):
            while len(self._subscribed) < count:
                message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                if message["type"] == "message":
                    early.append(message)
                else:
                    self._on_message(message)
        return early

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "message":
            self._deliver(message["data"])
        elif kind == "subscribe":
            name = str(message["channel"])
            self._subscribed.add(name)
            self._unsubscribing.discard(name)
            self._release(name)
        elif kind == "unsubscribe":
            name = str(message["channel"])
            self._subscribed.discard(name)
            self._unsubscribing.discard(name)

    def _deliver(self, message: str) -> None:
        """Apply one message (``node seq envelope``) unless it is ours or already applied."""
        origin, _, rest = message.partition(" ")
        if origin == self.node_id or self._hub is None:
            return
        seq_text, _, body = rest.partition(" ")
        try:
            seq = int(seq_text)
            envelope = decode(orjson.loads(body))
        except (ValueError, EnvelopeError) as exc:  # orjson.JSONDecodeError is a ValueError
            log.warning("bad envelope from the cluster: %s", exc)
            return
        if seq <= self._seen.get(origin, 0):
            return  # sent twice (a retried batch, or read from a stream and then live)
        self._seen[origin] = seq
        self.received += 1
        try:
            self._hub.receive(envelope)
        except Exception:
            log.exception("error delivering an envelope from the cluster")

    async def _catch_up_streams(self) -> None:
        """After the subscriptions dropped: what the topics followed then got meanwhile, from
        their streams, in each publisher's order, before anything that arrives live."""
        names, self._catch_up = self._catch_up, set()
        if not names or self._clock_ms == 0 or self._redis is None:
            return
        start = "-" if self._clock_ms < 0 else str(max(0, self._clock_ms - CATCH_UP_MARGIN_MS))
        entries: list[tuple[str, int, str]] = []
        for chunk in _chunks(sorted(names), 200):
            async with self._redis.pipeline(transaction=False) as pipe:
                for name in chunk:
                    pipe.xrange(self._stream(name), min=start, count=CATCH_UP_COUNT)
                replies = await pipe.execute()
            for reply in replies:
                for _id, fields in reply:
                    origin, _, rest = str(fields.get("m", "")).partition(" ")
                    seq, _, _ = rest.partition(" ")
                    if origin != self.node_id and seq.isdigit():
                        entries.append((origin, int(seq), fields["m"]))
        entries.sort()
        for _, _, message in entries:
            self._deliver(message)
        if entries:
            log.info("caught up with %d envelopes published while the link was down", len(entries))

    async def _recover(self) -> None:
        """Back after an outage: re-register this node and re-add its sockets' state.

        Called by whichever loop notices Redis answering again (the listener after it
        resubscribes, the heartbeat otherwise); the lock makes it run once.
        """
        assert self._redis is not None and self._hub is not None
        async with self._recovering:
            if self._healthy:
                return
            await self._forget_node(self.node_id)
            await self._register()
            for state in self._hub.registry.apps.values():
                await self._redis.hset(
                    self._key("conns", state.app.id), self.node_id, len(state.connections)
                )
                for user_id in list(state.users):
                    await self._user_in(
                        keys=self._user_keys(state.app.id),
                        args=[user_id, f"{state.app.id}{_SEP}{user_id}"],
                    )
                for channel in list(state.channels.values()):
                    for conn in list(channel.subscribers.values()):
                        member = conn.session.subscriptions.get(channel.name)
                        if member is not None:
                            await self._presence_join(
                                state, channel.name, conn.socket_id, member, cap=0
                            )
                        await self._subs(
                            keys=self._subs_keys(state),
                            args=[channel.name, self._node_field(state, channel.name), 1],
                        )
            self._set_healthy()
        log.info("Redis is back: node %s re-registered", self.node_id)

    # --- presence ---------------------------------------------------------------------------

    def _presence_keys(self, state: AppState, channel: str) -> list[str]:
        app = state.app.id
        return [
            self._key("presence", app, channel),
            self._key("presence_users", app, channel),
            self._key("node", self.node_id, "presence"),
        ]

    async def _presence_join(
        self, state: AppState, channel: str, socket_id: str, member: Member, cap: int
    ) -> list[Any]:
        field = f"{self.node_id}{_SEP}{socket_id}"
        entry = _SEP.join((state.app.id, channel, socket_id, member.key))
        value = orjson.dumps({"user_id": member.user_id, "user_info": member.user_info})
        result: list[Any] = await self._join(
            keys=self._presence_keys(state, channel), args=[field, member.key, value, cap, entry]
        )
        return result

    async def presence_join(
        self, state: AppState, channel: str, socket_id: str, member: Member
    ) -> PresenceJoin | None:
        if not self._healthy:
            return None
        try:
            result = await self._presence_join(
                state, channel, socket_id, member, state.app.max_presence_members
            )
        except Exception as exc:
            self._lost(exc)
            return None
        if result[0] == -1:
            raise PresenceFull(channel)
        members = [Member(m["user_id"], m.get("user_info")) for m in map(orjson.loads, result[1])]
        return PresenceJoin(first=bool(result[0]), members=members)

    async def presence_leave(
        self, state: AppState, channel: str, socket_id: str, member: Member
    ) -> bool | None:
        if not self._healthy:
            return None
        field = f"{self.node_id}{_SEP}{socket_id}"
        entry = _SEP.join((state.app.id, channel, socket_id, member.key))
        try:
            return bool(
                await self._leave(
                    keys=self._presence_keys(state, channel), args=[field, member.key, entry]
                )
            )
        except Exception as exc:
            self._lost(exc)
            return None

    async def presence_members(self, state: AppState, channel: str) -> list[Member] | None:
        if not self._healthy or self._redis is None:
            return None
        try:
            values = await self._redis.hvals(self._key("presence", state.app.id, channel))
        except Exception as exc:
            self._lost(exc)
            return None
        return [Member(m["user_id"], m.get("user_info")) for m in map(orjson.loads, values)]

    # --- counts -----------------------------------------------------------------------------

    def _subs_keys(self, state: AppState) -> list[str]:
        return [self._key("subs", state.app.id), self._key("node", self.node_id, "subs")]

    def _node_field(self, state: AppState, channel: str) -> str:
        return f"{state.app.id}{_SEP}{channel}"

    async def subscriptions_changed(self, state: AppState, channel: str, delta: int) -> int | None:
        if not self._healthy:
            return None
        try:
            count: int = await self._subs(
                keys=self._subs_keys(state), args=[channel, self._node_field(state, channel), delta]
            )
        except Exception as exc:
            self._lost(exc)
            return None
        return int(count)

    async def channel_counts(self, state: AppState) -> dict[str, int] | None:
        if not self._healthy or self._redis is None:
            return None
        try:
            raw = await self._redis.hgetall(self._key("subs", state.app.id))
        except Exception as exc:
            self._lost(exc)
            return None
        return {str(k): int(v) for k, v in raw.items() if int(v) > 0}

    async def connection_count(self, state: AppState) -> int | None:
        if not self._healthy or self._redis is None:
            return None
        try:
            raw = await self._redis.hgetall(self._key("conns", state.app.id))
        except Exception as exc:
            self._lost(exc)
            return None
        counts = {str(k): int(v) for k, v in raw.items()}
        counts[self.node_id] = len(state.connections)
        return sum(counts.values())

    def _user_keys(self, app_id: str, node: str | None = None) -> list[str]:
        return [self._key("users", app_id), self._key("node", node or self.node_id, "users")]

    async def user_signed_in(self, state: AppState, user_id: str) -> bool | None:
        if not self._healthy:
            return None
        try:
            n = await self._user_in(
                keys=self._user_keys(state.app.id), args=[user_id, f"{state.app.id}{_SEP}{user_id}"]
            )
        except Exception as exc:
            self._lost(exc)
            return None
        return int(n) == 1

    async def user_signed_out(self, state: AppState, user_id: str) -> bool | None:
        if not self._healthy:
            return None
        try:
            n = await self._user_out(
                keys=self._user_keys(state.app.id), args=[user_id, f"{state.app.id}{_SEP}{user_id}"]
            )
        except Exception as exc:
            self._lost(exc)
            return None
        return int(n) == 0

    async def users_online(self, state: AppState, user_ids: tuple[str, ...]) -> list[str] | None:
        if not self._healthy or self._redis is None or not user_ids:
            return None
        try:
            counts = await self._redis.hmget(self._key("users", state.app.id), list(user_ids))
        except Exception as exc:
            self._lost(exc)
            return None
        return [u for u, n in zip(user_ids, counts, strict=True) if n is not None and int(n) > 0]

    def other_connections(self, state: AppState) -> int:
        return self._others.get(state.app.id, 0)

    def cache_set(self, state: AppState, channel: str, event: str, data: Any, ttl: float) -> None:
        if not self._healthy:
            return
        key = self._key("cache", state.app.id, channel)
        self._enqueue(key, orjson.dumps({"e": event, "d": data}), max(1, int(ttl * 1000)))

    async def cache_get(self, state: AppState, channel: str) -> tuple[str, Any, float] | None:
        if not self._healthy or self._redis is None:
            return None
        key = self._key("cache", state.app.id, channel)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.pttl(key)
                raw, pttl = await pipe.execute()
        except Exception as exc:
            self._lost(exc)
            return None
        if raw is None or pttl is None or int(pttl) <= 0:
            return None
        entry = orjson.loads(raw)
        return entry["e"], entry["d"], int(pttl) / 1000

    # --- heartbeat and reaping --------------------------------------------------------------

    async def _heartbeat(self) -> None:
        assert self._redis is not None and self._hub is not None
        while True:
            await asyncio.sleep(HEARTBEAT)
            try:
                if not self._healthy:
                    await self._recover()
                    continue
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.time()
                    pipe.zadd(self._key("nodes"), {self.node_id: time.time()})
                    apps = list(self._hub.registry.apps.values())
                    for state in apps:
                        pipe.hset(
                            self._key("conns", state.app.id), self.node_id, len(state.connections)
                        )
                    for state in apps:
                        pipe.hgetall(self._key("conns", state.app.id))
                    replies = await pipe.execute()
                if self._pubsub is not None and not self._catch_up:
                    self._clock_ms = _ms(replies[0])  # the link was up until now
                for state, counts in zip(apps, replies[-len(apps) :] if apps else [], strict=True):
                    self._others[state.app.id] = sum(
                        int(v) for k, v in counts.items() if k != self.node_id
                    )
                await self._reap_dead_nodes()
            except Exception as exc:
                self._lost(exc)

    async def _reap_dead_nodes(self) -> None:
        assert self._redis is not None
        cutoff = time.time() - self._node_timeout
        for raw in await self._redis.zrangebyscore(self._key("nodes"), "-inf", cutoff):
            node = str(raw)
            if await self._redis.set(self._key("reaping", node), self.node_id, nx=True, ex=60):
                log.warning("node %s stopped answering: removing its members and counts", node)
                await self._forget_node(node, announce=True)

    async def _forget_node(self, node: str, announce: bool = False) -> None:
        """Remove everything ``node`` added; with ``announce``, tell the cluster who left."""
        assert self._redis is not None
        r = self._redis
        presence_key = self._key("node", node, "presence")
        for raw in await r.smembers(presence_key):
            app, channel, socket_id, user_key = str(raw).split(_SEP)
            field = f"{node}{_SEP}{socket_id}"
            keys = [
                self._key("presence", app, channel),
                self._key("presence_users", app, channel),
                presence_key,
            ]
            value = await r.hget(keys[0], field)
            if (
                await self._leave(keys=keys, args=[field, user_key, raw])
                and announce
                and self._hub is not None
            ):
                user_id = orjson.loads(value)["user_id"] if value else user_key
                self._hub.member_gone(app, channel, user_id)
        users_key = self._key("node", node, "users")
        for raw in await r.smembers(users_key):
            app, user_id = str(raw).split(_SEP)
            left = await self._user_out(keys=self._user_keys(app, node), args=[user_id, str(raw)])
            if int(left) == 0 and announce and self._hub is not None:
                self._hub.user_gone(app, user_id)
        subs_key = self._key("node", node, "subs")
        for raw_field, raw_count in (await r.hgetall(subs_key)).items():
            app, channel = str(raw_field).split(_SEP)
            left = await r.hincrby(self._key("subs", app), channel, -int(raw_count))
            if left <= 0:
                await r.hdel(self._key("subs", app), channel)
                if announce and self._hub is not None:
                    self._hub.channel_gone(app, channel)
        async with r.pipeline(transaction=False) as pipe:
            pipe.delete(presence_key, subs_key, users_key)
            for app in self._apps:
                pipe.hdel(self._key("conns", app), node)
            pipe.zrem(self._key("nodes"), node)
            await pipe.execute()


def _ms(now: Any) -> int:
    """Redis's ``TIME`` reply in milliseconds."""
    seconds, micros = now
    return int(seconds) * 1000 + int(micros) // 1000


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
