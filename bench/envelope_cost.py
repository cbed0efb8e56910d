"""What one envelope costs a node that publishes it, a node that receives it, and Redis: the
per-unit figures behind ``docs/scaling.md``'s capacity plan.

    python -m bench.envelope_cost                  # 100,000 envelopes, medians of 3
    python -m bench.envelope_cost --envelopes 20000 --repeat 1

Processes with one ``RedisAdapter`` each (no HTTP, no sockets: the adapter's own cost), on one
Redis: ``--receivers`` nodes (1) follow 100 channel topics; the publisher publishes ``--envelopes`` API
events spread over them, as the hub does after a trigger, as fast as its buffer drains. CPU
is each process's user+system time over its part (``resource.getrusage``), Redis's from
``INFO cpu``. Both run on uvloop, as ``reverbpy serve`` does. With ``--rate``, the publisher's
figure includes its own pacing (a timer per envelope). Redis: ``REDIS_URL`` when set, else
127.0.0.1:6379. With ``--cluster``, on a Redis Cluster of 3 primaries with a replica each,
started here on loopback: Redis's figure is then every server's CPU (replication included) and
the primaries' alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import time
from typing import Any

CHANNELS = 100


def _config(url: str, prefix: str) -> Any:
    from reverbpy.config import AppConfig, ScalingConfig, Secret, ServerConfig

    app = AppConfig(id="1", key="k", secret=Secret("s"))
    sharded = url.endswith("#cluster")
    scaling = ScalingConfig(
        adapter="redis", prefix=prefix, redis_url=Secret(url.removesuffix("#cluster")), redis_cluster=sharded
    )
    return ServerConfig(apps=(app,), scaling=scaling)


class _Counting:
    def __init__(self, expected: int) -> None:
        from reverbpy.registry import Registry

        self.node_id = ""
        self.registry = Registry(())
        self.count = 0
        self.expected = expected
        self.done = asyncio.Event()

    def receive(self, envelope: Any) -> None:
        self.count += 1
        if self.count >= self.expected:
            self.done.set()

    def member_gone(self, *args: Any) -> None: ...

    def user_gone(self, *args: Any) -> None: ...

    def channel_gone(self, *args: Any) -> None: ...


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _receiver(url: str, prefix: str, n: int) -> None:
    from reverbpy.protocol.cluster import CHANNEL
    from reverbpy.scaling.redis import RedisAdapter

    adapter, listener = RedisAdapter(_config(url, prefix)), _Counting(n)
    await adapter.start(listener)
    for i in range(CHANNELS):
        waiter = adapter.follow(("1", CHANNEL, f"ch-{i}"))
        if waiter is not None:
            await waiter
    print("READY", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # "GO"
    cpu0, t0 = _cpu(), time.monotonic()
    await asyncio.wait_for(listener.done.wait(), 300)
    print(json.dumps({"cpu_s": _cpu() - cpu0, "wall_s": time.monotonic() - t0, "got": listener.count}), flush=True)
    await adapter.close()


async def _publisher(url: str, prefix: str, n: int, rate: float) -> None:
    from reverbpy.protocol.cluster import ApiEvent, Envelope
    from reverbpy.registry import Registry
    from reverbpy.scaling.redis import RedisAdapter

    adapter = RedisAdapter(_config(url, prefix))
    listener = _Counting(0)
    listener.registry = Registry(())
    await adapter.start(listener)
    data = json.dumps({"order": 1234, "status": "confirmed", "villa": "Sunset"})
    cpu0, t0 = _cpu(), time.monotonic()
    for i in range(n):
        adapter.publish(Envelope("1", adapter.node_id, ApiEvent([f"ch-{i % CHANNELS}"], "order.updated", data)))
        if rate:  # one at a time, as triggers arriving at ``rate`` a second are published
            await asyncio.sleep(1 / rate)
        elif i % 1000 == 999:
            await asyncio.sleep(0)  # as a server would: triggers arrive over many loop turns
    while adapter.buffered:
        await asyncio.sleep(0.001)
    print(json.dumps({"cpu_s": _cpu() - cpu0, "wall_s": time.monotonic() - t0}), flush=True)
    await adapter.close()


def _redis_cpu(urls: list[str]) -> list[float]:
    import redis

    cpu = []
    for url in urls:
        info = redis.Redis.from_url(url).info("cpu")
        cpu.append(float(info["used_cpu_sys"]) + float(info["used_cpu_user"]))
    return cpu


def _one(url: str, n: int, receivers: int, rate: float, redis_urls: list[str], primaries: int) -> dict[str, float]:
    prefix = f"bench-{secrets.token_hex(4)}"
    py = sys.executable
    args = [url, prefix, str(n), str(rate)]
    recvs = [subprocess.Popen([py, "-m", "bench.envelope_cost", "--role", "receiver", *args],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(receivers)]
    for recv in recvs:
        assert recv.stdout is not None
        assert recv.stdout.readline().strip() == "READY"
    redis0 = _redis_cpu(redis_urls)
    pub = subprocess.Popen([py, "-m", "bench.envelope_cost", "--role", "publisher", *args],
                           stdout=subprocess.PIPE, text=True)
    for recv in recvs:
        assert recv.stdin is not None
        recv.stdin.write("GO\n")
        recv.stdin.flush()
    p_out, _ = pub.communicate(timeout=300)
    rs = [json.loads(recv.communicate(timeout=300)[0].strip().splitlines()[-1]) for recv in recvs]
    redis1 = _redis_cpu(redis_urls)
    redis_s = sum(redis1) - sum(redis0)
    primaries_s = sum(redis1[:primaries]) - sum(redis0[:primaries])
    p = json.loads(p_out.strip().splitlines()[-1])
    return {
        "envelopes": n,
        "received": min(r["got"] for r in rs),
        "publish_us": 1e6 * p["cpu_s"] / n,
        "receive_us": statistics.median(1e6 * r["cpu_s"] / n for r in rs),
        "redis_us": 1e6 * redis_s / n,
        "redis_primaries_us": 1e6 * primaries_s / n,
        "throughput_per_s": n / max(p["wall_s"], *(r["wall_s"] for r in rs)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.envelope_cost", description=__doc__.split("\n\n")[0])
    ap.add_argument("--envelopes", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--receivers", type=int, default=1, help="receiving nodes, each following every topic")
    ap.add_argument("--rate", type=float, default=0.0, help="envelopes/s, one per loop turn (0: as fast as possible)")
    ap.add_argument("--cluster", action="store_true", help="on a 3-primary Redis Cluster started here")
    ap.add_argument("--role", choices=["receiver", "publisher"])
    ap.add_argument("rest", nargs="*")
    opts = ap.parse_args(argv)
    if opts.role:
        from reverbpy.cli import _install_uvloop

        _install_uvloop()  # the server's event loop, so the figures are a node's
        url, prefix, n, rate = opts.rest
        if opts.role == "receiver":
            asyncio.run(_receiver(url, prefix, int(n)))
        else:
            asyncio.run(_publisher(url, prefix, int(n), float(rate)))
        return 0
    if opts.cluster:
        import tempfile
        from pathlib import Path

        from tests.soak.harness import RedisClusterServers

        with tempfile.TemporaryDirectory(prefix="bench-envelope-") as workdir:
            shards = RedisClusterServers(Path(workdir))
            try:
                shards.start()
                primaries = shards.primaries()
                others = [s for s in shards.alive() if s not in primaries]
                urls = [f"redis://127.0.0.1:{s.port}/0" for s in [*primaries, *others]]
                runs = [_one(shards.url + "#cluster", opts.envelopes, opts.receivers, opts.rate, urls, len(primaries))
                        for _ in range(opts.repeat)]
            finally:
                shards.stop()
    else:
        url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        runs = [_one(url, opts.envelopes, opts.receivers, opts.rate, [url], 1) for _ in range(opts.repeat)]
    for r in runs:
        print(json.dumps({k: round(v, 2) for k, v in r.items()}))
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')}  {opts.envelopes:,} envelopes over {CHANNELS} topics,"
          f" {opts.receivers} receiving node(s), {f'{opts.rate:g}/s' if opts.rate else 'as fast as possible'},"
          f" median of {opts.repeat}{'; Redis Cluster of 3 primaries and 3 replicas' if opts.cluster else ''}")
    print(f"publisher CPU per envelope  {med['publish_us']:8.1f} us")
    print(f"receiver CPU per envelope   {med['receive_us']:8.1f} us")
    print(f"Redis CPU per envelope      {med['redis_us']:8.1f} us")
    if opts.cluster:
        print(f"  of it on the primaries    {med['redis_primaries_us']:8.1f} us")
    print(f"envelopes/s end to end      {med['throughput_per_s']:8,.0f}")
    print(f"received (each receiver)    {int(med['received']):,} of {opts.envelopes:,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
