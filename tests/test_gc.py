"""Sockets are freed by reference counting alone: their whole life (the upgrade at the front
door, public, private and presence joins, client events, leaving, the client's close or a
dropped link) leaves no reference cycle for the cyclic collector. ``lifecycle.tune_gc`` relies
on it to make full collections, which stop the loop, rare (see there)."""

from __future__ import annotations

import gc
from typing import Any

import orjson

from reverbpy.config import AppConfig, Secret, ServerConfig
from reverbpy.connection import Connection
from reverbpy.http_api.front import FrontDoor
from reverbpy.protocol.auth import sign
from reverbpy.protocol.frames import close_frame
from reverbpy.server import NODE, create_app

APP = AppConfig(id="1", key="k", secret=Secret("s"), accept_client_events_from="all")
HEAD = (
    b"GET /app/k?protocol=7&client=js&version=8.4.0 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
    b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)


class Transport:
    def __init__(self) -> None:
        self.protocol: Any = None
        self.closing = False
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def resume_reading(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def lose(self) -> None:
        """As asyncio's and uvloop's transports do: tell the protocol, then let go of it."""
        protocol, self.protocol = self.protocol, None
        protocol.connection_lost(None)


def frame(message: dict[str, Any]) -> bytes:
    payload = orjson.dumps(message)
    n = len(payload)
    length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return b"\x81" + length + b"\0\0\0\0" + payload


def client_frame(data: bytes) -> bytes:
    return bytes([0x88, 0x80 | len(data)]) + b"\0\0\0\0" + data


async def test_a_sockets_life_leaves_no_cycle_for_the_collector() -> None:
    node = create_app(ServerConfig(apps=(APP,)))[NODE]
    gc.collect()
    gc.disable()
    try:
        for i in range(50):
            door = FrontDoor(node.triggers, lambda: None)  # type: ignore[arg-type,return-value]
            transport = Transport()
            door.connection_made(transport)  # type: ignore[arg-type]
            door.data_received(HEAD)
            conn = transport.protocol
            assert isinstance(conn, Connection)
            sid = conn.socket_id
            data = orjson.dumps({"user_id": f"u{i}"}).decode()
            conn.data_received(
                frame({"event": "pusher:subscribe", "data": {"channel": f"c{i % 3}"}})
                + frame({"event": "pusher:subscribe", "data": {"channel": "private-p", "auth": "k:" + sign("s", f"{sid}:private-p")}})
                + frame({"event": "pusher:subscribe", "data": {"channel": "presence-r", "channel_data": data, "auth": "k:" + sign("s", f"{sid}:presence-r:{data}")}})
                + frame({"event": "client-x", "channel": "private-p", "data": {"n": i}})
                + frame({"event": "pusher:unsubscribe", "data": {"channel": f"c{i % 3}"}})
                + frame({"event": "pusher:ping", "data": {}})
            )
            node.outbox.flush()
            assert conn.session.subscriptions.keys() == {"private-p", "presence-r"}
            if i % 2:
                conn.data_received(client_frame(close_frame(1000)[2:]))  # the client closes
            transport.lose()
            node.outbox.flush()
            del door, transport, conn
        assert not node.hub.registry.by_id("1").connections  # type: ignore[union-attr]
        assert gc.collect() == 0
    finally:
        gc.enable()
