"""The Redis adapter: several processes and machines behave as one server.

- **Fan-out, routed by interest.** Each node delivers to its own sockets at once, then
  publishes one envelope per topic (``protocol.cluster.route``: a channel, a user, a watched
  user) on ``{prefix}:t:{app:kind:name}``. A node subscribes to a topic while it serves it
  (``follow``/``unfollow``, counted by the hub), batching a burst of joins into a few
  ``SUBSCRIBE`` commands, so it never receives traffic for channels it has no socket on: the
  cluster's capacity grows with its nodes instead of being capped by what one node can parse.
  One Redis connection publishes in order, so events from one publisher arrive in order
  everywhere (on a Redis Cluster: in order per channel); each envelope carries its node's
  sequence number, so a node applies it once per topic even when it arrives twice (a retried
  batch, a catch-up read).
- **No silent loss on a blip.** Envelopes wait in a bounded, ordered buffer
  (``buffer_size``, ``buffer_age``) until Redis takes them, and each is also appended to a
  short stream per topic (kept ``buffer_age``), atomically with its ``PUBLISH``. A node whose
  subscriptions dropped re-subscribes, then reads those streams from just before it lost the
  link, so what was published while it was away (or before it was back) is delivered, in
  order, before anything newer. What overflows the buffer is counted
  (``reverbpy_adapter_dropped_envelopes``) and logged once per outage.
- **Shared state, in Redis hashes.** Presence members (a field per socket, plus a per-user
  socket count) and subscription counts (a field per node) per channel, signed-in users per
  app, connection counts per node. Updates are Lua scripts, so "first socket of this user" and
  "last subscriber of this channel" are decided once for the whole cluster.
- **One Redis or a Redis Cluster, the same code.** Every key a script touches shares one hash
  tag (``{app:c:channel}`` for a channel's topic, stream and state; ``{app}`` for an app's
  users), so the scripts run unchanged on a cluster, where a channel lives on one shard and
  channels spread over all of them. There topics are shard channels (``SPUBLISH`` in the send
  script; ``SSUBSCRIBE`` through ``scaling.shards``), and a failover is handled as an outage.
- **Dead nodes.** Each node refreshes its score in the ``nodes`` sorted set every few seconds
  and records what it added in per-node index keys (beside the scripts, since they are in
  other slots). A node silent for ``node_timeout`` seconds is reaped by a survivor (under a
  lock): its members leave (``member_removed`` once) and its counts are subtracted.
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
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson

from reverbpy.config import ServerConfig
from reverbpy.protocol.cluster import (
    CHANNEL,
    Envelope,
    EnvelopeError,
    Topic,
    decode,
    encode,
    route,
)
from reverbpy.protocol.presence import Member
from reverbpy.scaling.base import ClusterListener, PresenceFull, PresenceJoin
from reverbpy.scaling.buffer import OutageBuffer

if TYPE_CHECKING:
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
INDEX_BUCKETS = 16  # keys per node index and per app's channel index (spread over shards)

# Every key a script touches is in one hash slot, so the same scripts run on one Redis and on a
# Redis Cluster: a channel's keys (presence, subscription counts, cache, stream) and its topic
# share the hash tag ``{app:c:channel}``; an app's user keys share ``{app}``. The indexes that
# span slots (a node's record of what it added, for its reaper; an app's occupied channels)
# are extra KEYS that a script updates when they are in reach (one Redis: one atomic step per
# join), and that the adapter writes beside the script on a Redis Cluster.

# KEYS: the topic's stream; ARGV: topic, message, retention ms, PUBLISH or SPUBLISH. The stream
# keeps what was published for ``retention`` ms (a node catching up after a blip reads it); the
# message is published in the same step, so whatever a catch-up read misses, the subscription
# gets. On a Redis Cluster the topic is a shard channel in the stream's slot.
_SEND = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('XADD', KEYS[1], 'MINID', '~', now - tonumber(ARGV[3]), '*', 'm', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return redis.call(ARGV[4], ARGV[1], ARGV[2])
"""

