"""The console's charts: the last 15 minutes of each app's figures, in a ring buffer.

A sampler (``console.web``) reads counters the server already keeps, every ``interval``
seconds, and ``Series.add`` turns running totals into rates per second. Pure: no clock of its
own, no I/O.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

WINDOW = 15 * 60.0
"""Seconds of history the charts show."""

GAUGES = ("connections", "channels", "users", "webhooks_queued")
"""Figures read as they are at sampling time."""
RATES = ("messages_in", "messages_out", "api_requests", "webhooks_failed")
"""Running totals, charted as a rate per second between two samples."""


@dataclass(frozen=True, slots=True)
class Totals:
    """What the sampler read at one moment (``time``: wall clock, seconds)."""

    time: float
    connections: int
    channels: int
    users: int
    webhooks_queued: int
    messages_in: int
    messages_out: int
    api_requests: int
    webhooks_failed: int


class Series:
    """One app's samples: gauges as read, totals as rates since the previous sample."""

    def __init__(self, interval: float, window: float = WINDOW) -> None:
        self.interval = interval
        self.samples: deque[dict[str, Any]] = deque(maxlen=max(2, int(window / interval) + 1))
        self._last: Totals | None = None

    def add(self, totals: Totals) -> dict[str, Any]:
        """Record one reading; returns the sample (rates are 0 for the first one)."""
        sample: dict[str, Any] = {"time": totals.time}
        for name in GAUGES:
            sample[name] = getattr(totals, name)
        last = self._last
        elapsed = totals.time - last.time if last is not None else 0.0
        for name in RATES:
            if last is None or elapsed <= 0:
                sample[name] = 0.0
            else:
                # A counter that went down (reset) counts from zero, never as a negative rate.
                delta = getattr(totals, name) - getattr(last, name)
                sample[name] = round(max(delta, 0) / elapsed, 3)
        self._last = totals
        self.samples.append(sample)
        return sample

    def history(self) -> list[dict[str, Any]]:
        return list(self.samples)
