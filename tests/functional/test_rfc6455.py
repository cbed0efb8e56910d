"""RFC 6455 on a real server over a raw TCP socket: what browsers may send that aiohttp's client
never does (frames glued to the upgrade request, fragments, control frames between them)."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator

import orjson
import pytest

from reverbpy.protocol.frames import Opcode, accept_key, parse_close
from tests.conftest import ServerProcess
from tests.protocol.test_frames import client_frame

pytestmark = pytest.mark.usefixtures("shared_server")


class RawSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def frame(self, timeout: float = 5) -> tuple[int, bytes]:
        """One server frame: unmasked, never fragmented by reverbpy."""
        head = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        assert head[1] & 0x80 == 0, "server frames are not masked"
        n = head[1] & 0x7F
        if n == 126:
            n = int.from_bytes(await self.reader.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await self.reader.readexactly(8), "big")
        return head[0] & 0x0F, await self.reader.readexactly(n)

    async def event(self) -> dict[str, object]:
        opcode, payload = await self.frame()
        assert opcode == Opcode.TEXT
        message: dict[str, object] = orjson.loads(payload)
        return message


def upgrade(server: ServerProcess, key: str, version: str = "13") -> bytes:
    return (
        f"GET /app/{server.key}?protocol=7 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n\r\n"
    ).encode()


def text(message: dict[str, object]) -> bytes:
    return client_frame(Opcode.TEXT, orjson.dumps(message))


@pytest.fixture
async def raw(shared_server: ServerProcess) -> AsyncIterator[tuple[ServerProcess, RawSocket]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", shared_server.port)
    yield shared_server, RawSocket(reader, writer)
    writer.close()


async def handshake(sock: RawSocket, server: ServerProcess, glued: bytes = b"") -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    sock.send(upgrade(server, key) + glued)
    head = await asyncio.wait_for(sock.reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101 ")
    assert f"Sec-WebSocket-Accept: {accept_key(key)}".encode() in head
    assert (await sock.event())["event"] == "pusher:connection_established"


async def test_frames_glued_to_the_upgrade_request_are_read(raw: tuple[ServerProcess, RawSocket]) -> None:
    server, sock = raw
    await handshake(sock, server, glued=text({"event": "pusher:ping", "data": {}}))
    assert (await sock.event())["event"] == "pusher:pong"


@pytest.mark.parametrize("one_write", [False, True], ids=["frame_by_frame", "one_read"])
async def test_fragments_with_a_ping_between(raw: tuple[ServerProcess, RawSocket], one_write: bool) -> None:
    """The pong comes before the reply to the message the ping interrupted, even when the
    server reads all the frames at once (CI once saw the reply first)."""
    server, sock = raw
    await handshake(sock, server)
    message = orjson.dumps({"event": "pusher:subscribe", "data": {"channel": "rfc-fragments"}})
    frames = [
        client_frame(Opcode.TEXT, message[:10], fin=False),
        client_frame(Opcode.PING, b"between"),
        client_frame(Opcode.CONTINUATION, message[10:20], fin=False),
        client_frame(Opcode.CONTINUATION, message[20:]),
    ]
    for data in [b"".join(frames)] if one_write else frames:
        sock.send(data)
    assert await sock.frame() == (Opcode.PONG, b"between")
    event = await sock.event()
    assert (event["event"], event["channel"]) == ("pusher_internal:subscription_succeeded", "rfc-fragments")


async def test_client_close_is_answered_then_the_link_closed(raw: tuple[ServerProcess, RawSocket]) -> None:
    server, sock = raw
    await handshake(sock, server)
    sock.send(client_frame(Opcode.CLOSE, (1000).to_bytes(2, "big") + b"bye"))
    opcode, payload = await sock.frame()
    assert opcode == Opcode.CLOSE and parse_close(payload) == (1000, "bye")
    assert await asyncio.wait_for(sock.reader.read(), 5) == b""  # the server closed TCP


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (bytes((0x81, 0x02)) + b"{}", 1002),  # unmasked
        (client_frame(Opcode.TEXT, b"{}", rsv=0x40), 1002),  # no extension was negotiated
        (client_frame(Opcode.TEXT, b'{"event":"\xff"}'), 1007),  # not UTF-8
    ],
)
async def test_broken_frames_close_with_the_rfc_code(raw: tuple[ServerProcess, RawSocket], bad: bytes, code: int) -> None:
    server, sock = raw
    await handshake(sock, server)
    sock.send(text({"event": "pusher:ping", "data": {}}) + bad)
    assert (await sock.event())["event"] == "pusher:pong"  # what came before still counts
    opcode, payload = await sock.frame()
    assert opcode == Opcode.CLOSE and parse_close(payload)[0] == code
    assert await asyncio.wait_for(sock.reader.read(), 5) == b""


@pytest.mark.parametrize(
    ("key", "version", "status"),
    [("dGhlIHNhbXBsZSBub25jZQ==", "8", 426), ("not-a-key", "13", 400)],
)
async def test_a_bad_upgrade_gets_a_json_error(raw: tuple[ServerProcess, RawSocket], key: str, version: str, status: int) -> None:
    server, sock = raw
    sock.send(upgrade(server, key, version))
    head = await asyncio.wait_for(sock.reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(f"HTTP/1.1 {status} ".encode())
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    body = orjson.loads(await sock.reader.readexactly(length))
    assert "Sec-WebSocket" in body["error"]
