"""HTTP API limits and error shapes: every refusal is a JSON object with the right status."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest

from tests.conftest import ServerProcess, start_server
from tests.functional.raw import api, connect, signed_url


def event(**kw: object) -> dict[str, object]:
    return {"name": "e", "channel": "c", "data": "d", **kw}


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (event(data="x" * 10_241), 413, "larger than 10240"),
        ({"name": "e", "channels": [f"c{i}" for i in range(101)], "data": "d"}, 400, "At most 100"),
        (event(channel="bad name"), 400, "invalid characters"),
        (event(channel="x" * 201), 400, "longer than 200"),
        (event(name="x" * 201), 400, "Event name"),
        ({"name": "e", "channels": ["private-encrypted-a", "b"], "data": "d"}, 400, "Encrypted"),
        (event(data={"not": "a string"}), 400, "'data' must be a string"),
        (event(socket_id="abc"), 400, "socket_id"),
        ({"name": "e", "data": "d"}, 400, "'channels' or 'channel'"),
        (event(info="bogus"), 400, "Unsupported info"),
        (b"{not json", 400, "not valid JSON"),
        ([1, 2], 400, "JSON object"),
    ],
)
async def test_event_validation(http: aiohttp.ClientSession, shared_server: ServerProcess, body: object, status: int, message: str) -> None:
    got, reply = await api(http, shared_server, "POST", "/events", body)
    assert got == status
    assert message in reply["error"]


async def test_batch_limits(http: aiohttp.ClientSession, shared_server: ServerProcess) -> None:
    status, reply = await api(http, shared_server, "POST", "/batch_events", {"batch": [event()] * 11})
    assert status == 400 and "At most 10" in reply["error"]
    status, reply = await api(http, shared_server, "POST", "/batch_events", {"batch": [{"name": "e", "channels": ["a"], "data": "d"}]})
    assert status == 400 and "'channel' is required" in reply["error"]
    status, reply = await api(http, shared_server, "POST", "/batch_events", {"batch": [event()] * 10})
    assert (status, reply) == (200, {})


async def test_nothing_is_published_when_one_batch_item_is_invalid(http: aiohttp.ClientSession, shared_server: ServerProcess) -> None:
    c = await connect(http, shared_server)
    await c.subscribe("atomic")
    status, _ = await api(http, shared_server, "POST", "/batch_events", {"batch": [event(channel="atomic", data="first"), event(channel="bad name")]})
    assert status == 400
    await api(http, shared_server, "POST", "/events", event(channel="atomic", data="sentinel"))
    assert (await c.recv())["data"] == "sentinel"


async def test_empty_collections_are_objects(http: aiohttp.ClientSession, server: ServerProcess) -> None:
    assert await api(http, server, "GET", "/channels") == (200, {"channels": {}})
    assert await api(http, server, "GET", "/channels/nobody") == (200, {"occupied": False})
    assert await api(http, server, "GET", "/channels/presence-x/users") == (200, {"users": []})


async def test_unsigned_and_tampered_requests(http: aiohttp.ClientSession, shared_server: ServerProcess) -> None:
    async with http.post(f"{shared_server.http_url}/apps/{shared_server.app_id}/events", json=event()) as r:
        assert r.status == 401
        assert "auth_key" in (await r.json())["error"]
    # Signed for one body, sent with another.
    url = signed_url(shared_server, "POST", f"/apps/{shared_server.app_id}/events", b'{"name":"e","channel":"c","data":"d"}')
    async with http.post(url, data=b'{"name":"e","channel":"c","data":"evil"}') as r:
        assert r.status == 401
        assert "body_md5" in (await r.json())["error"]
    status, reply = await api(http, shared_server, "GET", "/channels", timestamp=1353088179)
    assert status == 401 and "Timestamp expired" in reply["error"]


async def test_unknown_app_route_and_method(http: aiohttp.ClientSession, shared_server: ServerProcess) -> None:
    async with http.get(f"{shared_server.http_url}/apps/999/channels") as r:
        assert r.status == 404
        assert (await r.json())["error"] == "No matching application for ID [999]."
    async with http.get(f"{shared_server.http_url}/nope") as r:
        assert r.status == 404 and "error" in await r.json()
    async with http.get(f"{shared_server.http_url}/apps/{shared_server.app_id}/events") as r:
        assert r.status == 405 and "error" in await r.json()


async def test_request_body_limit(http: aiohttp.ClientSession, tmp_path: Path) -> None:
    server = start_server(tmp_path, extra_env={"REVERB_MAX_REQUEST_SIZE": "1000"})
    try:
        status, reply = await api(http, server, "POST", "/events", event(data="x" * 2000))
        assert status == 413 and "1000 bytes" in reply["error"]
    finally:
        server.stop()


async def _send_in_pieces(server: ServerProcess, head: str, pieces: list[bytes]) -> bytes:
    """One HTTP request written as the headers, then each piece after a pause."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(head.encode())
        for piece in pieces:
            await asyncio.sleep(0.05)
            writer.write(piece)
            await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def test_a_body_arriving_in_pieces_is_read_whole(shared_server: ServerProcess) -> None:
    body = orjson.dumps(event(data="x" * 5000))
    url = urlsplit(signed_url(shared_server, "POST", f"/apps/{shared_server.app_id}/events", body))
    head = (
        f"POST {url.path}?{url.query} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    response = await _send_in_pieces(shared_server, head, [body[:100], body[100:3000], body[3000:]])
    assert response.startswith(b"HTTP/1.1 200 "), response
    assert response.endswith(b"\r\n\r\n{}")


async def test_a_chunked_body_over_the_limit_is_refused(tmp_path: Path) -> None:
    server = start_server(tmp_path, extra_env={"REVERB_MAX_REQUEST_SIZE": "1000"})
    try:
        body = orjson.dumps(event(data="x" * 2000))
        url = urlsplit(signed_url(server, "POST", f"/apps/{server.app_id}/events", body))
        head = (
            f"POST {url.path}?{url.query} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        chunks = [f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in (body[:600], body[600:])]
        response = await _send_in_pieces(server, head, [*chunks, b"0\r\n\r\n"])
        assert response.startswith(b"HTTP/1.1 413 "), response
        assert b'{"error":"Request body larger than 1000 bytes"}' in response
    finally:
        server.stop()


async def test_keep_alive(shared_server: ServerProcess) -> None:
    """Triggers keep their connection (the front door answers them); a request aiohttp serves,
    a query here, closes it (``front.one_request``: the next head is under the head timeout)."""
    created = 0

    async def on_create(*_: object) -> None:
        nonlocal created
        created += 1

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_create)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), trace_configs=[trace]) as http:
        path = f"/apps/{shared_server.app_id}/events"
        for i in range(3):
            body = orjson.dumps({"name": "e", "channel": "keep-alive", "data": str(i)})
            async with http.post(signed_url(shared_server, "POST", path, body), data=body, headers={"Content-Type": "application/json"}) as r:
                assert r.status == 200
                await r.read()
        assert created == 1
        for _ in range(3):
            async with http.get(signed_url(shared_server, "GET", f"/apps/{shared_server.app_id}/channels")) as r:
                assert r.status == 200 and r.headers["Connection"] == "close"
                await r.read()
    assert created == 3  # the first query reused the triggers' connection, and closed it


