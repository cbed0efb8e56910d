"""The front door's timers and shutdown, with a recording transport and a fake clock."""

from __future__ import annotations

from typing import Any

from reverbpy.config import AppConfig, Secret, ServerConfig
from reverbpy.http_api.front import (
    KEEPALIVE_TIMEOUT,
    REQUEST_TIMEOUT,
    TRIGGERS,
    FrontDoor,
    Triggers,
)
from reverbpy.server import create_app


class Transport:
    def __init__(self) -> None:
        self.closed = False
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def door() -> tuple[FrontDoor, Triggers, Transport]:
    config = ServerConfig(apps=(AppConfig(id="1", key="k", secret=Secret("s")),))
    triggers = create_app(config)[TRIGGERS]
    d = FrontDoor(triggers, lambda: None)  # type: ignore[arg-type,return-value]
    transport = Transport()
    t: Any = transport
    d.connection_made(t)
    return d, triggers, transport


def test_a_trickled_request_expires_from_its_first_byte() -> None:
    d, triggers, transport = door()
    start = d.request_started
    for i in range(5):  # bytes keep coming, slowly: the deadline does not move
        d.data_received(b"POST /apps/1/events HTTP/1.1\r\n"[i : i + 1])
    assert not d.expired(start + REQUEST_TIMEOUT - 1)
    assert d.expired(start + REQUEST_TIMEOUT + 1)
    triggers.sweep(start + REQUEST_TIMEOUT + 1)
    assert transport.closed


def test_an_idle_keep_alive_connection_lasts_as_long_as_aiohttps() -> None:
    d, triggers, transport = door()
    assert not d.expired(d.last_active + KEEPALIVE_TIMEOUT - 1)
    assert d.expired(d.last_active + KEEPALIVE_TIMEOUT + 1)


def test_shutdown_closes_idle_connections_and_lets_a_request_finish() -> None:
    idle, triggers, idle_transport = door()
    busy = FrontDoor(triggers, lambda: None)  # type: ignore[arg-type,return-value]
    busy_transport = Transport()
    t: Any = busy_transport
    busy.connection_made(t)
    busy.data_received(b"POST /apps/1/events HTTP/1.1\r\nContent-Length: 2\r\n\r\n")  # body to come
    triggers.shut_down()
    assert idle_transport.closed and not busy_transport.closed
    busy.data_received(b"{}")  # unsigned: 401, then the connection closes
    assert busy_transport.writes and b"Connection: close" in busy_transport.writes[0]
    assert busy_transport.closed
