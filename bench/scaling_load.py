"""The WebSocket side of ``bench.scaling``'s cluster scenarios: a Python asyncio driver.

Run by ``bench.scaling`` as a subprocess, talking JSON lines over stdin/stdout:

- first line in: ``{"sockets": [[port, channel-or-null], ...], "key": ..., "conn_rate": R,
  "subscribe": true}``. Every socket is opened (at ``conn_rate``/s), waits for
  ``pusher:connection_established`` and, with ``subscribe``, sends ``pusher:subscribe`` for its
  channel and waits for ``pusher_internal:subscription_succeeded``. Then one line out:
  ``READY {"open": n, "subscribed": n, "errors": n, "open_s": s}``.
- ``{"cmd": "burst"}``: every socket not yet subscribed subscribes at once (as fast as one
  loop can send); answers with the join latencies (subscribe sent to subscription_succeeded).
- ``{"cmd": "count"}``: deliveries so far (``ev`` events received, all sockets).
- ``{"cmd": "report", "t0": mono_s, "t1": mono_s, "seqs": bool}``: per channel, events
  received, distinct, duplicates, out of order (data that are integers: publisher sequence
  numbers), and the deliveries received between t0 and t1 (CLOCK_MONOTONIC seconds, the same
  clock as the caller's ``time.monotonic()``); data ``@ts<ns>@`` (the C generator's) give
  latencies.
- ``{"cmd": "quit"}``.

Bounded: every wait has a timeout; the process exits when stdin closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import Any

import aiohttp
import orjson


class Sock:
    __slots__ = ("channel", "error", "established", "join_ms", "port", "subscribed", "t_sub", "ws")

    def __init__(self, port: int, channel: str | None) -> None:
        self.port = port
        self.channel = channel
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.established = asyncio.Event()
        self.subscribed = asyncio.Event()
        self.t_sub = 0.0
        self.join_ms: float | None = None
        self.error: str | None = None


class Chan:
    __slots__ = ("dups", "last", "n", "ooo", "seen", "seqs")

    def __init__(self) -> None:
        self.n = 0
        self.seen: set[str] = set()
        self.dups = 0
        self.ooo = 0
        self.last = -1
        self.seqs: list[int] = []


class Driver:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.key = cfg["key"]
        self.socks = [Sock(p, c) for p, c in cfg["sockets"]]
        self.chans: dict[str, Chan] = {}
        self.recv_times: list[float] = []
        self.lat_ms: list[float] = []
        self.deliveries = 0
        self.errors = 0
        self.first_error = ""
        self.session: aiohttp.ClientSession | None = None
        self.tasks: list[asyncio.Task[None]] = []

    def note_error(self, msg: str) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = msg[:300]

    async def open_one(self, s: Sock) -> None:
        assert self.session is not None
        url = f"http://127.0.0.1:{s.port}/app/{self.key}?protocol=7&client=js&version=8.4.0"
        try:
            s.ws = await self.session.ws_connect(url, autoping=True, max_msg_size=0, timeout=aiohttp.ClientWSTimeout(ws_close=2))
        except Exception as exc:  # counted, the run goes on
            s.error = repr(exc)
            self.note_error(f"connect: {exc!r}")
            s.established.set()
            return
        self.tasks.append(asyncio.create_task(self.read(s)))

    async def read(self, s: Sock) -> None:
        assert s.ws is not None
        ws = s.ws
        chans = self.chans
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                now = time.monotonic()
                try:
                    frame = orjson.loads(msg.data)
                    event = frame.get("event")
                except ValueError:
                    self.note_error(f"bad frame {msg.data[:100]!r}")
                    continue
                if event == "ev":
                    self.deliveries += 1
                    self.recv_times.append(now)
                    data = frame.get("data")
                    data = data if isinstance(data, str) else orjson.dumps(data).decode()
                    ch = chans.get(frame.get("channel"))
                    if ch is None:
                        ch = chans[frame.get("channel")] = Chan()
                    ch.n += 1
                    if data in ch.seen:
                        ch.dups += 1
                    else:
                        ch.seen.add(data)
                    if data.isdigit():
                        seq = int(data)
                        if seq <= ch.last:
                            ch.ooo += 1
                        ch.last = max(ch.last, seq)
                        ch.seqs.append(seq)
                    elif data.startswith("@ts"):
                        end = data.find("@", 3)
                        with contextlib.suppress(ValueError):
                            self.lat_ms.append((time.monotonic_ns() - int(data[3:end])) / 1e6)
                elif event == "pusher_internal:subscription_succeeded":
                    if s.t_sub:
                        s.join_ms = (now - s.t_sub) * 1000
                    s.subscribed.set()
                elif event == "pusher:connection_established":
                    s.established.set()
                elif event == "pusher:ping":
                    await ws.send_str('{"event":"pusher:pong","data":{}}')
                elif event in ("pusher:error", "pusher:subscription_error", "pusher_internal:subscription_error"):
                    self.note_error(msg.data[:200])
                    s.subscribed.set()
        except Exception as exc:
            self.note_error(f"read: {exc!r}")
        finally:
            s.established.set()
            s.subscribed.set()

    async def subscribe(self, s: Sock) -> None:
        if s.ws is None or s.ws.closed or s.channel is None:
            return
        s.t_sub = time.monotonic()
        await s.ws.send_str(orjson.dumps({"event": "pusher:subscribe", "data": {"channel": s.channel}}).decode())

    async def setup(self) -> dict[str, Any]:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=False))
        rate = float(self.cfg.get("conn_rate") or 1000)
        t0 = time.monotonic()
        pending: list[asyncio.Task[None]] = []
        for i, s in enumerate(self.socks):
            due = t0 + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(self.open_one(s)))
        await asyncio.gather(*pending)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(float(self.cfg.get("setup_timeout", 60))):
                for s in self.socks:
                    await s.established.wait()
        opened = sum(1 for s in self.socks if s.ws is not None and not s.ws.closed)
        if self.cfg.get("subscribe", True):
            for s in self.socks:
                await self.subscribe(s)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(float(self.cfg.get("setup_timeout", 60))):
                    for s in self.socks:
                        if s.ws is not None:
                            await s.subscribed.wait()
        subscribed = sum(1 for s in self.socks if s.join_ms is not None)
        return {"open": opened, "subscribed": subscribed, "errors": self.errors, "first_error": self.first_error,
                "open_s": round(time.monotonic() - t0, 3)}

    async def burst(self) -> dict[str, Any]:
        todo = [s for s in self.socks if s.join_ms is None and s.ws is not None and not s.ws.closed]
        t0 = time.monotonic()
        for s in todo:
            await self.subscribe(s)
        t_sent = time.monotonic()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(60):
                for s in todo:
                    await s.subscribed.wait()
        t_done = time.monotonic()
        lat = sorted(s.join_ms for s in todo if s.join_ms is not None)
        return {"burst": {"sockets": len(todo), "succeeded": len(lat), "send_s": round(t_sent - t0, 3),
                          "all_s": round(t_done - t0, 3), "t0": t0, "t_done": t_done, **pct(lat),
                          "errors": self.errors, "first_error": self.first_error}}

    def report(self, t0: float, t1: float, seqs: bool) -> dict[str, Any]:
        chans = {name: {"n": c.n, "distinct": len(c.seen), "dups": c.dups, "ooo": c.ooo,
                        **({"seqs": c.seqs} if seqs else {})} for name, c in self.chans.items()}
        in_window = sum(1 for t in self.recv_times if t0 <= t <= t1)
        return {"deliveries": self.deliveries, "in_window": in_window, "channels": chans,
                "lat": pct(sorted(self.lat_ms)), "errors": self.errors, "first_error": self.first_error,
                "closed": sum(1 for s in self.socks if s.ws is not None and s.ws.closed)}

    async def close(self) -> None:
        for s in self.socks:
            if s.ws is not None and not s.ws.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(s.ws.close(), 0.5)
        for t in self.tasks:
            t.cancel()
        if self.session is not None:
            await self.session.close()


def pct(vals: list[float]) -> dict[str, Any]:
    if not vals:
        return {"n": 0}
    n = len(vals)
    return {"n": n, "p50_ms": round(vals[n // 2], 2), "p99_ms": round(vals[min(n - 1, int(0.99 * n))], 2),
            "max_ms": round(vals[-1], 2)}


def out(obj: Any, prefix: str = "") -> None:
    sys.stdout.write(prefix + orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    line = await reader.readline()
    if not line:
        return
    driver = Driver(orjson.loads(line))
    try:
        out(await driver.setup(), "READY ")
        while True:
            line = await reader.readline()
            if not line:
                break
            cmd = orjson.loads(line)
            if cmd["cmd"] == "burst":
                out(await driver.burst())
            elif cmd["cmd"] == "count":
                out({"deliveries": driver.deliveries, "errors": driver.errors})
            elif cmd["cmd"] == "report":
                out(driver.report(cmd.get("t0", 0.0), cmd.get("t1", float("inf")), bool(cmd.get("seqs"))))
            elif cmd["cmd"] == "quit":
                break
    finally:
        await driver.close()


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
