"""The Redis adapter: several processes and machines behave as one server.

- **Fan-out.** Each node delivers to its own sockets at once, then publishes one envelope on
  ``{prefix}:{channel}``; the other nodes deliver it to theirs. One Redis connection publishes
  in order, so events from one publisher arrive in order everywhere, exactly once.
- **Shared state, in Redis hashes.** Presence members (``presence:{app}:{channel}``, field per
  socket, plus a per-user socket count), subscription counts per channel and connection
  counts per node. Updates are Lua scripts, so "first socket of this user" and "last
  subscriber of this channel" are decided once for the whole cluster.
- **Dead nodes.** Each node refreshes its score in the ``nodes`` sorted set every few seconds
  and records what it added in per-node keys. A node silent for ``node_timeout`` seconds is
  reaped by a survivor (under a lock): its members leave (``member_removed`` once) and its
  counts are subtracted.
- **Outages.** While Redis is unreachable the node keeps serving its own sockets from its own
  state (``healthy`` is False, ``/up`` says so): envelopes published meanwhile are dropped
  (events still reach this node's subscribers), presence and counts answer locally. On
  reconnect the node re-registers its sockets' state, so the cluster view heals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

import orjson

from reverbpy.config import ServerConfig
from reverbpy.protocol.cluster import Envelope, EnvelopeError, decode, encode
from reverbpy.protocol.presence import Member
from reverbpy.scaling.base import ClusterListener, PresenceFull, PresenceJoin

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from reverbpy.registry import AppState

log = logging.getLogger("reverbpy.scaling.redis")

HEARTBEAT = 2.0
POOL_SIZE = 32
MAX_BACKOFF = 5.0
PUBLISH_QUEUE = 100_000

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
        self._url = config.scaling.redis_url
        self._prefix = config.scaling.prefix
        self._topic = f"{config.scaling.prefix}:{config.scaling.channel}"
        self._node_timeout = config.scaling.node_timeout
        self._apps = [a.id for a in config.apps]
        self.node_id = secrets.token_hex(8)
        self._hub: ClusterListener | None = None
        self._redis: Redis | None = None
        # (payload, cache key, ttl ms): a cache key means SET with expiry, else PUBLISH
        self._outbox: asyncio.Queue[tuple[bytes, str, int]] = asyncio.Queue(PUBLISH_QUEUE)
        self._others: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._healthy = False
        self._closing = False
        self._recovering = asyncio.Lock()
        self.dropped = 0
        self.publish_batches = 0
        self.publish_seconds = 0.0

    # --- lifecycle --------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self._healthy

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
        self._join = self._redis.register_script(_PRESENCE_JOIN)
        self._leave = self._redis.register_script(_PRESENCE_LEAVE)
        self._subs = self._redis.register_script(_SUBS_DELTA)
        self._user_in = self._redis.register_script(_USER_IN)
        self._user_out = self._redis.register_script(_USER_OUT)
        try:
            await self._register()
            self._healthy = True
        except Exception as exc:
            log.warning(
                "Redis unreachable at start (%s); serving local clients, will retry",
                type(exc).__name__,
            )
        self._tasks = [
            asyncio.create_task(self._listen(), name="redis-listen"),
            asyncio.create_task(self._publisher(), name="redis-publish"),
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
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._forget_node(self.node_id), 3)
            await self._redis.aclose(close_connection_pool=True)

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    async def _register(self) -> None:
        assert self._redis is not None
        await self._redis.zadd(self._key("nodes"), {self.node_id: time.time()})

    # --- fan-out ----------------------------------------------------------------------------

    def publish(self, envelope: Envelope) -> None:
        if not self._healthy:
            self.dropped += 1
            return
        try:
            self._outbox.put_nowait((orjson.dumps(encode(envelope)), "", 0))
        except asyncio.QueueFull:
            self.dropped += 1

    async def _publisher(self) -> None:
        """One connection, one queue: envelopes leave in the order they were published."""
        assert self._redis is not None
        while not self._closing:
            message = await self._outbox.get()
            batch = [message]
            while not self._outbox.empty() and len(batch) < 512:
                batch.append(self._outbox.get_nowait())
            try:
                started = time.perf_counter()
                async with self._redis.pipeline(transaction=False) as pipe:
                    for payload, key, ttl_ms in batch:
                        if key:
                            pipe.set(key, payload, px=ttl_ms)
                        else:
                            pipe.publish(self._topic, payload)
                    await pipe.execute()
                self.publish_batches += 1
                self.publish_seconds += time.perf_counter() - started
            except Exception as exc:
                self.dropped += len(batch)
                if self._closing:
                    return
                self._lost(exc)

    async def _listen(self) -> None:
        """Subscribe, deliver, and on any failure resubscribe with backoff."""
        assert self._redis is not None
        backoff = 0.1
        while not self._closing:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._topic)
                if not self._healthy:
                    await self._recover()
                backoff = 0.1
                async for message in pubsub.listen():
                    if message.get("type") == "message" and self._hub is not None:
                        try:
                            envelope = decode(orjson.loads(message["data"]))
                        except (orjson.JSONDecodeError, EnvelopeError) as exc:
                            log.warning("bad envelope from the cluster: %s", exc)
                            continue
                        try:
                            self._hub.receive(envelope)
                        except Exception:
                            log.exception("error delivering an envelope from the cluster")
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                raise
            except Exception as exc:
                if self._closing:
                    return
                self._lost(exc)
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            await asyncio.sleep(backoff)
            backoff = min(MAX_BACKOFF, backoff * 2)

    def _lost(self, exc: BaseException) -> None:
        if self._healthy:
            log.warning(
                "lost Redis (%s): serving local clients only until it is back", type(exc).__name__
            )
        self._healthy = False

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
            self._healthy = True
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
        try:
            self._outbox.put_nowait(
                (orjson.dumps({"e": event, "d": data}), key, max(1, int(ttl * 1000)))
            )
        except asyncio.QueueFull:
            self.dropped += 1

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
                    pipe.zadd(self._key("nodes"), {self.node_id: time.time()})
                    apps = list(self._hub.registry.apps.values())
                    for state in apps:
                        pipe.hset(
                            self._key("conns", state.app.id), self.node_id, len(state.connections)
                        )
                    for state in apps:
                        pipe.hgetall(self._key("conns", state.app.id))
                    replies = await pipe.execute()
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
