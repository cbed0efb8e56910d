"""Soak, slow-client, flood and fault scenarios against real reverbpy processes.

Each scenario is ``async def name(size, workdir) -> dict``: it starts its own servers (and
Redis when it needs one) under ``workdir``, measures, asserts its pass criteria and returns
its figures (also when they are asserted, so a failing run still explains itself through
``SoakFailure.figures``). ``SIZES`` holds the full sizes (``python -m tests.soak``) and the
short ones (``tests/soak/test_soak.py``, part of ``make test``).

Timing criteria are only asserted where the issue states them; everything else is polled
with bounded deadlines, so a loaded 2-core machine is slower, not red.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import secrets
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.conftest import ServerProcess, start_server
from tests.soak.harness import (
    PING,
    Closed,
    RawWS,
    RedisServer,
    api_get,
    cpu_seconds,
    ms,
    open_fds,
    percentile,
    pid_of,
    poll,
    raise_nofile,
    rss_kib,
    scrape,
    state_figures,
    trigger,
)

Figures = dict[str, Any]
STATE_GAUGES = (
    "reverbpy_connections",
    "reverbpy_users",
    "reverbpy_channels",
    "reverbpy_subscriptions",
)


class SoakFailure(AssertionError):
    """A pass criterion failed; ``figures`` holds what was measured."""

    def __init__(self, message: str, figures: Figures) -> None:
        super().__init__(f"{message}\n{orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode()}")
        self.figures = figures


def check(figures: Figures, criteria: dict[str, bool]) -> Figures:
    """Record each criterion's outcome in ``figures``; raise if one failed."""
    figures["criteria"] = criteria
    failed = [name for name, ok in criteria.items() if not ok]
    if failed:
        raise SoakFailure(f"failed: {', '.join(failed)}", figures)
    return figures


def within(value: float, baseline: float, fraction: float = 0.05, slack: float = 0.0) -> bool:
    return value <= baseline * (1 + fraction) + slack


async def gather_bounded(coros: list[Awaitable[Any]], limit: int) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(c: Awaitable[Any]) -> Any:
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


async def _stop(*servers: ServerProcess) -> None:
    await asyncio.gather(*(asyncio.to_thread(s.stop) for s in servers))


# --- 1. connect -> subscribe -> disconnect churn -----------------------------------------