# KEYS: presence hash, users hash[, node index]; ARGV: field, user key, member json, cap[,
# index entry]. Returns {first, members}; {-1} when the channel is full.
_PRESENCE_JOIN = """
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 then  -- (0 is true in Lua)
  local cap = tonumber(ARGV[4])
  if cap > 0 and redis.call('HLEN', KEYS[2]) >= cap then return {-1} end
end
local existed = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[3])
local n = redis.call('HGET', KEYS[2], ARGV[2])
if existed == 1 then
  n = redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
  if KEYS[3] then redis.call('SADD', KEYS[3], ARGV[5]) end
end
return {tonumber(n) == 1 and existed == 1 and 1 or 0, redis.call('HVALS', KEYS[1])}
"""

# KEYS: presence hash, users hash[, node index]; ARGV: field, user key[, index entry].
# 1 when the user's last socket left.
_PRESENCE_LEAVE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
if KEYS[3] then redis.call('SREM', KEYS[3], ARGV[3]) end
local n = redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
if n <= 0 then redis.call('HDEL', KEYS[2], ARGV[2]) return 1 end
return 0
"""

# KEYS: the channel's subscription hash (a field per node)[, node index, app's channel index];
# ARGV: node, delta[, node index entry, channel]. Returns the cluster's count; the hash exists
# exactly while the channel is occupied.
_SUBS_DELTA = """
local mine = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if mine <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
local n = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do n = n + tonumber(v) end
if KEYS[3] then
  redis.call(mine > 0 and 'SADD' or 'SREM', KEYS[2], ARGV[3])
  redis.call(n > 0 and 'SADD' or 'SREM', KEYS[3], ARGV[4])
end
return n
"""

# KEYS: users hash (user -> nodes), user-nodes hash[, node index]; ARGV: user id, node
# field[, index entry]. Counts the nodes the user is on.
_USER_IN = """
if redis.call('HSETNX', KEYS[2], ARGV[2], 1) == 1 then
  if KEYS[3] then redis.call('SADD', KEYS[3], ARGV[3]) end
  return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
