"""Stand-ins for tests of the layers above the transport (hub, liveness): a socket, webhooks."""

from __future__ import annotations

from typing import Any

import orjson

from reverbpy.config import AppConfig, FixedApp, Secret
from reverbpy.dispatch import Outbox, Peer
from reverbpy.protocol.session import Session
from reverbpy.webhooks import Webhooks

APP = AppConfig(id="1", key="k", secret=Secret("s"))


class RecordingPeer(Peer):
    """A socket whose writes are kept as decoded JSON messages."""

    __slots__ = ("closed_with", "frames")

    def __init__(self, socket_id: str, outbox: Outbox, app: AppConfig = APP) -> None:
        source = FixedApp(app)
        super().__init__(socket_id, source, Session(source, socket_id, lambda: 0.0), outbox, 0.0)
        self.frames: list[bytes] = []
        self.closed_with: tuple[int, str] | None = None

    def flush(self) -> int:
        self.frames.extend(self._pending)
        self._pending = []
        return 0

    def close(self, code: int, reason: str) -> None:
        self.flush()
        self.closed = True
        self.closed_with = (code, reason)

    def abort(self) -> None:
        self.closed = True

    def ping(self, now: float, payload: bytes) -> None:
        self.pinged_at = now
        self.send(payload)

    def received(self) -> list[dict[str, Any]]:
        """Every message sent so far (server frames are unmasked text frames)."""
        self.flush()
        out = []
        for frame in self.frames:
            length = frame[1] & 0x7F
            start = 2 if length < 126 else 4 if length == 126 else 10
            out.append(orjson.loads(frame[start:]))
        return out

    def events(self) -> list[str]:
        return [m["event"] for m in self.received()]


class RecordingWebhooks(Webhooks):
    """Webhooks that keep each event instead of sending it."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[dict[str, Any]] = []

    def emit(self, app: AppConfig, event: dict[str, Any]) -> None:
        self.sent.append(event)
