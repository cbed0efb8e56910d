"""The process's event counters: the one piece of observability the hot path touches.

The socket layer, the fan-out and the HTTP API bump plain integers here (one dict increment per
socket read, per socket write, per broadcast call, never per subscriber of a broadcast); the
Prometheus collector (``metrics``) reads them when scraped. A leaf module, so every layer may
count without importing the layers above it. With ``debug`` set, every frame in and out is also
logged (masked, see ``logs``).
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol

from reverbpy import logs
from reverbpy.protocol import messages
from reverbpy.protocol.errors import ErrorCode


class Socket(Protocol):
    """What the counters need to know of a socket (``dispatch.Peer`` is one)."""

    @property
    def socket_id(self) -> str: ...

    @property
    def app_id(self) -> str: ...


log = logging.getLogger("reverbpy.frames")

FANOUT_BUCKETS = (0, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# The ``status`` label of each HTTP status, made once: ``str(200)`` per request is a new string,
# hashed again for the counter's key.
_STATUS_LABELS = {status: str(status) for status in range(100, 600)}
CLIENT_RATE_LIMITED = messages.error(
    ErrorCode.RATE_LIMITED, "Client event rejected due to rate limit"
)


class Histogram:
    """A lock-free histogram for one event loop: ``observe`` is a bisect and two additions."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
        return out


class Wire:
    """Event counters bumped by the socket layer and the HTTP middleware.

    With ``debug`` set, every frame in and out is also logged (masked, see ``logs``).
    """

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "connections",
        "debug",
        "disconnections",
        "fanout",
        "http_latency",
        "http_requests",
        "messages_in",
        "messages_out",
        "rate_limited",
        "refused",
    )

    def __init__(self) -> None:
        self.debug = False
        self.connections: defaultdict[str, int] = defaultdict(int)
        self.disconnections: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.messages_in: defaultdict[str, int] = defaultdict(int)
        self.bytes_in: defaultdict[str, int] = defaultdict(int)
        self.messages_out: defaultdict[str, int] = defaultdict(int)
        self.bytes_out: defaultdict[str, int] = defaultdict(int)
        self.rate_limited: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.http_requests: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self.http_latency: defaultdict[str, Histogram] = defaultdict(
            lambda: Histogram(LATENCY_BUCKETS)
        )
        self.fanout = Histogram(FANOUT_BUCKETS)
        self.refused: defaultdict[str, int] = defaultdict(int)

    # --- WebSocket side (websocket.py, connection.py, dispatch.py) ------------------------

    def connected(self, conn: Socket, remote: str | None) -> None:
        self.connections[conn.app_id] += 1
        if self.debug:
            extra = {"app_id": conn.app_id, "socket_id": conn.socket_id, "remote": remote}
            log.debug("connected", extra=extra)

    def disconnected(self, conn: Socket, code: int | None) -> None:
        self.disconnections[conn.app_id, str(code if code is not None else 1006)] += 1
        if self.debug:
            log.debug(
                "closed", extra={"app_id": conn.app_id, "socket_id": conn.socket_id, "code": code}
            )

    def received(self, conn: Socket, payload: bytes) -> None:
        app_id = conn.app_id
        self.messages_in[app_id] += 1
        self.bytes_in[app_id] += len(payload)
        if self.debug:
            extra = {"app_id": app_id, "socket_id": conn.socket_id}
            log.debug("in  %s", logs.mask_frame(payload), extra=extra)

    def replied(self, conn: Socket, frame: bytes) -> None:
        if frame == CLIENT_RATE_LIMITED:
            self.rate_limited[conn.app_id, "client_event"] += 1

    def count_out(self, app_id: str, messages: int, size: int) -> None:
        """Messages and bytes sent: counted once per broadcast, not once per subscriber."""
        self.messages_out[app_id] += messages
        self.bytes_out[app_id] += size

    def sent(self, conn: Socket, frames: list[bytes]) -> None:
        """With --debug only: log each frame of one ``transport.write``."""
        if self.debug:
            extra = {"app_id": conn.app_id, "socket_id": conn.socket_id}
            for frame in frames:
                log.debug("out %s", logs.mask_frame(logs.frame_payload(frame)), extra=extra)

    def broadcast(self, recipients: int) -> None:
        self.fanout.observe(recipients)

    # --- HTTP API -------------------------------------------------------------------------

    def http(self, endpoint: str, app_id: str, status: int, seconds: float) -> None:
        self.http_requests[endpoint, app_id, _STATUS_LABELS.get(status) or str(status)] += 1
        self.http_latency[endpoint].observe(seconds)
        if status == 429:
            self.rate_limited[app_id, "http_api"] += 1

    def refuse(self, reason: str) -> None:
        """A request refused before routing (``http_api.front``): malformed, too large, too
        slow, or evicted past the pending-heads bound."""
        self.refused[reason] += 1

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


WIRE = Wire()
"""The process's counters. Module-level so the socket layer pays one attribute lookup."""
