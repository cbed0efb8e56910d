"""The console's live log: records, filters and a rate bound, with no I/O.

The hub, the WebSocket handler and the webhooks hold one ``observer`` reference each, ``None``
while no console stream is open, so the hot path pays one attribute test and builds nothing.
When a stream opens, ``server`` sets that reference to the ``Feed``; ``Feed.record`` then makes
one ``Line`` and offers it to each ``Tap`` (one per open stream). A tap keeps what matches its
``Filter`` up to ``max_per_second`` lines in each second and counts the rest as skipped; what it
holds is bounded too (``max_buffered``), and what falls off a slow reader is counted the same
way. The count reaches the page with the next line or sample, so the operator sees how much the
bound left out.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal[
    "connected",
    "disconnected",
    "subscribed",
    "subscription_error",
    "error",
    "unsubscribed",
    "api_event",
    "client_event",
    "webhook",
]

MAX_LINES_PER_SECOND = 50
"""Lines one console stream receives per second at most; the rest are counted as skipped."""
MAX_BUFFERED = 500
"""Lines one stream holds for a reader that has not taken them yet; older ones are skipped."""


@dataclass(slots=True)  # not frozen: a frozen dataclass' __init__ costs twice as much
class Line:
    """One record of the log. ``detail`` is short text for the operator (a close code, an
    error, a webhook's answer); ``data`` an event's payload, as sent."""

    seq: int
    time: float
    app_id: str
    kind: Kind
    socket_id: str | None = None
    channels: tuple[str, ...] = ()
    event: str | None = None
    detail: str | None = None
    data: Any = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seq": self.seq, "time": self.time, "kind": self.kind}
        if self.socket_id is not None:
            out["socket_id"] = self.socket_id
        if self.channels:
            out["channels"] = list(self.channels)
        if self.event is not None:
            out["event"] = self.event
        if self.detail is not None:
            out["detail"] = self.detail
        if self.data is not None:
            out["data"] = self.data
        return out


@dataclass(frozen=True, slots=True)
class Filter:
    """What one stream wants: one app; a channel and an event name by prefix, a socket id
    exactly. An empty field matches everything."""

    app_id: str
    channel: str = ""
    event: str = ""
    socket_id: str = ""

    def matches(self, line: Line) -> bool:
        return self.admits(line.app_id, line.socket_id, line.channels, line.event)

    def admits(
        self, app_id: str, socket_id: str | None, channels: tuple[str, ...], event: str | None
    ) -> bool:
        if app_id != self.app_id:
            return False
        if self.socket_id and socket_id != self.socket_id:
            return False
        if self.event and not (event or "").startswith(self.event):
            return False
        return not self.channel or any(c.startswith(self.channel) for c in channels)


@dataclass(slots=True, eq=False)
class Tap:
    """One open stream: its filter, its budget for the current second and its queue.

    ``wake`` is called when a line was queued (the transport's reader waits on it).
    """

    filter: Filter
    wake: Callable[[], None] = lambda: None
    max_per_second: int = MAX_LINES_PER_SECOND
    max_buffered: int = MAX_BUFFERED
    lines: deque[Line] = field(default_factory=deque)
    skipped: int = 0
    """Lines left out since the reader last took lines (``take``)."""
    skipped_total: int = 0
    _second: int = -1
    _sent_this_second: int = 0

    def admit(self, second: int) -> bool:
        """Whether the budget of ``second`` (a matching line's) has room; counts it if not."""
        if second != self._second:
            self._second, self._sent_this_second = second, 0
        if self._sent_this_second >= self.max_per_second:
            self._skip(1)
            return False
        self._sent_this_second += 1
        return True

    def push(self, line: Line) -> None:
        """Queue an admitted line; past ``max_buffered`` the oldest is dropped (and counted)."""
        if len(self.lines) >= self.max_buffered:
            self.lines.popleft()
            self._skip(1)
        self.lines.append(line)
        self.wake()

    def _skip(self, n: int) -> None:
        self.skipped += n
        self.skipped_total += n

    def take(self) -> tuple[list[Line], int]:
        """The queued lines and how many were skipped since the last take."""
        lines, skipped = list(self.lines), self.skipped
        self.lines.clear()
        self.skipped = 0
        return lines, skipped


class Feed:
    """The one observer the server's parts report to while a console stream is open."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[Feed | None], None] = lambda feed: None,
    ) -> None:
        self.clock = clock
        self.taps: list[Tap] = []
        self.on_change = on_change
        """Called with the feed when the first tap opens, with None when the last closes: the
        server sets (and clears) the parts' ``observer`` reference there."""
        self._seq = itertools.count(1)

    def open(self, tap: Tap) -> None:
        self.taps.append(tap)
        if len(self.taps) == 1:
            self.on_change(self)

    def close(self, tap: Tap) -> None:
        if tap in self.taps:
            self.taps.remove(tap)
            if not self.taps:
                self.on_change(None)

    def record(
        self,
        kind: Kind,
        app_id: str,
        *,
        socket_id: str | None = None,
        channels: tuple[str, ...] = (),
        event: str | None = None,
        detail: str | None = None,
        data: Any = None,
    ) -> None:
        now = self.clock()
        second = int(now)
        line = None  # made only if a tap takes it: past the bound, a record builds nothing
        for tap in self.taps:
            if tap.filter.admits(app_id, socket_id, channels, event) and tap.admit(second):
                if line is None:
                    line = Line(
                        next(self._seq), now, app_id, kind, socket_id, channels, event, detail, data
                    )
                tap.push(line)
