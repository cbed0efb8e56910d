"""What a node has published and the broker has not taken yet, in order: one for every adapter.

While the link is down (or slow) a node keeps serving its own sockets, and what its hub
publishes for the others waits here instead of being dropped. The buffer is bounded two ways
(``REVERB_SCALING_BUFFER_SIZE`` items, ``REVERB_SCALING_BUFFER_AGE`` seconds): past either the
oldest go, since a live page cares more about the newest events. What is dropped is counted
(``reverbpy_adapter_dropped_envelopes``) and logged once per outage, not once per envelope.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Generic, TypeVar

log = logging.getLogger("reverbpy.scaling")

Item = TypeVar("Item")


class OutageBuffer(Generic[Item]):
    """Items in publication order, each with the monotonic time it was queued."""

    __slots__ = ("_items", "_logged", "_taken", "age", "broker", "dropped", "size")

    def __init__(self, size: int, age: float, broker: str) -> None:
        self.size = size
        self.age = age
        self.broker = broker
        self.dropped = 0
        self._items: deque[tuple[float, Item]] = deque()
        self._taken: list[tuple[float, Item]] = []
        self._logged = False

    def __len__(self) -> int:
        return len(self._items)

    def append(self, item: Item, now: float) -> None:
        if len(self._items) >= self.size:
            self._items.popleft()
            self.drop(1)
        self._items.append((now, item))

    def take(self, now: float, most: int) -> list[Item]:
        """The next ``most`` items, oldest first, without those that waited past ``age``."""
        items, expired = self._items, 0
        batch: list[tuple[float, Item]] = []
        oldest = now - self.age
        while items and len(batch) < most:
            queued_at, item = items.popleft()
            if queued_at < oldest:
                expired += 1
            else:
                batch.append((queued_at, item))
        if expired:
            self.drop(expired)
        self._taken = batch
        return [item for _, item in batch]

    def put_back(self, unsent: int) -> None:
        """The last ``unsent`` items of the last ``take`` were not taken by the broker: they go
        back to the front, in order (sent again later; receivers apply each once)."""
        if unsent:
            self._items.extendleft(reversed(self._taken[-unsent:]))
        self._taken = []

    def drop(self, count: int) -> None:
        self.dropped += count
        if not self._logged:
            self._logged = True
            log.warning(
                "%s link down or slow: envelopes for other nodes dropped, the oldest first"
                " (REVERB_SCALING_BUFFER_SIZE %d, REVERB_SCALING_BUFFER_AGE %gs); counted in"
                " reverbpy_adapter_dropped_envelopes",
                self.broker,
                self.size,
                self.age,
            )

    def link_back(self) -> None:
        """The link is up again: the next overflow is logged again."""
        self._logged = False
