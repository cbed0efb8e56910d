"""Triggers answered without aiohttp (``http_api.front``), over raw keep-alive sockets: order,
hand-off to aiohttp mid-connection, bodies in pieces, ``Connection: close``, info answers."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest

from tests.conftest import ServerProcess
from tests.functional.raw import connect, signed_url

pytestmark = pytest.mark.usefixtures("shared_server")


def signed(server: ServerProcess, method: str, path: str, body: bytes = b"", *, close: bool = False,
           params: dict[str, str] | None = None, secret: str | None = None) -> bytes:
    url = urlsplit(signed_url(server, method, f"/apps/{server.app_id}{path}", body, params, secret=secret))
    head = f"{method} {url.path}?{url.query} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {len(body)}\r\n" if body or method == "POST" else ""
    head += "Connection: close\r\n" if close else ""
    return (head + "\r\n").encode() + body


def event(channel: str, data: str, **extra: str) -> bytes:
    return orjson.dumps({"name": "e", "channel": channel, "data": data, **extra})


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], object]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    body = await reader.readexactly(int(headers["content-length"]))
    return status, headers, orjson.loads(body)


async def test_pipelined_triggers_then_a_query_on_one_connection(http: aiohttp.ClientSession, shared_server: ServerProcess) -> None:
    server = shared_server
    sub = await connect(http, server)
    await sub.subscribe("front-order")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    requests = [signed(server, "POST", "/events", event("front-order", str(i))) for i in range(3)]
    requests.append(signed(server, "GET", "/channels/front-order", params={"info": "subscription_count"}))
    last = signed(server, "POST", "/events", event("front-order", "3"))
    writer.write(b"".join(requests) + last)
    answers = [await read_response(reader) for _ in requests]
    assert [a[0] for a in answers] == [200] * 4
    assert answers[0][1]["content-type"] == "application/json" and "date" in answers[0][1]
    assert answers[3][2] == {"occupied": True, "subscription_count": 1}
    # aiohttp served the query: it was the connection's last request (``front.one_request``),
    # so the client sends the next one again on a new connection, as HTTP/1.1 has it.
    assert answers[3][1]["connection"] == "close" and await reader.read() == b""
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(last)
    assert (await read_response(reader))[0] == 200
    writer.close()
    assert [(await sub.recv_event("e"))["data"] for _ in range(4)] == ["0", "1", "2", "3"]


async def test_a_body_in_pieces_and_connection_close(shared_server: ServerProcess) -> None:
    server = shared_server
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    request = signed(server, "POST", "/events", event("front-pieces", "x" * 3000), close=True)
    for i in range(0, len(request), 700):
        writer.write(request[i : i + 700])
        await writer.drain()
        await asyncio.sleep(0.02)
    status, headers, body = await read_response(reader)
    assert (status, body, headers["connection"]) == (200, {}, "close")
    assert await asyncio.wait_for(reader.read(), 5) == b""  # and the server closed
    writer.close()


async def test_answers_that_wait_for_channel_info(http: aiohttp.ClientSession, shared_server: ServerProcess) -> None:
    server = shared_server
    sub = await connect(http, server)
    await sub.subscribe("front-info")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    batch = orjson.dumps({"batch": [{"name": "e", "channel": "front-info", "data": "1", "info": "subscription_count"}]})
    writer.write(
        signed(server, "POST", "/events", event("front-info", "0", info="subscription_count"))
        + signed(server, "POST", "/batch_events", batch)
        + signed(server, "POST", "/events", event("front-info", "2"))
    )
    assert (await read_response(reader))[::2] == (200, {"channels": {"front-info": {"subscription_count": 1}}})
    assert (await read_response(reader))[::2] == (200, {"batch": [{"subscription_count": 1}]})
    assert (await read_response(reader))[::2] == (200, {})
    writer.close()


async def test_refusals_are_json(shared_server: ServerProcess) -> None:
    server = shared_server
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    cases = [
        (signed(server, "POST", "/events", event("front-no", "x"), secret="wrong"), 401),
        (signed(server, "POST", "/events", b"{not json"), 400),
        (signed(server, "POST", "/events", orjson.dumps({"name": "e", "channel": "bad name!", "data": "x"})), 400),
    ]
    for request, status in cases:
        writer.write(request)
        answer = await read_response(reader)
        assert answer[0] == status and isinstance(answer[2], dict) and answer[2]["error"]
    # An absurd timestamp is refused like any bad signature, and the connection goes on.
    writer.write(signed(server, "POST", "/events", event("front-no", "x")).replace(b"auth_timestamp=", b"auth_timestamp=" + b"9" * 400, 1))
    assert (await read_response(reader))[0] == 401
    # A body over the limit is left to aiohttp, which refuses it without reading it all.
    head = signed(server, "POST", "/events", b"").replace(b"Content-Length: 0", b"Content-Length: 99999999")
    writer.write(head)
    status, _, body = await read_response(reader)
    assert status == 413 and isinstance(body, dict) and "error" in body
    writer.close()


def chunked(request: bytes) -> bytes:
    """The same request with its body chunked: a shape the front door leaves to aiohttp."""
    head, _, body = request.partition(b"\r\n\r\n")
    head = re.sub(rb"Content-Length: \d+\r\n", b"Transfer-Encoding: chunked\r\n", head + b"\r\n")
    return head + b"\r\n" + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"


def requests_counted(metrics: str, app: str, status: str) -> float:
    wanted = {"endpoint": "/apps/{app_id}/events", "app": app, "status": status}
    for line in metrics.splitlines():
        if line.startswith("reverbpy_http_requests_total{"):
            series, _, value = line.rpartition(" ")
            if dict(re.findall(r'(\w+)="([^"]*)"', series)) == wanted:
                return float(value)
    return 0.0


async def test_both_transports_answer_and_count_alike(http: aiohttp.ClientSession, shared_server: ServerProcess) -> None:
    server = shared_server
    cases = [
        signed(server, "POST", "/events", event("front-same", "x")),
        signed(server, "POST", "/events", b"{not json"),
        signed(server, "POST", "/events", event("front-same", "x"), secret="wrong"),
    ]
    before = await (await http.get(f"{server.http_url}/metrics")).text()
    for request in cases:
        answers = []
        for shape in (request, chunked(request)):  # the front door's, then aiohttp's
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(shape)
            status, headers, body = await read_response(reader)
            answers.append((status, headers["content-type"], body))
            writer.close()
        assert answers[0] == answers[1], answers
    after = await (await http.get(f"{server.http_url}/metrics")).text()
    for status in ("200", "400", "401"):
        assert requests_counted(after, server.app_id, status) - requests_counted(before, server.app_id, status) == 2
