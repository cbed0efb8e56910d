"""What one delivery of a broadcast costs the server in Python, in-process: the fan-out loop.

    python -m bench.fanout_cost                        # 2,000 sockets, 200 events, best of 5
    python -m bench.fanout_cost --sockets 2000 --events 50 --repeat 1
    python -m bench.fanout_cost --events 50 --callgrind /tmp/fanout   # instructions

The bench's fan-out scenario delivers each event to every socket of one channel; per socket,
the server queues the event's frame (``dispatch.broadcast``) and writes it when the loop turns
(``Outbox.flush``, ``Connection.flush``). This runs that with real ``Connection``s of the
node ``server.create_app`` builds, subscribed to one channel, whose transports only count
their writes: one ``Hub.trigger`` per loop turn, as an API trigger does, on uvloop. CPU is
``time.process_time`` over the events, divided by the deliveries; the repeatable figure is
``--callgrind``'s instruction count (``bench.callgrind``).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import uvloop

from bench.callgrind import per_unit
from reverbpy.config import AppConfig, Secret, ServerConfig
from reverbpy.connection import Connection
from reverbpy.protocol.session import Session
from reverbpy.server import NODE, create_app

CHANNEL = "bench"


class _Transport:
    """Takes every write at once, as a socket whose kernel buffer has room does."""

    __slots__ = ("writes",)

    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


async def run(sockets: int, events: int) -> float:
    """CPU seconds for ``events`` triggers to one channel of ``sockets`` sockets."""
    config = ServerConfig(apps=(AppConfig(id="1", key="k", secret=Secret("s")),))
    node: Any = create_app(config)[NODE]
    hub, state = node.hub, node.hub.registry.by_id("1")
    transports = [_Transport() for _ in range(sockets)]
    for i, transport in enumerate(transports):
        socket_id = f"{1000 + i}.{2000 + i}"
        session = Session(state, socket_id, time.monotonic)
        t: Any = transport
        conn = Connection(
            socket_id, state, t, node.outbox, session, None, 0.0,  # type: ignore[arg-type]
            sockets=node.sockets,
        )  # fmt: skip
        state.subscribe(conn, CHANNEL, None)
    data = '{"order":{"id":1,"status":"shipped"}}'
    start = time.process_time()
    for _ in range(events):
        hub.trigger(state, [CHANNEL], "ev", data)
        await asyncio.sleep(0)  # the outbox flushes
    cpu = time.process_time() - start
    if any(t.writes != events for t in transports):
        raise SystemExit("a socket missed an event")
    return cpu


async def main(args: argparse.Namespace) -> None:
    if args.callgrind:
        work = ["--sockets", str(args.sockets), "--events", str(args.events), "--repeat", "1"]
        idle = ["--sockets", str(args.sockets), "--events", "0", "--repeat", "1"]
        deliveries = args.sockets * args.events
        cost = per_unit("bench.fanout_cost", work, idle, deliveries, args.callgrind)
        print(f"{args.sockets} sockets x {args.events} events  {cost:8,.0f} instructions/delivery")
        return
    best = min([await run(args.sockets, args.events) for _ in range(args.repeat)])
    deliveries = args.sockets * args.events
    per = best / deliveries * 1e6 if deliveries else 0.0
    print(
        f"{args.sockets} sockets x {args.events} events  {per:6.3f} µs CPU/delivery "
        f"(best of {args.repeat})"
    )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--callgrind",
        metavar="PREFIX",
        help="count instructions under callgrind instead (profiles: PREFIX.work/.idle)",
    )
    return parser.parse_args()


if __name__ == "__main__":
    uvloop.run(main(parse()))
