"""Sharded pub/sub on a Redis Cluster, read the way the Redis adapter reads a plain ``PubSub``.

A Redis Cluster delivers a shard channel (``SPUBLISH``) only to clients subscribed on the
primary that owns the channel's slot, so a node keeps one pub/sub connection per primary and
sends each ``SSUBSCRIBE`` to the owner of its topics (one command per slot: Redis refuses a
``SSUBSCRIBE`` whose channels span slots, but a burst of joins is still sent in one go).

The adapter's listener treats ``ShardedPubSub`` exactly like ``redis.asyncio.client.PubSub``
(``subscribe``, ``unsubscribe``, ``get_message``, ``listen``, ``aclose``; messages typed
``message``, ``subscribe`` and ``unsubscribe``), so an outage is handled the same way on both:
any link that drops, and any shard channel the cluster takes away by itself (a slot that moved,
a primary that failed over), ends ``listen`` with ``LinkLost``. The adapter then subscribes
again on the new topology and reads what it missed from the topics' streams.

redis-py's own ``ClusterPubSub`` re-subscribes silently after a failover or a slot move; that
is the behaviour we must not have here, because the gap would go unnoticed and unread.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError

_KINDS = {"smessage": "message", "ssubscribe": "subscribe", "sunsubscribe": "unsubscribe"}


class LinkLost(RedisConnectionError):
    """A primary's pub/sub link dropped, or it let go of shard channels we still want."""


def no_retry() -> Retry:
    """Fail at once instead of reconnecting and re-subscribing behind the adapter's back."""
    return Retry(NoBackoff(), 0)


class ShardedPubSub:
    """``SSUBSCRIBE`` over every primary of a cluster, one connection each, one message queue."""

    def __init__(self, cluster: RedisCluster, url: str) -> None:
        self._cluster = cluster
        self._url = url
        self._topology_read = False
        self._links: dict[str, PubSub] = {}  # primary (host:port) -> its pub/sub connection
        self._pools: list[ConnectionPool] = []
        self._readers: list[asyncio.Task[None]] = []
        self._reading: set[str] = set()
        self._owner: dict[str, str] = {}  # shard channel -> the primary it was subscribed on
        self._leaving: set[str] = set()  # asked to unsubscribe, not yet confirmed
        self._queue: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue()

    async def subscribe(self, *names: str) -> None:
        if not self._topology_read:
            # Read the slot map again: this pub/sub may follow a failover.
            await self._cluster.nodes_manager.initialize()
            self._topology_read = True
        by_slot: dict[tuple[str, int], list[str]] = defaultdict(list)
        for name in names:
            slot = key_slot(name.encode())
            node = self._cluster.nodes_manager.get_node_from_slot(slot)
            by_slot[(self._primary(node), slot)].append(name)
        for (primary, _), chunk in by_slot.items():
            link = self._link(primary)
            self._leaving.difference_update(chunk)
            for name in chunk:
                self._owner[name] = primary
            # The raw command, not ``PubSub.ssubscribe`` (redis-py 8 only, and it would
            # subscribe again by itself on a reconnect): the replies are read by ``_read``.
            await link.execute_command("SSUBSCRIBE", *chunk)
            self._start_reading(primary, link)

    async def unsubscribe(self, *names: str) -> None:
        by_slot: dict[tuple[str, int], list[str]] = defaultdict(list)
        for name in names:
            primary = self._owner.get(name)
            if primary is not None:
                by_slot[(primary, key_slot(name.encode()))].append(name)
        for (primary, _), chunk in by_slot.items():
            self._leaving.update(chunk)
            await self._links[primary].execute_command("SUNSUBSCRIBE", *chunk)

    async def get_message(self, timeout: float) -> dict[str, Any] | None:  # noqa: ASYNC109
        """As ``PubSub.get_message``: ``None`` when nothing came within ``timeout``."""
        try:
            item = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    async def listen(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            item = await self._queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    async def aclose(self) -> None:
        for task in self._readers:
            task.cancel()
        for link in self._links.values():
            with contextlib.suppress(Exception):
                await link.aclose()
        for pool in self._pools:
            with contextlib.suppress(Exception):
                await pool.aclose()

    @staticmethod
    def _primary(node: Any) -> str:
        return f"{node.host}:{node.port}"

    def _link(self, primary: str) -> PubSub:
        link = self._links.get(primary)
        if link is None:
            host, _, port = primary.rpartition(":")
            options: dict[str, Any] = dict(parse_url(self._url))
            options.pop("db", None)
            options.update(
                host=host,
                port=int(port),
                retry=no_retry(),
                decode_responses=True,
                socket_connect_timeout=2,
            )
            pool = ConnectionPool(**options)
            self._pools.append(pool)
            link = self._links[primary] = Redis(connection_pool=pool).pubsub()
        return link

    def _start_reading(self, primary: str, link: PubSub) -> None:
        """After the link's first command, which connected it: a primary that is down fails
        the subscribe, not the reader."""
        if primary not in self._reading:
            self._reading.add(primary)
            self._readers.append(
                asyncio.create_task(self._read(primary, link), name=f"redis-shard-{primary}")
            )

    async def _read(self, primary: str, link: PubSub) -> None:
        try:
            while True:
                message = await link.get_message(timeout=1.0)
                if message is None:
                    continue
                kind = _KINDS.get(str(message["type"]))
                if kind is None:
                    continue
                name = str(message["channel"])
                if kind == "unsubscribe":
                    if name not in self._leaving:
                        raise LinkLost(f"{primary} dropped the shard channel {name}")
                    self._leaving.discard(name)
                    self._owner.pop(name, None)
                self._queue.put_nowait({"type": kind, "channel": name, "data": message["data"]})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._queue.put_nowait(exc if isinstance(exc, RedisConnectionError) else LinkLost(exc))