end
return tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or 0)
"""

# KEYS: users hash, user-nodes hash[, node index]; ARGV: user id, node field[, index entry].
# -1 when the node had no record.
_USER_OUT = """
if KEYS[3] then redis.call('SREM', KEYS[3], ARGV[3]) end
if redis.call('HDEL', KEYS[2], ARGV[2]) == 0 then return -1 end
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) return 0 end
return n
"""

_SEP = "\x1f"


class RedisAdapter:
    name = "redis"
    local = False

    def __init__(self, config: ServerConfig) -> None:
        scaling = config.scaling
        self._url = scaling.redis_url
        self._prefix = scaling.prefix
        self._node_timeout = scaling.node_timeout
        self._retention_ms = max(1000, int(scaling.buffer_age * 1000))
        self._apps = [a.id for a in config.apps]
        self._sharded = scaling.redis_cluster
        self._publish = "SPUBLISH" if self._sharded else "PUBLISH"
        self.node_id = secrets.token_hex(8)
        self._origin = self.node_id.encode()  # what every message it publishes starts with
        self._hub: ClusterListener | None = None
        self._redis: Any = None  # redis.asyncio.Redis, or RedisCluster
        # What waits for Redis, oldest first: (topic or cache key, message, ttl ms); a ttl
        # means SET with expiry (a cache entry), else an envelope for the topic.
        self._buffer: OutageBuffer[tuple[str, bytes, int]] = OutageBuffer(
            scaling.buffer_size, scaling.buffer_age, "Redis"
        )
        self._queued = asyncio.Event()
        self._up = asyncio.Event()  # set while healthy: the publisher waits on it
        self._back = asyncio.Event()  # Redis answered again: the listener tries at once
        self._seq = 0  # this node's envelopes, numbered
        # The last sequence number applied, per topic and origin node: a topic lives on one
        # shard, so only within a topic do a node's envelopes keep their order.
        self._seen: dict[str, dict[str, int]] = {}
        # This node's subscriptions per "app\x1fchannel" (on a Redis Cluster: when its index changes)
        self._mine: dict[str, int] = {}
        self._calls = asyncio.Semaphore(POOL_SIZE)  # commands in flight, at most
        # Interest: topic -> local count (``follow``); topic names subscribed or unsubscribed
        # as Redis confirmed; the joins waiting for a subscription; topics to reconcile.
        self._interest: dict[Topic, int] = {}
        self._subscribed: set[str] = set()
        self._unsubscribing: set[str] = set()
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._changed: set[Topic] = set()
        self._reconcile = asyncio.Event()
        self._pubsub: Any = None
        self._listener: Any = None  # the client ``_pubsub`` comes from, on one Redis
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
        self._hub = hub
        hub.node_id = self.node_id
        self._redis = self._connect()
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
            if self._sharded:
                await self._redis.aclose()
            else:
                await self._redis.aclose(close_connection_pool=True)
        if self._listener is not None:
            await self._listener.aclose(close_connection_pool=True)

    def _connect(self) -> Any:
        """A client for one Redis, or for a Redis Cluster (commands routed by slot)."""
        options: dict[str, Any] = {
            "socket_connect_timeout": 2,
            "decode_responses": True,
            "socket_timeout": 5,
            "health_check_interval": 10,
        }
        if self._sharded:
            from redis.asyncio.cluster import RedisCluster

            # Its per-node pools raise when full instead of waiting: ``_calls`` bounds the
            # commands in flight instead (each holds at most one connection per shard), so a
            # burst of joins queues here; the rest is room for the publisher, the heartbeat
            # and a catch-up read.
            options.pop("health_check_interval")
            return RedisCluster.from_url(
                self._url.reveal(), max_connections=2 * POOL_SIZE, **options
            )
        from redis.asyncio import BlockingConnectionPool, Redis

        # A bounded pool that makes callers wait for a free connection: 2,000 sockets joining
        # at once must queue for Redis, not open 2,000 connections (or fail on the 101st).
        pool = BlockingConnectionPool.from_url(
            self._url.reveal(), max_connections=POOL_SIZE, timeout=5, **options
        )
        return Redis(connection_pool=pool)

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    def _topic(self, topic: Topic) -> str:
        """``{prefix}:t:{app:kind:name}``: the hash tag puts a channel's topic, stream and
        state in one slot of a Redis Cluster, and spreads channels over the shards."""
        app, kind, name = topic
        return f"{self._prefix}:t:{{{app}:{kind}:{name}}}"

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
            _, _, epoch = await pipe.execute()
        now = await self._redis.time()  # not pipelined: a Redis Cluster refuses that
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
        self._back.set()  # the listener, if it is waiting to try again

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
                    command = self._publish
                    for target, message, ttl_ms in batch:
                        if ttl_ms:
                            pipe.set(target, message, px=ttl_ms)
                        else:
                            # (by name: redis-py < 8 refuses ``evalsha`` in a cluster pipeline)
                            pipe.execute_command(
                                "EVALSHA",
                                sha,
                                1,
                                self._stream(target),
                                target,
                                message,
                                retention,
                                command,
                            )
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
            pubsub = self._new_pubsub()
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
            self._back.clear()
            if not self._catch_up:
                self._catch_up = set(self._subscribed)
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            # Until the next try, or until the heartbeat finds Redis back: a node must not say
            # it is healthy for seconds while its subscriptions are still down (what others
            # publish meanwhile would reach it only after its next try).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._back.wait(), backoff)
            backoff = min(MAX_BACKOFF, backoff * 2)

    def _new_pubsub(self) -> Any:
        """A pub/sub that fails when its link drops: redis-py would otherwise reconnect and
        subscribe again by itself, and what was published in between would go unread."""
        from reverbpy.scaling.shards import ShardedPubSub, no_retry

        if self._sharded:
            return ShardedPubSub(self._redis, self._url.reveal())
        if self._listener is None:
            from redis.asyncio import Redis

            self._listener = Redis.from_url(
                self._url.reveal(),
                retry=no_retry(),
                decode_responses=True,
                socket_connect_timeout=2,
                health_check_interval=10,
            )
        return self._listener.pubsub()

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
            self._deliver(str(message["channel"]), message["data"])
        elif kind == "subscribe":
            name = str(message["channel"])
            self._subscribed.add(name)
            self._unsubscribing.discard(name)
            self._release(name)
        elif kind == "unsubscribe":
            name = str(message["channel"])
            self._subscribed.discard(name)
            self._unsubscribing.discard(name)
            self._seen.pop(name, None)

    def _deliver(self, name: str, message: str) -> None:
        """Apply one message (``node seq envelope``) of topic ``name`` unless it is ours or
        already applied."""
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
        seen = self._seen.get(name)
        if seen is None:
            seen = self._seen[name] = {}
        if seq <= seen.get(origin, 0):
            return  # sent twice (a retried batch, or read from a stream and then live)
        seen[origin] = seq
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
        entries: list[tuple[str, int, str, str]] = []
        for chunk in _chunks(sorted(names), 200):
            async with self._redis.pipeline(transaction=False) as pipe:
                for name in chunk:
                    pipe.xrange(self._stream(name), min=start, count=CATCH_UP_COUNT)
                replies = await pipe.execute()
            for name, reply in zip(chunk, replies, strict=True):
                for _id, fields in reply:
                    origin, _, rest = str(fields.get("m", "")).partition(" ")
                    seq, _, _ = rest.partition(" ")
                    if origin != self.node_id and seq.isdigit():
                        entries.append((origin, int(seq), name, fields["m"]))
        entries.sort()
        for _, _, name, message in entries:
            self._deliver(name, message)
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
            self._mine.clear()
            await self._register()
            for state in self._hub.registry.apps.values():
                app = state.app.id
                await self._redis.hset(
                    self._key("conns", app), self.node_id, len(state.connections)
                )
                for user_id in list(state.users):
                    await self._signed_in(app, user_id)
                for channel in list(state.channels.values()):
                    for conn in list(channel.subscribers.values()):
                        member = conn.session.subscriptions.get(channel.name)
                        if member is not None:
                            await self._presence_join(
                                state, channel.name, conn.socket_id, member, cap=0
                            )
                    if channel.subscribers:
                        await self._subs_delta(app, channel.name, len(channel.subscribers))
            self._set_healthy()
        log.info("Redis is back: node %s re-registered", self.node_id)

    # --- keys -------------------------------------------------------------------------------

    def _channel_key(self, what: str, app: str, channel: str) -> str:
        """A key of one channel's state, in its topic's hash slot."""
        return f"{self._prefix}:{what}:{{{app}:{CHANNEL}:{channel}}}"

    def _app_key(self, what: str, app: str) -> str:
        """A key of one app's state that scripts use together (one hash slot per app)."""
        return f"{self._prefix}:{what}:{{{app}}}"

    def _node_key(self, node: str, what: str, name: str) -> str:
        """What ``node`` added, so that whoever reaps it can take it away again: in one of
        ``INDEX_BUCKETS`` keys by ``name`` (the channel or user), so that on a Redis Cluster
        a burst of joins spreads over the shards instead of queueing on one key's."""
        return self._node_bucket(node, what, _bucket(name))

    def _node_bucket(self, node: str, what: str, bucket: int) -> str:
        return self._key("node", node, what, str(bucket))

    def _channels_key(self, app: str, channel: str) -> str:
        """The app's index of occupied channels, in buckets as a node's index is."""
        return self._channels_bucket(app, _bucket(channel))

    def _channels_bucket(self, app: str, bucket: int) -> str:
        return f"{self._prefix}:channels:{{{app}:{bucket}}}"

    async def _indexed(
        self, index: str, entry: str, script: Any, keys: list[str], args: list[Any]
    ) -> Any:
        """Run ``script`` and add ``entry`` to one of a node's indexes, in one round trip.

        The index is what a reaper reads to undo a dead node's work. On one Redis the script
        adds it (one atomic step); on a Redis Cluster it is in another slot, so it is written
        beside the script, first (the two may run on two shards at once), so that a node that
        dies in between leaves at worst an entry that undoes nothing."""
        from redis.exceptions import NoScriptError

        assert self._redis is not None
        if not self._sharded:
            return await script(keys=[*keys, index], args=[*args, entry])
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.sadd(index, entry)
                pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
                return (await pipe.execute())[1]
        except NoScriptError:  # a restarted Redis: the entry is in, the script ran nowhere
            return await script(keys=keys, args=args)

    async def _unindexed(
        self, index: str, entry: str, script: Any, keys: list[str], args: list[Any]
    ) -> Any:
        """Run ``script`` and take ``entry`` off a node's index (``_indexed``'s undo)."""
        assert self._redis is not None
        if not self._sharded:
            return await script(keys=[*keys, index], args=[*args, entry])
        result = await script(keys=keys, args=args)
        await self._redis.srem(index, entry)
        return result

    # --- presence ---------------------------------------------------------------------------

    def _presence_keys(self, app: str, channel: str) -> list[str]:
        return [
            self._channel_key("presence", app, channel),
            self._channel_key("presence_users", app, channel),
        ]

    async def _presence_join(
        self, state: AppState, channel: str, socket_id: str, member: Member, cap: int
    ) -> list[Any]:
        assert self._redis is not None
        app = state.app.id
        field = f"{self.node_id}{_SEP}{socket_id}"
        entry = _SEP.join((app, channel, socket_id, member.key))
        value = orjson.dumps({"user_id": member.user_id, "user_info": member.user_info})
        result: list[Any] = await self._indexed(
            self._node_key(self.node_id, "presence", channel),
            entry,
            self._join,
            self._presence_keys(app, channel),
            [field, member.key, value, cap],
        )
        return result

    async def presence_join(
        self, state: AppState, channel: str, socket_id: str, member: Member
    ) -> PresenceJoin | None:
        if not self._healthy:
            return None
        try:
            async with self._calls:
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
        if not self._healthy or self._redis is None:
            return None
        app = state.app.id
        field = f"{self.node_id}{_SEP}{socket_id}"
        entry = _SEP.join((app, channel, socket_id, member.key))
        try:
            async with self._calls:
                last = await self._unindexed(
                    self._node_key(self.node_id, "presence", channel),
                    entry,
                    self._leave,
                    self._presence_keys(app, channel),
                    [field, member.key],
                )
        except Exception as exc:
            self._lost(exc)
            return None
        return bool(last)

    async def presence_members(self, state: AppState, channel: str) -> list[Member] | None:
        if not self._healthy or self._redis is None:
            return None
        try:
            async with self._calls:
                values = await self._redis.hvals(
                    self._channel_key("presence", state.app.id, channel)
                )
        except Exception as exc:
            self._lost(exc)
            return None
        return [Member(m["user_id"], m.get("user_info")) for m in map(orjson.loads, values)]

    # --- counts -----------------------------------------------------------------------------

    async def _subs_delta(self, app: str, channel: str, delta: int, node: str = "") -> int:
        """Change ``node``'s subscriptions to ``channel`` (this node's by default) and return
        the cluster's count. The per-channel hash holds a field per node. The node's index and
        the app's index of occupied channels: in the script on one Redis; on a Redis Cluster,
        written beside it, only when a count starts or ends."""
        assert self._redis is not None
        r, node = self._redis, node or self.node_id
        entry = f"{app}{_SEP}{channel}"
        keys, args = [self._channel_key("subs", app, channel)], [node, delta]
        if not self._sharded:
            indexes = [self._node_key(node, "subs", channel), self._channels_key(app, channel)]
            return int(await self._subs(keys=[*keys, *indexes], args=[*args, entry, channel]))
        own = node == self.node_id  # else a reaper subtracting a dead node's count
        before = self._mine.pop(entry, 0) if own else 0
        after = before + delta
        if own and after > 0:
            self._mine[entry] = after
        if own and before <= 0 < delta:  # this node's first
            index = self._node_key(node, "subs", channel)
            n = int(await self._indexed(index, entry, self._subs, keys, args))
        else:
            n = int(await self._subs(keys=keys, args=args))
        if own and after <= 0:
            await r.srem(self._node_key(node, "subs", channel), entry)
        if delta > 0 and n == delta:  # the cluster's first subscriber
            await r.sadd(self._channels_key(app, channel), channel)
        elif n == 0:
            await self._vacated(app, channel)
        return n

    async def _vacated(self, app: str, channel: str) -> None:
        """Off the app's index of occupied channels, unless a join on another node came in
        between (the subscription hash exists again): then it goes back on."""
        assert self._redis is not None
        index = self._channels_key(app, channel)
        await self._redis.srem(index, channel)
        if await self._redis.exists(self._channel_key("subs", app, channel)):
            await self._redis.sadd(index, channel)

    async def subscriptions_changed(self, state: AppState, channel: str, delta: int) -> int | None:
        if not self._healthy:
            return None
        try:
            async with self._calls:
                return await self._subs_delta(state.app.id, channel, delta)
        except Exception as exc:
            self._lost(exc)
            return None

    async def channel_counts(self, state: AppState) -> dict[str, int] | None:
        if not self._healthy or self._redis is None:
            return None
        app, counts = state.app.id, {}
        try:
            async with self._calls:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for bucket in range(INDEX_BUCKETS):
                        pipe.smembers(self._channels_bucket(app, bucket))
                    names = sorted(set().union(*await pipe.execute()))
                for chunk in _chunks(names, 500):
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for name in chunk:
                            pipe.hvals(self._channel_key("subs", app, name))
                        replies = await pipe.execute()
                    for name, values in zip(chunk, replies, strict=True):
                        if (n := sum(map(int, values))) > 0:
                            counts[str(name)] = n
        except Exception as exc:
            self._lost(exc)
            return None
        return counts

    async def channel_count(self, state: AppState, channel: str) -> int | None:
        if not self._healthy or self._redis is None:
            return None
        try:
            async with self._calls:
                values = await self._redis.hvals(self._channel_key("subs", state.app.id, channel))
        except Exception as exc:
            self._lost(exc)
            return None
        return sum(map(int, values))

    async def connection_count(self, state: AppState) -> int | None:
        if not self._healthy or self._redis is None:
            return None
        try:
            async with self._calls:
                raw = await self._redis.hgetall(self._key("conns", state.app.id))
        except Exception as exc:
            self._lost(exc)
            return None
        counts = {str(k): int(v) for k, v in raw.items()}
        counts[self.node_id] = len(state.connections)
        return sum(counts.values())

    # --- users ------------------------------------------------------------------------------

    def _user_keys(self, app: str) -> list[str]:
        return [self._app_key("users", app), self._app_key("user_nodes", app)]

    async def _signed_in(self, app: str, user_id: str) -> int:
        """Record that this node has ``user_id``; the number of nodes that have them."""
        n = await self._indexed(
            self._node_key(self.node_id, "users", user_id),
            f"{app}{_SEP}{user_id}",
            self._user_in,
            self._user_keys(app),
            [user_id, f"{self.node_id}{_SEP}{user_id}"],
        )
        return int(n)

    async def _signed_out(self, app: str, user_id: str, node: str) -> int:
        """The number of nodes that still have ``user_id``; -1 if ``node`` had no record."""
        assert self._redis is not None
        n = await self._unindexed(
            self._node_key(node, "users", user_id),
            f"{app}{_SEP}{user_id}",
            self._user_out,
            self._user_keys(app),
            [user_id, f"{node}{_SEP}{user_id}"],
        )
        return int(n)

    async def user_signed_in(self, state: AppState, user_id: str) -> bool | None:
        if not self._healthy:
            return None
        try:
            async with self._calls:
                return await self._signed_in(state.app.id, user_id) == 1
        except Exception as exc:
            self._lost(exc)
            return None

    async def user_signed_out(self, state: AppState, user_id: str) -> bool | None:
        if not self._healthy:
            return None
        try:
            async with self._calls:
                return await self._signed_out(state.app.id, user_id, self.node_id) == 0
        except Exception as exc:
            self._lost(exc)
            return None

    async def users_online(self, state: AppState, user_ids: tuple[str, ...]) -> list[str] | None:
        if not self._healthy or self._redis is None or not user_ids:
            return None
        try:
            async with self._calls:
                counts = await self._redis.hmget(
                    self._app_key("users", state.app.id), list(user_ids)
                )
        except Exception as exc:
            self._lost(exc)
            return None
        return [u for u, n in zip(user_ids, counts, strict=True) if n is not None and int(n) > 0]

    def other_connections(self, state: AppState) -> int:
        return self._others.get(state.app.id, 0)

    # --- cache channels ---------------------------------------------------------------------

    def cache_set(self, state: AppState, channel: str, event: str, data: Any, ttl: float) -> None:
        if not self._healthy:
            return
        key = self._channel_key("cache", state.app.id, channel)
        self._enqueue(key, orjson.dumps({"e": event, "d": data}), max(1, int(ttl * 1000)))

    async def cache_get(self, state: AppState, channel: str) -> tuple[str, Any, float] | None:
        if not self._healthy or self._redis is None:
            return None
        key = self._channel_key("cache", state.app.id, channel)
        try:
            async with self._calls, self._redis.pipeline(transaction=False) as pipe:
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
                now = await self._redis.time()
                async with self._redis.pipeline(transaction=False) as pipe:
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
                    self._clock_ms = _ms(now)  # the link was up until now
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
        """Remove everything ``node`` added, found through its indexes; with ``announce``,
        tell the cluster who left."""
        assert self._redis is not None
        r, hub = self._redis, self._hub if announce else None
        indexes = {
            what: [self._node_bucket(node, what, b) for b in range(INDEX_BUCKETS)]
            for what in ("presence", "users", "subs")
        }
        for presence_index in indexes["presence"]:
            for raw in await r.smembers(presence_index):
                app, channel, socket_id, user_key = str(raw).split(_SEP, 3)
                field = f"{node}{_SEP}{socket_id}"
                keys = self._presence_keys(app, channel)
                value = await r.hget(keys[0], field)
                args = [field, user_key]
                if await self._unindexed(presence_index, raw, self._leave, keys, args) and hub:
                    user_id = orjson.loads(value)["user_id"] if value else user_key
                    hub.member_gone(app, channel, user_id)
        for users_index in indexes["users"]:
            for raw in await r.smembers(users_index):
                app, user_id = str(raw).split(_SEP, 1)
                if await self._signed_out(app, user_id, node) == 0 and hub is not None:
                    hub.user_gone(app, user_id)
        for subs_index in indexes["subs"]:
            for raw in await r.smembers(subs_index):
                app, channel = str(raw).split(_SEP, 1)
                count = await r.hget(self._channel_key("subs", app, channel), node)
                if count is not None and int(count) > 0:
                    left = await self._subs_delta(app, channel, -int(count), node=node)
                    if left == 0 and hub is not None:
                        hub.channel_gone(app, channel)
        async with r.pipeline(transaction=False) as pipe:
            for keys in indexes.values():
                for key in keys:
                    pipe.delete(key)  # one by one: on a Redis Cluster they are in many slots
            for app in self._apps:
                pipe.hdel(self._key("conns", app), node)
            pipe.zrem(self._key("nodes"), node)
            await pipe.execute()


def _bucket(name: str) -> int:
    """Which of ``INDEX_BUCKETS`` index keys ``name`` goes in (stable across processes)."""
    return zlib.crc32(name.encode()) % INDEX_BUCKETS


def _ms(now: Any) -> int:
    """Redis's ``TIME`` reply in milliseconds."""
    seconds, micros = now
    return int(seconds) * 1000 + int(micros) // 1000


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
