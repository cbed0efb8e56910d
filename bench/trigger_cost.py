"""What one signed trigger costs the server in Python, through the front door, in-process.

    python -m bench.trigger_cost                       # 20,000 requests of each shape, best of 5
    python -m bench.trigger_cost --requests 5000 --repeat 1 --shape wsgen
    python -m bench.trigger_cost --requests 10000 --callgrind /tmp/trigger   # instructions

The bench's ``http0`` scenario (0 subscribers) is bounded by the server's CPU: about 40 % of it
in read and write syscalls, the rest in the Python of one request, which is what this measures
with no socket and no load generator (and so no noise from a shared machine): the real
``Triggers`` of ``server.create_app``, a ``FrontDoor`` fed whole requests by ``data_received``
on uvloop (the server's loop), and a transport whose ``write`` only keeps the last answer.

Two request shapes: ``wsgen``'s (``bench/gen/wsgen.c``'s ``pub_send``: one channel, a short
``data``, the query in signing order) and one as the Pusher PHP SDK sends for Laravel's
broadcaster (Guzzle's headers, the query sorted by ``ksort``, ``channels`` as a list, a
JSON-encoded payload in ``data``, a ``socket_id``). Requests are signed beforehand, a few
hundred distinct ones cycled, so the measured loop is the server's work only.

CPU time is ``time.process_time`` over the loop, a noisy figure on a shared machine. The
repeatable one is ``--callgrind``'s instruction count (``bench.callgrind``: the requests'
run minus a run of none, the same set-up).
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Callable
from typing import Any, cast

import orjson
import uvloop

from bench.callgrind import per_unit
from reverbpy.config import AppConfig, Secret, ServerConfig
from reverbpy.http_api.front import FrontDoor, Triggers
from reverbpy.protocol.auth import sign_request
from reverbpy.server import NODE, create_app

APP_ID, KEY, SECRET = "1", "bench-key", "bench-secret-0123456789abcdef"
DISTINCT = 256


class _Transport:
    """Keeps the last answer, so a wrong one fails the run (``check``)."""

    __slots__ = ("closing", "last", "writes")

    def __init__(self) -> None:
        self.closing = False
        self.last = b""
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.last = data
        self.writes += 1

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


def _signed(path: str, params: dict[str, str], body: bytes) -> str:
    signed = {**params, "body_md5": hashlib.md5(body).hexdigest()}
    signature = sign_request("POST", path, signed, SECRET)
    return "&".join(f"{k}={v}" for k, v in signed.items()) + "&auth_signature=" + signature


def wsgen_request(i: int, now: int) -> bytes:
    """As ``bench/gen/wsgen.c`` ``pub_send`` builds it (``-payload 0``)."""
    path = f"/apps/{APP_ID}/events"
    body = b'{"name":"ev","channel":"bench","data":"@ts%d@"}' % (now * 10**9 + i)
    query = _signed(
        path, {"auth_key": KEY, "auth_timestamp": str(now), "auth_version": "1.0"}, body
    )
    head = (
        f"POST {path}?{query} HTTP/1.1\r\nHost: 127.0.0.1:6001\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def laravel_request(i: int, now: int) -> bytes:
    """As pusher-http-php 7 (through Guzzle 7) sends Laravel's ``broadcast(new OrderShipped)``."""
    path = f"/apps/{APP_ID}/events"
    payload = {"order": {"id": i, "status": "shipped", "total": "19.99"}}
    body = orjson.dumps(
        {
            "name": "App\\Events\\OrderShipped",
            "data": orjson.dumps(payload).decode(),
            "channels": [f"private-orders.{i % 50}"],
            "socket_id": f"{1000 + i}.{2000 + i}",
        }
    )
    md5 = hashlib.md5(body).hexdigest()
    params = {"auth_key": KEY, "auth_timestamp": str(now), "auth_version": "1.0", "body_md5": md5}
    signature = sign_request("POST", path, params, SECRET)
    query = "&".join(f"{k}={v}" for k, v in sorted({**params, "auth_signature": signature}.items()))
    head = (
        f"POST {path}?{query} HTTP/1.1\r\nHost: reverb.example.test:8080\r\n"
        f"User-Agent: GuzzleHttp/7\r\nContent-Type: application/json\r\n"
        f"X-Pusher-Library: pusher-http-php 7.2.4\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


SHAPES: dict[str, Callable[[int, int], bytes]] = {
    "wsgen": wsgen_request,
    "laravel": laravel_request,
}


def triggers() -> Triggers:
    config = ServerConfig(apps=(AppConfig(id=APP_ID, key=KEY, secret=Secret(SECRET)),))
    node: Any = create_app(config)[NODE]
    return cast(Triggers, node.triggers)


def run(shape: str, n: int) -> tuple[float, int]:
    """CPU seconds for ``n`` requests of ``shape`` on one kept-alive connection."""
    now = int(time.time())
    requests = [SHAPES[shape](i, now) for i in range(DISTINCT)]
    door = FrontDoor(triggers(), lambda: None)  # type: ignore[arg-type,return-value]
    transport = _Transport()
    door.connection_made(transport)  # type: ignore[arg-type]
    feed = door.data_received
    start = time.process_time()
    for i in range(n):
        feed(requests[i & (DISTINCT - 1)])
    cpu = time.process_time() - start
    if n and (transport.writes != n or not transport.last.startswith(b"HTTP/1.1 200 OK\r\n")):
        raise SystemExit(f"{shape}: {transport.writes} answers, the last {transport.last!r}")
    return cpu, n


async def main(args: argparse.Namespace) -> None:
    for shape in args.shape:
        if args.callgrind:
            work = ["--requests", str(args.requests), "--repeat", "1", "--shape", shape]
            idle = ["--requests", "0", "--repeat", "1", "--shape", shape]
            out = f"{args.callgrind}.{shape}"
            cost = per_unit("bench.trigger_cost", work, idle, args.requests, out)
            print(f"{shape:8} {args.requests:>7} requests  {cost:8,.0f} instructions/request")
            continue
        best = min(run(shape, args.requests)[0] for _ in range(args.repeat))
        per = best / args.requests * 1e6 if args.requests else 0.0
        print(
            f"{shape:8} {args.requests:>7} requests  {per:6.2f} µs CPU/request (best of {args.repeat})"
        )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--shape", action="append", choices=sorted(SHAPES))
    parser.add_argument(
        "--callgrind",
        metavar="PREFIX",
        help="count instructions under callgrind instead (profiles: PREFIX.SHAPE.work/.idle)",
    )
    args = parser.parse_args()
    args.shape = args.shape or ["wsgen", "laravel"]
    return args


if __name__ == "__main__":
    uvloop.run(main(parse()))
