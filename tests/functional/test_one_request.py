"""What aiohttp serves is its connection's last request (``http_api.front.one_request``): the
client's next request starts at the front door again, under the head timeout."""

from __future__ import annotations

import asyncio

from tests.conftest import ServerProcess


async def test_a_request_aiohttp_serves_closes_its_connection(server: ServerProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /up HTTP/1.1\r\nHost: x\r\n\r\nGET /up HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 10)  # one answer, then EOF
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" in head
    assert body == b'{"health":"OK"}' and answer.count(b"HTTP/1.1") == 1
