"""Small additions to tests/functional/jsclient.py for tests whose clients sit on several nodes.

- `flush()` proves that something did *not* happen anywhere in the cluster: every node's HTTP API
  publishes a sentinel, and each node relays its envelopes through one ordered Redis connection,
  so once a client has the sentinels of all nodes it also has everything those nodes had queued
  for it before (a duplicate `member_added`, an excluded event, an echoed whisper).
- `eventually()` polls an SDK query until it answers what is expected (counts kept in Redis are
  updated just after the client sees a disconnect), with a bounded deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tests.conftest import ServerProcess
from tests.functional.jsclient import JSClient, in_thread, sdk

FLUSH_EVENT = "cluster.flush"
_tokens = itertools.count(1)





async def flush(
    nodes: Sequence[ServerProcess],
    channel: str,
    clients: Iterable[JSClient],
    *,
    echo: bool = False,
    within: float = 10.0,
) -> None:
    """Trigger a sentinel on `channel` through every node's API and wait until each client has all.

    pusher-js clients must be subscribed through the harness (`subscribe`: every event is
    observed); Echo clients (`echo=True`) must listen for `"." + FLUSH_EVENT` on that channel.
    """
    token = f"flush-{next(_tokens)}"
    for i, node in enumerate(nodes):
        await in_thread(sdk(node).trigger, channel, FLUSH_EVENT, {"token": token, "node": i})
    for client in clients:
        for i in range(len(nodes)):

            def mine(m: dict[str, Any], i: int = i) -> bool:
                return m.get("data") == {"token": token, "node": i}

            if echo:
                await client.wait_for(
                    "echo_event",
                    channel=channel,
                    listener="." + FLUSH_EVENT,
                    where=mine,
                    within=within,
                )
            else:
                await client.wait_for(
                    "event", channel=channel, event=FLUSH_EVENT, where=mine, within=within
                )


async def eventually(
    query: Callable[[], Any], expected: Any, *, within: float = 10.0, every: float = 0.1
) -> Any:
    """Call the blocking `query` in a thread until it returns `expected`; fail after `within` s."""
    deadline = time.monotonic() + within
    while True:
        got = await in_thread(query)
        if got == expected:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"still {got!r} after {within}s, expected {expected!r}")
        await asyncio.sleep(every)
