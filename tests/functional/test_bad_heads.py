"""Malformed and half-sent request heads against a real server: each malformed one gets a JSON
4xx and a counted debug line, never a logged traceback; half-sent ones of any method are closed
after ``REVERB_HEAD_TIMEOUT``, the oldest first past ``REVERB_MAX_PENDING_HEADS``, while other
clients are served."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import aiohttp
import orjson

from tests.conftest import ServerProcess, free_port, start_server
from tests.functional.raw import api, connect

MALFORMED = [
    b"POST /apps/1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /apps/1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"GET /up HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\n\r\n",
    b"GET /up HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    b"GET /up HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
    b"GET /up HTTP/1.1\nHost: x\nX-A: \rb\n\n",
    b"POST /apps/1/events HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"GET /app/key HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
]


def refused(metrics: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in metrics.splitlines():
        found = re.fullmatch(r'reverbpy_bad_requests_total\{reason="(\w+)"\} (\S+)', line)
        if found:
            out[found[1]] = float(found[2])
    return out


async def metrics(http: aiohttp.ClientSession, server: ServerProcess) -> dict[str, float]:
    async with http.get(f"{server.http_url}/metrics") as r:
        return refused(await r.text())


async def exchange(server: ServerProcess, request: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(request)
    answer = await asyncio.wait_for(reader.read(), 10)  # each is answered, then closed
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def test_a_malformed_head_is_a_json_4xx_and_a_counted_line_not_a_traceback(
    http: aiohttp.ClientSession, server: ServerProcess
) -> None:
    for request in MALFORMED:
        status, body = await exchange(server, request)
        assert 400 <= status < 500, request[:60]
        assert orjson.loads(body)["error"], request[:60]
    counted = await metrics(http, server)
    assert sum(counted.values()) == len(MALFORMED), counted
    assert "Traceback" not in server.log() and "ERROR" not in server.log()
    assert (await api(http, server, "GET", "/channels"))[0] == 200  # and the server goes on


async def test_half_sent_heads_of_any_method_are_closed_and_bounded(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server = start_server(tmp_path, extra_env={"REVERB_HEAD_TIMEOUT": "2", "REVERB_MAX_PENDING_HEADS": "100"})
    try:
        halves = [
            b"GET /app/" + server.key.encode() + b"?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgr",
            b"GET /apps/" + server.app_id.encode() + b"/channels HTTP/1.1\r\n",
            b"POST /apps/" + server.app_id.encode() + b"/events HTTP/1.1\r\nHost: x\r\n",
            b"",  # connects and sends nothing
        ]
        slow = []
        started = time.monotonic()
        for i in range(300):
            if i == 150:  # past a second of waiting, old half-heads are the ones evicted
                await asyncio.sleep(1.2)
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(halves[i % len(halves)])
            slow.append((reader, writer))
        # Meanwhile a real client connects, subscribes and gets an event.
        client = await connect(http, server)
        await client.subscribe("slowloris")
        assert (await api(http, server, "POST", "/events", {"name": "e", "channel": "slowloris", "data": "d"}))[0] == 200
        assert (await client.recv_event("e"))["data"] == "d"

        async def closed(reader: asyncio.StreamReader) -> bytes:
            return await reader.read()

        # Every one is closed without an answer: evicted, or at the head timeout (+ a sweep).
        leftovers = await asyncio.wait_for(asyncio.gather(*(closed(r) for r, _ in slow)), 15)
        assert all(data == b"" for data in leftovers)
        assert time.monotonic() - started < 1.2 + 2 + 0.5 + 5
        counted = await metrics(http, server)
        assert counted.get("head_timeout", 0) + counted.get("too_many_pending_heads", 0) == 300, counted
        assert counted.get("too_many_pending_heads", 0) >= 150, counted  # the bound held
        for _, writer in slow:
            writer.close()
        assert "Traceback" not in server.log()
    finally:
        server.stop()


async def test_the_metrics_port_answers_a_malformed_head_alike(http: aiohttp.ClientSession, tmp_path: Path) -> None:
    port = free_port()
    server = start_server(tmp_path, extra_env={"REVERB_METRICS_PORT": str(port)})
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split(b" ")[1] == b"400" and orjson.loads(body)["error"]
        async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
            assert r.status == 200 and 'reverbpy_bad_requests_total{reason="malformed"} 1.0' in await r.text()
        assert "Traceback" not in server.log() and "ERROR" not in server.log()
    finally:
        server.stop()