async def churn(size: int, workdir: Path, *, concurrency: int = 64) -> Figures:
    """``size`` cycles of connect, subscribe (public 50 %, private 30 %, presence 20 %),
    disconnect (a quarter abrupt: an RST, some before the subscription's answer); the
    server's RSS, fds, registry gauges and HTTP API view return to within 5 % of a baseline
    taken after a warm-up of the same shape."""
    raise_nofile()
    server = start_server(workdir)
    pid = pid_of(server)
    errors: dict[str, int] = {}

    async def cycle(i: int) -> None:
        kind = i % 10
        data = None
        if kind < 5:
            channel = f"churn-{i % 64}" if i % 7 else f"churn-solo-{i}"
        elif kind < 8:
            channel = f"private-churn-{i % 64}"
        else:
            channel = f"presence-churn-{i % 64}"
            data = orjson.dumps({"user_id": f"u{i % 997}", "user_info": {"i": i}}).decode()
        ws = await RawWS.open(server)
        try:
            ws.subscribe(server, channel, data)
            ending = i % 20
            if ending == 3:  # abrupt, while the server may still be joining
                ws.abort()
                return
            reply = await ws.recv_json()
            if reply["event"] != "pusher_internal:subscription_succeeded":
                raise AssertionError(reply)
            if ending in (0, 5, 10, 15):
                ws.abort()
            else:
                await ws.close()
        finally:
            ws.abort_quietly()

    async def run(first: int, count: int) -> float:
        started = time.monotonic()
        next_i = first

        async def worker() -> None:
            nonlocal next_i
            while next_i < first + count:
                i = next_i
                next_i += 1
                try:
                    await cycle(i)
                except Exception as exc:  # counted, and asserted below
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.monotonic() - started

    async with aiohttp.ClientSession() as http:

        async def idle() -> bool:
            return not any(state_figures(await scrape(http, server)).values())

        async def settled() -> dict[str, Any]:
            m = await scrape(http, server)
            return {
                "connections_opened": m["reverbpy_connections_opened_total"],
                "rss_kib": rss_kib(pid),
                "fds": open_fds(pid),
                **state_figures(await scrape(http, server)),
                "api_channels": len((await api_get(http, server, "/channels"))["channels"]),
                "api_connections": (await api_get(http, server, "/connections"))["connections"],
            }

        try:
            warmup = max(500, size // 20)
            warmup_s = await run(0, warmup)
            await poll(idle, 30)
            await asyncio.sleep(1.0)
            baseline = await settled()
            elapsed = await run(warmup, size)
            settle = await poll(idle, 30)
            await asyncio.sleep(1.0)
            after = await settled()
            # RSS may still be falling back (freed sockets' buffers): give it a bounded while.
            deadline = time.monotonic() + 10
            while not within(after["rss_kib"], baseline["rss_kib"]) and time.monotonic() < deadline:
                await asyncio.sleep(1.0)
                after = await settled()
        finally:
            await _stop(server)
    figures: Figures = {
        "cycles": size,
        "warmup_cycles": warmup,
        "concurrency": concurrency,
        "seconds": round(elapsed, 1),
        "cycles_per_s": round(size / elapsed),
        "warmup_seconds": round(warmup_s, 1),
        "errors": errors,
        "settle_s": None if settle is None else round(settle, 2),
        "baseline": baseline,
        "after": after,
        "rss_growth_pct": round(100 * (after["rss_kib"] / baseline["rss_kib"] - 1), 2),
    }
    return check(
        figures,
        {
            "no_client_errors": not errors,
            "every_cycle_reached_the_server": after["connections_opened"]
            - baseline["connections_opened"]
            == size,
            "rss_within_5pct": within(after["rss_kib"], baseline["rss_kib"]),
            "fds_within_5pct": within(after["fds"], baseline["fds"], slack=1),
            "gauges_back": all(after[k] == baseline[k] for k in STATE_GAUGES),
            "api_view_back": after["api_channels"] == baseline["api_channels"]
            and after["api_connections"] == baseline["api_connections"],
        },
    )


# --- 2. subscribers that never read ------------------------------------------------------


class Readers:
    """Subscribers that read everything and record each event's latency (sent at ``t``)."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.seqs: list[set[int]] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.recording = True

    def add(self, ws: RawWS) -> None:
        seen: set[int] = set()
        self.seqs.append(seen)
        self.tasks.append(asyncio.create_task(self._read(ws, seen)))

    async def _read(self, ws: RawWS, seen: set[int]) -> None:
        with contextlib.suppress(Closed):
            while True:
                msg = await ws.recv_json(timeout=3600)
                if msg["event"] == "tick":
                    data = orjson.loads(msg["data"])
                    seen.add(data["seq"])
                    if self.recording:
                        self.latencies.append(time.time() - data["t"])

    def take(self) -> list[float]:
        got, self.latencies = self.latencies, []
        return got

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _publish(
    http: aiohttp.ClientSession,
    server: ServerProcess,
    channel: str,
    rate: float,
    until: Callable[[], bool],
    seq: list[int],
    pad: int,
) -> list[int]:
    """Trigger ``tick`` events at ``rate``/s until ``until()``; returns the accepted seqs."""
    accepted: list[int] = []
    start = time.monotonic()
    n = 0
    while not until():
        seq[0] += 1
        s = seq[0]
        status = await trigger(
            http, server, channel, "tick", {"seq": s, "t": time.time(), "pad": "x" * pad}
        )
        if status == 200:
            accepted.append(s)
        n += 1
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    return accepted


async def slow_consumers(
    size: int,
    workdir: Path,
    *,
    readers: int = 50,
    max_write_buffer: int = 65_536,
    rate: float = 50.0,
    pad: int = 4_000,
    drop_within: float = 90.0,
    strict_latency: bool = True,
    phase_s: float = 4.0,
) -> Figures:
    """``size`` subscribers stop reading during a fan-out to them and ``readers`` readers.
    RSS stays under baseline + size x max_write_buffer, every non-reader is dropped as a
    slow consumer, and the readers' p99 latency moves by less than 2x.

    "Moves" against the same fan-out with ``size`` subscribers that do read (phase A2):
    against the readers alone (A1, also reported) it would measure the cost of a fan-out 20
    times as large, not of its subscribers being slow."""
    raise_nofile()
    server = start_server(workdir, extra_env={"REVERB_MAX_WRITE_BUFFER": str(max_write_buffer)})
    pid = pid_of(server)
    readers_ = Readers()
    seq = [0]
    peak = [0]
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(readers):
                ws = await RawWS.open(server)
                ws.subscribe(server, "fan")
                await ws.recv_event("pusher_internal:subscription_succeeded")
                readers_.add(ws)
            # Phase A: the readers alone.
            t_end = time.monotonic() + phase_s
            accepted = await _publish(
                http, server, "fan", rate, lambda: time.monotonic() > t_end, seq, pad
            )
            lat_a1 = readers_.take()

            # Phase A2: the same fan-out to ``size`` more subscribers that read (and discard).
            async def sink() -> RawWS:
                ws = await RawWS.open(server)
                ws.subscribe(server, "fan")
                await ws.recv_event("pusher_internal:subscription_succeeded")
                return ws

            async def drain(ws: RawWS) -> None:
                with contextlib.suppress(ConnectionError):
                    while await ws.reader.read(1 << 16):
                        pass

            sinks: list[RawWS] = await gather_bounded([sink() for _ in range(size)], 100)
            draining = [asyncio.create_task(drain(ws)) for ws in sinks]
            readers_.take()
            t_end = time.monotonic() + phase_s
            accepted += await _publish(
                http, server, "fan", rate, lambda: time.monotonic() > t_end, seq, pad
            )
            lat_a = readers_.take()
            for ws in sinks:
                ws.abort_quietly()
            await asyncio.gather(*draining, return_exceptions=True)
            await poll(lambda: _true_async(scrape(http, server), readers), 10.0)
            await asyncio.sleep(0.5)
            base_metrics = await scrape(http, server)
            baseline_rss = rss_kib(pid)

            async def sleeper() -> RawWS:
                ws = await RawWS.open(server, rcvbuf=4096)
                ws.subscribe(server, "fan")
                await ws.recv_event("pusher_internal:subscription_succeeded")
                ws.stop_reading()
                return ws

            sleepers: list[RawWS] = await gather_bounded([sleeper() for _ in range(size)], 100)
            connected_rss = rss_kib(pid)
            readers_.take()

            async def sample() -> None:
                while True:
                    peak[0] = max(peak[0], rss_kib(pid))
                    await asyncio.sleep(0.05)

            sampler = asyncio.create_task(sample())
            # Phase B: the same fan-out, now also to the sleepers, until all are dropped.
            state = {"open": size + readers, "done": False}

            async def watch() -> None:
                while not state["done"]:
                    state["open"] = int((await scrape(http, server))["reverbpy_connections"])
                    await asyncio.sleep(0.25)

            watcher = asyncio.create_task(watch())
            started = time.monotonic()
            accepted += await _publish(
                http,
                server,
                "fan",
                rate,
                lambda: state["open"] <= readers or time.monotonic() - started > drop_within,
                seq,
                pad,
            )
            drop_s = time.monotonic() - started
            lat_b = readers_.take()
            # Phase C: after the drops, the readers alone again (they must not be affected).
            t_end = time.monotonic() + phase_s / 2
            accepted += await _publish(
                http, server, "fan", rate, lambda: time.monotonic() > t_end, seq, pad
            )
            await asyncio.sleep(1.0)
            state["done"] = True
            await watcher
            sampler.cancel()
            after = await scrape(http, server)
            after_rss = rss_kib(pid)

            # From the client side: each sleeper's link was dropped (RST or EOF, no close frame).
            async def dropped(ws: RawWS) -> str:
                ws.writer.transport.resume_reading()
                try:
                    async with asyncio.timeout(20):
                        while True:
                            opcode, _ = await ws.recv_frame()
                            if opcode == 0x8:
                                return "close_frame"
                except Closed:
                    return "dropped"
                except TimeoutError:
                    return "still_open"
                finally:
                    ws.abort_quietly()

            outcomes = await gather_bounded([dropped(ws) for ws in sleepers], 200)
            readers_.recording = False
            complete = sum(1 for s in readers_.seqs if set(accepted) <= s)
            await readers_.stop()
    finally:
        await _stop(server)
    budget = baseline_rss + size * max_write_buffer // 1024
    p99_a, p99_b = percentile(lat_a, 99), percentile(lat_b, 99)
    figures: Figures = {
        "non_readers": size,
        "readers": readers,
        "max_write_buffer": max_write_buffer,
        "event_bytes": pad + 40,
        "rate_per_s": rate,
        "events_accepted": len(accepted),
        "rss_baseline_kib": baseline_rss,
        "rss_with_sleepers_connected_kib": connected_rss,
        "rss_peak_kib": peak[0],
        "rss_after_kib": after_rss,
        "rss_budget_kib": budget,
        "dropped_metric": after["reverbpy_slow_consumers_dropped_total"]
        - base_metrics["reverbpy_slow_consumers_dropped_total"],
        "client_view": {k: outcomes.count(k) for k in set(outcomes)},
        "all_dropped_within_s": round(drop_s, 2),
        "readers_complete": complete,
        "p50_ms_readers_only": ms(percentile(lat_a1, 50)),
        "p99_ms_readers_only": ms(percentile(lat_a1, 99)),
        "p50_ms_same_fanout_all_reading": ms(percentile(lat_a, 50)),
        "p99_ms_same_fanout_all_reading": ms(p99_a),
        "p50_ms_during_drop": ms(percentile(lat_b, 50)),
        "p99_ms_during_drop": ms(p99_b),
        "p99_ratio": round(p99_b / p99_a, 2),
        "connections_after": after["reverbpy_connections"],
    }
    # Short runs on a busy CI machine: 2x, or 2x the readers-only p99 plus 250 ms.
    latency_ok = p99_b < 2 * p99_a if strict_latency else p99_b < 2 * p99_a + 0.25
    return check(
        figures,
        {
            "rss_under_budget": peak[0] < budget,
            "every_non_reader_dropped": figures["dropped_metric"] == size
            and outcomes.count("dropped") == size,
            "readers_kept_all_events": complete == readers
            and after["reverbpy_connections"] == readers,
            "p99_less_than_2x": latency_ok,
        },
    )


# --- 3. floods ---------------------------------------------------------------------------


async def floods(size: int, workdir: Path, *, max_write_buffer: int = 65_536) -> Figures:
    """Ping floods (read and unread, pusher:ping and control frames), a subscribe flood on
    one socket (cap: 100 channels), oversized presence ``channel_data``: bounded CPU and
    memory, the right Pusher errors."""
    raise_nofile()
    server = start_server(workdir, extra_env={"REVERB_MAX_WRITE_BUFFER": str(max_write_buffer)})
    pid = pid_of(server)
    figures: Figures = {"size": size}
    criteria: dict[str, bool] = {}
    try:
        async with aiohttp.ClientSession() as http:
            rss0 = rss_kib(pid)
            # a) a reading client sends `size` pusher:ping as fast as it can.
            ws = await RawWS.open(server)
            cpu0 = cpu_seconds(pid)
            started = time.monotonic()

            async def pongs() -> int:
                n = 0
                while n < size:
                    if (await ws.recv_json())["event"] == "pusher:pong":
                        n += 1
                return n

            counter = asyncio.create_task(pongs())
            for i in range(size):
                ws.send("pusher:ping")
                if i % 500 == 499:
                    await ws.writer.drain()
            got = await asyncio.wait_for(counter, 120)
            secs = time.monotonic() - started
            cpu = cpu_seconds(pid) - cpu0
            async with http.get(f"{server.http_url}/up") as r:
                up_ok = r.status == 200
            await ws.close()
            figures["ping_flood"] = {
                "pings": size,
                "pongs": got,
                "seconds": round(secs, 2),
                "server_cpu_us_per_ping": round(1e6 * cpu / size, 1),
                "rss_delta_kib": rss_kib(pid) - rss0,
            }
            criteria["ping_flood_all_answered"] = got == size and up_ok
            criteria["ping_flood_cpu_bounded"] = cpu / size < 0.001  # under 1 ms of CPU per ping

            # b) clients that ping without reading: dropped once the pongs overflow the buffer.
            for name, frame in (("unread_pusher_ping", None), ("unread_control_ping", PING)):
                before = (await scrape(http, server))["reverbpy_slow_consumers_dropped_total"]
                ws = await RawWS.open(server, rcvbuf=4096)
                ws.stop_reading()
                sent, outcome = 0, "still_open"
                deadline = time.monotonic() + 60
                try:
                    while time.monotonic() < deadline:
                        if ws.writer.transport.is_closing():  # the server reset the link
                            outcome = "dropped"
                            break
                        for _ in range(200):
                            if frame is None:
                                ws.send("pusher:ping")
                            else:
                                ws.send_frame(frame, b"x" * 100)
                        sent += 200
                        await asyncio.wait_for(ws.writer.drain(), 10)
                        if ws.writer.transport.is_closing():
                            outcome = "dropped"
                            break
                        await asyncio.sleep(0)
                except ConnectionError:
                    outcome = "dropped"
                except TimeoutError:
                    outcome = "writes_blocked"
                finally:
                    ws.abort_quietly()
                await poll(
                    lambda before=before: _gauge_above(
                        http, server, "reverbpy_slow_consumers_dropped_total", before
                    ),
                    10,
                )
                m = await scrape(http, server)
                figures[name] = {
                    "pings_sent": sent,
                    "outcome": outcome,
                    "rss_delta_kib": rss_kib(pid) - rss0,
                    "dropped_metric": m["reverbpy_slow_consumers_dropped_total"] - before,
                }
                criteria[f"{name}_dropped"] = (
                    outcome == "dropped"
                    and m["reverbpy_slow_consumers_dropped_total"] == before + 1
                )

            # c) a subscribe flood on one socket.
            ws = await RawWS.open(server)
            cpu0 = cpu_seconds(pid)
            for i in range(size // 10):
                ws.subscribe(server, f"flood-{i}")
            replies = [await ws.recv_json() for _ in range(size // 10)]
            ok = sum(r["event"] == "pusher_internal:subscription_succeeded" for r in replies)
            refused = [r for r in replies if r["event"] == "pusher:subscription_error"]
            ws.send("pusher:ping")
            alive = (await ws.recv_json())["event"] == "pusher:pong"
            m = await scrape(http, server)
            figures["subscribe_flood"] = {
                "subscribes": size // 10,
                "succeeded": ok,
                "refused": len(refused),
                "first_refusal": refused[0] if refused else None,
                "subscriptions_gauge": m["reverbpy_subscriptions"],
                "server_cpu_ms": ms(cpu_seconds(pid) - cpu0),
                "rss_delta_kib": rss_kib(pid) - rss0,
            }
            criteria["subscribe_flood_capped_at_100"] = (
                ok == 100
                and len(refused) == size // 10 - 100
                and alive
                and all(r["data"].get("type") == "LimitReached" for r in refused)
                and m["reverbpy_subscriptions"] == 100
            )
            await ws.close()

            # d) oversized presence channel_data.
            ws = await RawWS.open(server)
            big_info = orjson.dumps({"user_id": "big", "user_info": {"bio": "x" * 2000}}).decode()
            ws.subscribe(server, "presence-big", big_info)
            info_reply = await ws.recv_json()
            long_id = orjson.dumps({"user_id": "u" * 200}).decode()
            ws.subscribe(server, "presence-big", long_id)
            id_reply = await ws.recv_json()
            cpu0 = cpu_seconds(pid)
            for _ in range(size // 10):  # a flood of them: refused each time, socket stays
                ws.subscribe(server, "presence-big", big_info)
            flood = [await ws.recv_json() for _ in range(size // 10)]
            flood_cpu = cpu_seconds(pid) - cpu0
            ws.send("pusher:ping")
            alive = (await ws.recv_json())["event"] == "pusher:pong"
            huge = orjson.dumps({"user_id": "huge", "user_info": {"bio": "x" * 20_000}}).decode()
            ws.subscribe(server, "presence-big", huge)
            tail = await ws.until_closed()
            users = await api_get(http, server, "/channels/presence-big/users")
            figures["oversized_channel_data"] = {
                "user_info_2kb": info_reply,
                "user_id_200_chars": id_reply,
                "flood": size // 10,
                "flood_refused": sum(r["event"] == "pusher:subscription_error" for r in flood),
                "flood_server_cpu_ms": ms(flood_cpu),
                "message_20kb": {"before_close": tail, "close_code": ws.close_code},
                "members_after": users,
                "rss_delta_kib": rss_kib(pid) - rss0,
            }
            criteria["oversized_user_info_413"] = (
                info_reply["event"] == "pusher:subscription_error"
                and info_reply["data"]["status"] == 413
                and info_reply["data"]["type"] == "LimitReached"
            )
            criteria["long_user_id_400"] = (
                id_reply["event"] == "pusher:subscription_error"
                and id_reply["data"]["status"] == 400
            )
            criteria["oversized_flood_refused_socket_alive"] = (
                figures["oversized_channel_data"]["flood_refused"] == size // 10 and alive
            )
            criteria["oversized_message_4200_then_1009"] = (
                [m["event"] for m in tail] == ["pusher:error"]
                and tail[0]["data"]["code"] == 4200
                and ws.close_code == 1009
            )
            criteria["no_member_left_behind"] = users == {"users": []}
            figures["rss_total_delta_kib"] = rss_kib(pid) - rss0
            criteria["memory_bounded"] = figures["rss_total_delta_kib"] < 64 * 1024
    finally:
        await _stop(server)
    return check(figures, criteria)


async def _gauge_above(
    http: aiohttp.ClientSession, server: ServerProcess, name: str, value: float
) -> bool:
    return (await scrape(http, server))[name] > value


# --- 4. Redis faults under steady traffic on two nodes -------------------------------------


def _cluster_env(redis: RedisServer, **extra: str) -> dict[str, str]:
    return {
        "REVERB_SCALING_ENABLED": "true",
        "REDIS_URL": redis.url,
        "REVERB_SCALING_PREFIX": f"soak-{secrets.token_hex(4)}",
        **extra,
    }


async def _health(http: aiohttp.ClientSession, node: ServerProcess) -> str:
    try:
        async with http.get(f"{node.http_url}/up", timeout=aiohttp.ClientTimeout(total=2)) as r:
            return str((await r.json(content_type=None)).get("health"))
    except (aiohttp.ClientError, TimeoutError):
        return "unreachable"


class Steady:
    """Steady traffic on two nodes: each node's publisher triggers ``rate`` events/s on
    ``steady``; each node has ``per_node`` subscribers recording which events they got."""

    def __init__(self, nodes: list[ServerProcess], per_node: int, rate: float) -> None:
        self.nodes = nodes
        self.per_node = per_node
        self.rate = rate
        self.got: dict[str, list[set[tuple[str, int]]]] = {n.http_url: [] for n in nodes}
        self.accepted: dict[str, list[tuple[int, float]]] = {n.http_url: [] for n in nodes}
        self.refused: dict[str, int] = {n.http_url: 0 for n in nodes}
        self.closed: list[str] = []
        self.cross_latency: list[tuple[float, float]] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.running = True

    async def start(self, http: aiohttp.ClientSession) -> None:
        for i, node in enumerate(self.nodes):
            for _ in range(self.per_node):
                ws = await RawWS.open(node)
                ws.subscribe(node, "steady")
                await ws.recv_event("pusher_internal:subscription_succeeded")
                seen: set[tuple[str, int]] = set()
                self.got[node.http_url].append(seen)
                self.tasks.append(asyncio.create_task(self._read(ws, seen, node.http_url, "ab"[i])))
        await asyncio.sleep(0.5)
        for i, node in enumerate(self.nodes):
            self.tasks.append(asyncio.create_task(self._publish(http, node, "ab"[i])))

    async def _read(self, ws: RawWS, seen: set[tuple[str, int]], where: str, name: str) -> None:
        try:
            while True:
                msg = await ws.recv_json(timeout=3600)
                if msg["event"] == "tick":
                    data = orjson.loads(msg["data"])
                    seen.add((data["from"], data["seq"]))
                    if data["from"] != name:
                        self.cross_latency.append((time.monotonic(), time.time() - data["t"]))
        except Closed:
            self.closed.append(where)

    async def _publish(self, http: aiohttp.ClientSession, node: ServerProcess, name: str) -> None:
        start, n = time.monotonic(), 0
        while self.running:
            n += 1
            status = await trigger(
                http, node, "steady", "tick", {"from": name, "seq": n, "t": time.time()}
            )
            if status == 200:
                self.accepted[node.http_url].append((n, time.monotonic()))
            else:
                self.refused[node.http_url] += 1
            delay = start + n / self.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    async def stop(self) -> None:
        self.running = False
        await asyncio.sleep(1.5)  # the last events' delivery
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def report(self, windows: dict[str, tuple[float, float]]) -> dict[str, Any]:
        """Per publishing node and time window: accepted, delivered on it, delivered on the
        other node (to every subscriber there), lost there."""
        out: dict[str, Any] = {}
        for i, node in enumerate(self.nodes):
            name, other = "ab"[i], self.nodes[1 - i]
            per: dict[str, Any] = {}
            for window, (t0, t1) in windows.items():
                seqs = [s for s, t in self.accepted[node.http_url] if t0 <= t < t1]
                local = sum(all((name, s) in g for g in self.got[node.http_url]) for s in seqs)
                remote = sum(all((name, s) in g for g in self.got[other.http_url]) for s in seqs)
                partial = sum(
                    any((name, s) in g for g in self.got[other.http_url])
                    and not all((name, s) in g for g in self.got[other.http_url])
                    for s in seqs
                )
                per[window] = {
                    "accepted": len(seqs),
                    "delivered_locally": local,
                    "delivered_to_other_node": remote,
                    "lost_to_other_node": len(seqs) - remote,
                    "partial_on_other_node": partial,
                }
            per["http_refused"] = self.refused[node.http_url]
            out[f"published_on_{name}"] = per
        return out


async def redis_fault(
    size: float,
    workdir: Path,
    *,
    mode: str = "kill",
    per_node: int = 5,
    rate: float = 20.0,
    settle_s: float = 3.0,
) -> Figures:
    """Redis SIGKILLed then restarted (``mode="kill"``) or frozen with SIGSTOP (``"freeze"``)
    for ``size`` seconds, under steady traffic on two nodes. Each node keeps serving its own
    clients (every accepted event reaches them, new subscriptions work), both heal by
    themselves, and every accepted event reaches the other node too, in every phase: those
    of the outage wait in the sender's buffer, or are read back from the topic's stream."""
    raise_nofile()
    redis = RedisServer(workdir)
    redis.start()
    env = _cluster_env(redis)
    nodes = [start_server(workdir, extra_env=env), start_server(workdir, extra_env=env)]
    steady = Steady(nodes, per_node, rate)
    figures: Figures = {
        "mode": mode,
        "outage_s": size,
        "per_node_subscribers": per_node,
        "rate_per_node": rate,
    }
    try:
        async with aiohttp.ClientSession() as http:
            await steady.start(http)
            t_start = time.monotonic()
            await asyncio.sleep(settle_s)
            t_fault = time.monotonic()
            redis.kill() if mode == "kill" else redis.freeze()
            # Midway through the outage, a new client subscribes on each node (in the
            # background: a frozen Redis may hold the join up, not the outage's timeline).
            await asyncio.sleep(size / 2)
            fresh: dict[str, Any] = {}

            async def probe(node: ServerProcess) -> None:
                t0 = time.monotonic()
                try:
                    ws = await RawWS.open(node)
                    ws.subscribe(
                        node,
                        "presence-fresh",
                        orjson.dumps({"user_id": node.http_url[-5:]}).decode(),
                    )
                    reply = await ws.recv_json(timeout=15)
                    fresh[node.http_url] = {
                        "event": reply["event"],
                        "seconds": round(time.monotonic() - t0, 2),
                    }
                    ws.abort()
                except Exception as exc:
                    fresh[node.http_url] = {
                        "event": f"failed: {type(exc).__name__}: {exc}",
                        "seconds": round(time.monotonic() - t0, 2),
                    }

            probes = asyncio.gather(*(probe(n) for n in nodes))
            health_during = [await _health(http, n) for n in nodes]
            await asyncio.sleep(max(0.0, t_fault + size - time.monotonic()))
            t_back = time.monotonic()
            if mode == "kill":
                await asyncio.to_thread(redis.start)
            else:
                redis.thaw()

            async def healed() -> bool:
                return all([await _health(http, n) == "OK" for n in nodes])

            heal = await poll(healed, 60, every=0.1)
            t_healed = time.monotonic()
            await probes
            await asyncio.sleep(settle_s + 1)
            t_end = time.monotonic()
            await steady.stop()
            metrics = [await scrape(http, n) for n in nodes]
    finally:
        await _stop(*nodes)
        redis.stop()
    margin = 1.0  # in-flight at the moment the link came back
    windows = {
        "before_fault": (t_start - 10, t_fault - margin),
        "in_flight_at_fault": (t_fault - margin, t_fault),
        "outage": (t_fault, t_back),
        "reconnecting": (t_back, t_healed + margin),
        "after_heal": (t_healed + margin, t_end),
    }
    figures.update(
        {
            "heal_s_after_redis_back": None if heal is None else round(heal, 2),
            "health_during_outage": health_during,
            "new_presence_subscribe_during_outage": fresh,
            "delivery": steady.report(windows),
            "adapter_dropped_envelopes": [
                m["reverbpy_adapter_dropped_envelopes_total"] for m in metrics
            ],
            "clients_disconnected": len(steady.closed),
            "cross_node_latency_before_fault_ms": {
                "p50": ms(percentile([x for t, x in steady.cross_latency if t < t_fault], 50)),
                "p99": ms(percentile([x for t, x in steady.cross_latency if t < t_fault], 99)),
            },
        }
    )
    d = figures["delivery"]
    pubs = [d["published_on_a"], d["published_on_b"]]
    return check(
        figures,
        {
            "local_clients_served": all(
                w["delivered_locally"] == w["accepted"]
                for p in pubs
                for k, w in p.items()
                if k != "http_refused"
            )
            and all(p["http_refused"] == 0 for p in pubs)
            and not steady.closed,
            "new_subscriptions_served": all(
                f["event"] == "pusher_internal:subscription_succeeded" for f in fresh.values()
            ),
            "healed": heal is not None,
            "before_fault_all_crossed": all(
                p["before_fault"]["lost_to_other_node"] == 0 for p in pubs
            ),
            "after_heal_all_crossed": all(
                p["after_heal"]["lost_to_other_node"] == 0 and p["after_heal"]["accepted"] > 0
                for p in pubs
            ),
            "nothing_accepted_lost": all(
                w["lost_to_other_node"] == 0 and w["partial_on_other_node"] == 0
                for p in pubs
                for k, w in p.items()
                if k != "http_refused"
            ),
        },
    )


# --- 5. a node SIGKILLed --------------------------------------------------------------------


async def node_kill(size: int, workdir: Path, *, node_timeout: float = 15.0) -> Figures:
    """``size`` presence members on a node that is SIGKILLed: within node_timeout + 5 s every
    one is removed on the surviving node, ``member_removed`` exactly once each; a user with a
    socket on each node stays."""
    raise_nofile()
    redis = RedisServer(workdir)
    redis.start()
    env = _cluster_env(
        redis,
        REVERB_SCALING_NODE_TIMEOUT=str(node_timeout),
        REVERB_APP_MAX_PRESENCE_MEMBERS=str(size + 100),
    )
    survivor, doomed = start_server(workdir, extra_env=env), start_server(workdir, extra_env=env)
    channel = "presence-soak"

    def member(user: str) -> str:
        return orjson.dumps({"user_id": user, "user_info": {"name": user}}).decode()

    figures: Figures = {"members": size, "node_timeout_s": node_timeout}
    try:
        async with aiohttp.ClientSession() as http:
            watchers = []
            for i in range(2):
                ws = await RawWS.open(survivor)
                ws.subscribe(survivor, channel, member(f"watcher-{i}"))
                await ws.recv_event("pusher_internal:subscription_succeeded")
                watchers.append(ws)
            both = await RawWS.open(survivor)
            both.subscribe(survivor, channel, member("both"))
            await both.recv_event("pusher_internal:subscription_succeeded")
            ghosts = []
            users = [f"m{i}" for i in range(size)] + ["both"]
            for user in users:
                ws = await RawWS.open(doomed)
                ws.subscribe(doomed, channel, member(user))
                ghosts.append(ws)
            await asyncio.gather(
                *(g.recv_event("pusher_internal:subscription_succeeded", 30) for g in ghosts)
            )

            async def all_added(ws: RawWS) -> None:
                added: set[str] = set()
                while len(added) < size:
                    user = (await ws.recv_event("pusher_internal:member_added", 30))["data"][
                        "user_id"
                    ]
                    if user.startswith("m"):
                        added.add(user)

            await asyncio.gather(*(all_added(w) for w in watchers))
            assert doomed.proc is not None
            os.kill(doomed.proc.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            doomed.proc.wait(10)
            limit = node_timeout + 5

            async def removals(ws: RawWS) -> tuple[list[str], float | None, list[str]]:
                removed: list[str] = []
                done: float | None = None
                other: list[str] = []
                end = killed_at + limit + 10  # past the limit too: late or duplicate removals
                with contextlib.suppress(TimeoutError):
                    while (left := end - time.monotonic()) > 0:
                        msg = await ws.recv_json(timeout=left)
                        if msg["event"] == "pusher_internal:member_removed":
                            removed.append(msg["data"]["user_id"])
                            if done is None and len(set(removed)) >= size:
                                done = time.monotonic() - killed_at
                                end = min(end, time.monotonic() + 3)
                        else:
                            other.append(msg["event"])
                return removed, done, other

            results = await asyncio.gather(*(removals(w) for w in watchers))
            listed = await api_get(http, survivor, f"/channels/{channel}/users")
            for ws in [*watchers, both]:
                ws.abort()
    finally:
        await _stop(survivor, doomed)
        redis.stop()
    expected = sorted(f"m{i}" for i in range(size))
    figures.update(
        {
            "removed_within_s": [
                None if done is None else round(done, 2) for _, done, _ in results
            ],
            "limit_s": node_timeout + 5,
            "member_removed_events": [len(r) for r, _, _ in results],
            "duplicates": [len(r) - len(set(r)) for r, _, _ in results],
            "other_events": [o for _, _, o in results],
            "users_listed_after": sorted(u["id"] for u in listed["users"]),
        }
    )
    return check(
        figures,
        {
            "all_removed_once": all(sorted(r) == expected for r, _, _ in results),
            "within_timeout_plus_5s": all(
                done is not None and done <= node_timeout + 5 for _, done, _ in results
            ),
            "user_on_both_nodes_stays": all("both" not in r for r, _, _ in results)
            and figures["users_listed_after"] == sorted(["both", "watcher-0", "watcher-1"]),
        },
    )


# --- 6. SIGTERM under load ----------------------------------------------------------------


async def sigterm_under_load(size: int, workdir: Path, *, publishers: int = 4) -> Figures:
    """``size`` subscribers and ``publishers`` HTTP publishers; SIGTERM mid-stream. Every
    client gets ``pusher:error`` 4200 and a close 4200, every event the HTTP API accepted
    reached every local subscriber, and the process exits 0."""
    raise_nofile()
    server = start_server(workdir)
    assert server.proc is not None
    proc = server.proc
    figures: Figures = {"clients": size, "publishers": publishers}
    try:
        async with aiohttp.ClientSession() as http:

            async def subscriber() -> RawWS:
                ws = await RawWS.open(server)
                ws.subscribe(server, "load")
                await ws.recv_event("pusher_internal:subscription_succeeded")
                return ws

            clients = await gather_bounded([subscriber() for _ in range(size)], 100)

            async def read(ws: RawWS) -> tuple[set[int], list[dict[str, Any]], int | None]:
                seen: set[int] = set()
                errors: list[dict[str, Any]] = []
                with contextlib.suppress(Closed, TimeoutError):
                    while True:
                        msg = await ws.recv_json(timeout=30)
                        if msg["event"] == "tick":
                            seen.add(orjson.loads(msg["data"])["seq"])
                        elif msg["event"] == "pusher:error":
                            errors.append(msg["data"])
                return seen, errors, ws.close_code

            readers = [asyncio.create_task(read(ws)) for ws in clients]
            accepted: list[tuple[int, float]] = []
            refused = {"count": 0}
            seq = [0]
            exited = asyncio.Event()

            async def publish() -> None:
                while not exited.is_set():
                    seq[0] += 1
                    s = seq[0]
                    status = await trigger(http, server, "load", "tick", {"seq": s})
                    if status == 200:
                        accepted.append((s, time.monotonic()))
                    else:
                        refused["count"] += 1
                        await asyncio.sleep(0.01)

            pubs = [asyncio.create_task(publish()) for _ in range(publishers)]
            await asyncio.sleep(2)
            sent_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            rc = await asyncio.to_thread(proc.wait, 30)
            exit_s = time.monotonic() - sent_at
            exited.set()
            await asyncio.gather(*pubs)
            results = await asyncio.gather(*readers)
            for ws in clients:
                ws.abort_quietly()
    finally:
        await _stop(server)
    accepted_seqs = {s for s, _ in accepted}
    told = sum(
        1 for _, errs, code in results if [e.get("code") for e in errs] == [4200] and code == 4200
    )
    missing = [len(accepted_seqs - seen) for seen, _, _ in results]
    figures.update(
        {
            "events_accepted": len(accepted_seqs),
            "accepted_after_sigterm": sum(1 for _, t in accepted if t >= sent_at),
            "http_refused_or_failed": refused["count"],
            "clients_told_4200": told,
            "close_codes": {
                str(k): [c for _, _, c in results].count(k) for k in {c for _, _, c in results}
            },
            "accepted_events_missing_total": sum(missing),
            "clients_missing_some": sum(1 for m in missing if m),
            "exit_code": rc,
            "exit_s": round(exit_s, 2),
        }
    )
    return check(
        figures,
        {
            "every_client_told_4200": told == size,
            "no_accepted_event_lost": sum(missing) == 0,
            "exit_0": rc == 0,
        },
    )


# --- 8. half-sent request heads (slowloris) --------------------------------------------------


async def slow_heads(
    size: int,
    workdir: Path,
    *,
    head_timeout: float = 20.0,
    max_pending: int = 1_000,
    normal: int = 200,
) -> Figures:
    """``size`` connections send half a request head (WebSocket upgrades, queries, triggers)
    or nothing, and stop. Meanwhile ``normal`` clients connect, subscribe and get an event as
    fast as with no slow ones around (handshake p99 within 2x + 50 ms); past ``max_pending``
    the oldest half-heads are closed (they come in two waves, a second apart, so the first is
    old enough to go), the rest at ``head_timeout`` (+ a sweep); the server's fds come back."""
    raise_nofile()
    server = start_server(
        workdir,
        extra_env={
            "REVERB_HEAD_TIMEOUT": str(head_timeout),
            "REVERB_MAX_PENDING_HEADS": str(max_pending),
        },
    )
    pid = pid_of(server)
    halves = [
        f"GET /app/{server.key}?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websoc".encode(),
        f"GET /apps/{server.app_id}/channels HTTP/1.1\r\n".encode(),
        f"POST /apps/{server.app_id}/events HTTP/1.1\r\nHost: x\r\n".encode(),
        b"",
    ]

    async def handshakes(count: int) -> list[float]:
        async def one() -> float:
            start = time.monotonic()
            ws = await RawWS.open(server)
            ws.subscribe(server, "slow-heads")
            await ws.recv_event("pusher_internal:subscription_succeeded")
            elapsed = time.monotonic() - start
            ws.abort_quietly()
            return elapsed

        return list(await gather_bounded([one() for _ in range(count)], 20))

    try:
        async with aiohttp.ClientSession() as http:
            before = await _refused(http, server)
            fds_before, rss_before = open_fds(pid), rss_kib(pid)
            baseline = await handshakes(normal)
            slow: list[asyncio.StreamWriter] = []
            readers: list[asyncio.StreamReader] = []
            opened = time.monotonic()
            for i in range(size):
                if i == size // 2:  # the first wave is over a second old: evicted first
                    await asyncio.sleep(1.2)
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(halves[i % len(halves)])
                readers.append(reader)
                slow.append(writer)
            open_s = time.monotonic() - opened
            fds_with_slow = open_fds(pid)
            during = await handshakes(normal)
            listener = await RawWS.open(server)
            listener.subscribe(server, "slow-heads")
            await listener.recv_event("pusher_internal:subscription_succeeded")
            status = await trigger(http, server, "slow-heads", "e", "d")
            delivered = (await listener.recv_event("e"))["channel"] == "slow-heads"

            async def closed(reader: asyncio.StreamReader) -> bool:
                return await reader.read() == b""

            deadline = head_timeout + head_timeout / 4 + 6.0
            outcome = await asyncio.wait_for(
                asyncio.gather(*(closed(r) for r in readers)), deadline + 30
            )
            all_closed_s = time.monotonic() - opened
            for writer in slow:
                writer.transport.abort()
            after = await _refused(http, server)
            fds_after = await poll(lambda: _true(open_fds(pid) <= fds_before + 2), 5.0)
            rss_after = rss_kib(pid)
            listener.abort_quietly()
    finally:
        await _stop(server)
    refused = {
        reason: after.get(reason, 0.0) - before.get(reason, 0.0)
        for reason in ("head_timeout", "too_many_pending_heads")
    }
    p99_before, p99_during = percentile(baseline, 99), percentile(during, 99)
    figures: Figures = {
        "half_heads": size,
        "head_timeout_s": head_timeout,
        "max_pending_heads": max_pending,
        "opened_in_s": round(open_s, 2),
        "server_fds": {"before": fds_before, "with_half_heads": fds_with_slow},
        "normal_handshake_p99_ms": {"before": ms(p99_before), "during": ms(p99_during)},
        "event_delivered_meanwhile": delivered and status == 200,
        "closed_by_server": sum(outcome),
        "all_closed_after_s": round(all_closed_s, 2),
        "closed_at_timeout": refused["head_timeout"],
        "evicted_past_bound": refused["too_many_pending_heads"],
        "rss_kib": {"before": rss_before, "after": rss_after},
    }
    return check(
        figures,
        {
            "normal_clients_served": figures["event_delivered_meanwhile"],
            "normal_handshake_p99_within_2x": p99_during <= 2 * p99_before + 0.05,
            "every_half_head_closed_by_the_server": sum(outcome) == size,
            "closed_within_timeout_plus_a_sweep": all_closed_s <= open_s + deadline,
            "counted": refused["head_timeout"] + refused["too_many_pending_heads"] == size,
            "bound_held": refused["too_many_pending_heads"]
            >= min(size // 2, size - size // 2, max(0, size - max_pending)),
            "fds_back": fds_after is not None,
        },
    )


async def _true(value: bool) -> bool:
    return value


async def _true_async(metrics: Awaitable[dict[str, float]], connections: int) -> bool:
    return int((await metrics)["reverbpy_connections"]) <= connections


async def _refused(http: aiohttp.ClientSession, server: ServerProcess) -> dict[str, float]:
    """``reverbpy_bad_requests_total`` by reason."""
    async with http.get(f"{server.http_url}/metrics") as r:
        text = await r.text()
    found = re.findall(r'^reverbpy_bad_requests_total\{reason="(\w+)"\} (\S+)$', text, re.M)
    return {reason: float(value) for reason, value in found}


Scenario = Callable[..., Awaitable[Figures]]


def _scenario(fn: Scenario, **fixed: Any) -> Scenario:
    """``fn`` with ``fixed`` arguments, leaving no client socket open behind it."""

    @functools.wraps(fn)
    async def run(size: float, workdir: Path, **kwargs: Any) -> Figures:
        try:
            return await fn(size, workdir, **fixed, **kwargs)
        finally:
            RawWS.abort_all()

    return run


SCENARIOS: dict[str, Scenario] = {
    "churn": _scenario(churn),
    "slow_consumers": _scenario(slow_consumers),
    "floods": _scenario(floods),
    "redis_kill": _scenario(redis_fault, mode="kill"),
    "redis_freeze": _scenario(redis_fault, mode="freeze"),
    "node_kill": _scenario(node_kill),
    "sigterm": _scenario(sigterm_under_load),
    "slow_heads": _scenario(slow_heads),
}

# (size, keyword arguments) per scenario and scale.
SIZES: dict[str, dict[str, tuple[float, dict[str, Any]]]] = {
    "full": {
        "churn": (100_000, {}),
        "slow_consumers": (1_000, {"readers": 50}),
        "floods": (50_000, {}),
        "redis_kill": (10.0, {}),
        "redis_freeze": (10.0, {}),
        "node_kill": (200, {"node_timeout": 15.0}),
        "sigterm": (2_000, {}),
        "slow_heads": (2_000, {}),
    },
    "short": {
        "churn": (2_000, {"concurrency": 32}),
        "slow_consumers": (
            200,
            {"readers": 20, "rate": 100.0, "pad": 8_000, "strict_latency": False, "phase_s": 2.0},
        ),
        "floods": (5_000, {}),
        "redis_kill": (3.0, {"per_node": 3, "settle_s": 2.0}),
        "redis_freeze": (3.0, {"per_node": 3, "settle_s": 2.0}),
        "node_kill": (20, {"node_timeout": 3.0}),
        "sigterm": (200, {}),
        "slow_heads": (300, {"head_timeout": 2.0, "max_pending": 100, "normal": 50}),
    },
}