async def test_health(http: aiohttp.ClientSession, shared_server: ServerProcess) -> None:
    async with http.get(f"{shared_server.http_url}/up") as r:
        assert r.status == 200
        assert await r.read() == b'{"health":"OK"}'


@pytest.mark.parametrize(("method", "path"), [("POST", "/events"), ("GET", "/channels")])
async def test_a_body_that_does_not_decode_is_refused_with_json(http: aiohttp.ClientSession, shared_server: ServerProcess, method: str, path: str) -> None:
    """Issue 13: ``Content-Encoding: gzip`` on a body that is not gzip. Unsigned, it is refused
    for its signature before the body is looked at; signed, for its body; never a 500."""
    server, garbage = shared_server, b'{"name":"e","channel":"c","data":"not gzip"}'
    full_path = f"/apps/{server.app_id}{path}"
    log_before = len(server.log())
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    for url, status, message in [
        (f"{server.http_url}{full_path}", 401, "Missing auth_key parameter"),
        (signed_url(server, method, full_path, garbage), 400, "Request body could not be decoded"),
        (signed_url(server, method, full_path, garbage, secret="wrong"), 401, "Invalid signature"),
    ]:
        async with http.request(method, url, data=garbage, headers=headers) as r:
            assert (r.status, r.content_type) == (status, "application/json")
            assert message in (await r.json())["error"]
    # The same client goes on (the refusals closed their connections cleanly), and the server
    # logged no traceback.
    assert (await api(http, server, "GET", "/channels"))[0] == 200
    new_log = server.log()[log_before:]
    assert "Traceback" not in new_log and "Unhandled exception" not in new_log


async def test_a_compressed_body_is_signed_as_sent_before_compression(http: aiohttp.ClientSession, shared_server: ServerProcess) -> None:
    body = orjson.dumps(event(channel="gzipped"))
    url = signed_url(shared_server, "POST", f"/apps/{shared_server.app_id}/events", body)
    async with http.post(url, data=gzip.compress(body), headers={"Content-Encoding": "gzip"}) as r:
        assert (r.status, await r.json()) == (200, {})
