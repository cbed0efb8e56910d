"""Issue 6's figures: the Redis adapter's cost and ``--workers 2``, as ratios to one in-memory
process, measured back to back in one run with the fanout scenario of ``bench.run``; and the
interest-routed Redis adapter across several nodes (routing, cluster scaling, join burst, outage).

    python -m bench.scaling                          # every scenario, medians of 3 where cheap
    python -m bench.scaling --repeat 1               # quick look
    python -m bench.scaling --scenarios routing,outage --quick

Scenarios (``--scenarios``, default all):

- ``fanout``: variants (reverbpy only) ``memory`` (one process, no Redis: the baseline),
  ``redis`` (one process with REVERB_SCALING_ENABLED: every trigger is also published to
  Redis) and ``redis-w2`` (``serve --workers 2``: the kernel spreads the 2,000 subscribers over
  two processes and every trigger crosses Redis to the other one). One-process variants are
  pinned to core 0 as in ``bench.run``; the two workers may use both cores, and so share core 1
  with the load generator: on this 2-core machine that caps what a second worker can add, which
  the output says.
- ``routing``: 4 nodes on one Redis, 400 channels, node i's sockets (one per channel) on the
  channels whose index % 4 == i; 4,000 events (10 per channel) through node 0's HTTP API with
  the ``pusher`` SDK. Per node: envelopes received (``reverbpy_adapter_received_envelopes``),
  how many were for channels it does not serve, deliveries, CPU; Redis CPU; and the topic
  subscriptions Redis holds (``PUBSUB NUMSUB``: one subscriber per channel topic).
- ``cluster``: 1, 2 and 4 nodes at a fixed load per node: 100 subscribed sockets per node (one
  per channel), and per node 3 C publishers (``bench/gen/wsgen.c --mode pub --subs 0``) through
  that node's HTTP API at 500 events/s in all, to channels served by other nodes (its own with
  one node). Total deliveries/s, and whether every accepted event reached its channel's one
  subscriber exactly once (count per channel).
- ``join-burst``: one node (core 0) and Redis; 5,000 sockets opened at 1,000/s, idle, then all
  subscribe to 5,000 different channels at once. Join latency (subscribe sent to
  subscription_succeeded) and Redis commands during the burst (``INFO commandstats``).
- ``outage``: 2 nodes on a redis-server started here on a free port (``--save ""``); one
  subscriber on node B (channel ``gap``), 200 events/s through node A's HTTP API for 10 s,
  Redis stopped at 3 s and back at 6 s, once with SIGTERM and a restart on the same port, once
  with SIGSTOP/SIGCONT. Events accepted (HTTP 200) against events B's subscriber got, in order,
  without duplicates.

Cluster scenarios run the nodes over both cores (``taskset -c 0,1``), sharing them with Redis,
the Python WebSocket driver (``bench/scaling_load.py``) and the publishers; on this 2-core
machine the cluster figures are capped by the machine, which the output says. Redis:
``REDIS_URL`` when set, else 127.0.0.1:6379 when it answers, else a ``redis-server`` started
here on a free loopback port (``outage`` always starts its own). Exit status is non-zero only
on harness errors, not on missed targets.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import queue
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

from bench import run as b

VARIANTS: dict[str, tuple[list[str], bool, str]] = {
    # name: (extra serve args, scaling on, cores)
    "memory": ([], False, b.SERVER_CORE),
    "redis": ([], True, b.SERVER_CORE),
    "redis-w2": (["--workers", "2"], True, "0,1"),
}
SCENARIOS = ["fanout", "routing", "shards", "cluster", "join-burst", "outage"]
BOTH_CORES = "0,1"
PY = str(b.ROOT / ".venv" / "bin" / "python")
# The pusher SDK accepts only digits as an app id (b.APP_ID, "bench-app", is refused), so the
# cluster scenarios' nodes serve the bench app under this id; key and secret are b's.
APP_ID = "4242"


def redis_url() -> tuple[str, subprocess.Popen[bytes] | None]:
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"], None
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            if s.recv(16).startswith(b"+PONG"):
                return "redis://127.0.0.1:6379/0", None
    except OSError:
        pass
    port = b.free_port()
    proc = start_redis_server(port)
    return f"redis://127.0.0.1:{port}/0", proc


def start_redis_server(port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("bench.scaling: no Redis (set REDIS_URL or install redis-server)")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"redis-server did not answer on {port}")


def stop_proc(proc: subprocess.Popen[Any] | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        os.kill(proc.pid, sig)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def spawn(name: str, args: list[str], env: dict[str, str], cores: str, tag: str, settle: float) -> b.Server:
    port = b.free_port()
    cmd = [PY, "-m", "reverbpy", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    logfile = b.OUT / f"server-{name}-{tag}.log"
    with logfile.open("wb") as lf:
        proc = subprocess.Popen(["taskset", "-c", cores, *cmd], cwd=b.ROOT, env=env, stdout=lf, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=b.raise_nofile)
    server = b.Server(name, port, proc, logfile)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited at start, see {logfile}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    else:
        server.stop()
        raise RuntimeError(f"{name} did not listen on {port}, see {logfile}")
    time.sleep(settle)
    return server


def start(variant: str, url: str, tag: str) -> b.Server:
    args, scaling, cores = VARIANTS[variant]
    env = b.server_env("reverbpy")
    if scaling:
        env.update(REVERB_SCALING_ENABLED="true", REDIS_URL=url, REVERB_SCALING_PREFIX=f"bench-{secrets.token_hex(4)}")
    return spawn(variant, args, env, cores, tag, 1.5 if args else 0.5)  # every worker up and registered


def start_node(url: str, prefix: str, name: str, tag: str, cores: str = BOTH_CORES, sharded: bool = False) -> b.Server:
    """One reverbpy node (one process) of a cluster sharing ``prefix`` on ``url``."""
    env = b.server_env("reverbpy")
    env.update(REVERB_SCALING_ENABLED="true", REDIS_URL=url, REVERB_SCALING_PREFIX=prefix, REVERB_APP_ID=APP_ID)
    if sharded:
        env["REDIS_CLUSTER"] = "true"
    return spawn(name, [], env, cores, tag, 0.3)


def wait_registered(servers: list[b.Server], timeout: float = 15.0) -> None:
    """Every node's /metrics says the adapter is up."""
    deadline = time.monotonic() + timeout
    for s in servers:
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                if metric(scrape(s.port), "reverbpy_adapter_up") == 1:
                    break
            time.sleep(0.1)


# ----------------------------------------------------------------------------- probes
def scrape(port: int) -> dict[str, float]:
    """Prometheus text of a node: series name -> value, summed over labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name_part, _, value = line.rpartition(" ")
        name = name_part.split("{", 1)[0]
        with contextlib.suppress(ValueError):
            out[name] = out.get(name, 0.0) + float(value)
    return out


def metric(m: dict[str, float], name: str) -> float | None:
    """A counter is exposed as ``name_total`` by prometheus-client; a gauge as ``name``."""
    for n in (name, name + "_total", name + "_count"):
        if n in m:
            return m[n]
    return None


def adapter_metrics(port: int) -> dict[str, float | None]:
    try:
        m = scrape(port)
    except (OSError, ValueError) as e:
        b.log(f"  /metrics on {port} failed: {e!r}")
        return {}
    return {
        "received": metric(m, "reverbpy_adapter_received_envelopes"),
        "buffered": metric(m, "reverbpy_adapter_buffered_envelopes"),
        "dropped": metric(m, "reverbpy_adapter_dropped_envelopes"),
        "up": metric(m, "reverbpy_adapter_up"),
        "publish_batches": m.get("reverbpy_adapter_publish_seconds_count"),
        "publish_seconds": m.get("reverbpy_adapter_publish_seconds_sum"),
    }


def redis_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=10)


def redis_probe(r: Any) -> dict[str, Any]:
    cpu = r.info("cpu")
    stats = r.info("stats")
    cmds = r.info("commandstats")
    clients = r.info("clients")
    return {
        "cpu_s": float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
        "commands": int(stats["total_commands_processed"]),
        "calls": {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in cmds.items()},
        "clients": int(clients.get("connected_clients", 0)),
    }


# Commands the adapter runs only inside its Lua scripts (INFO commandstats and
# total_commands_processed count those too): left out of the client command count.
IN_SCRIPTS = {"hincrby", "hdel", "hsetnx", "hexists", "hlen", "hvals", "hget", "sadd", "srem", "xadd", "pexpire", "publish"}


def redis_delta(a: dict[str, Any], z: dict[str, Any]) -> dict[str, Any]:
    calls = {k: v - a["calls"].get(k, 0) for k, v in z["calls"].items()}
    calls = {k: v for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v > 0 and k not in ("info",)}
    return {
        "redis_cpu_s": round(z["cpu_s"] - a["cpu_s"], 3),
        "redis_commands": z["commands"] - a["commands"],  # in scripts included (and our INFOs)
        "redis_calls": calls,
        "redis_client_calls": sum(v for k, v in calls.items() if k not in IN_SCRIPTS),
    }


def topic(prefix: str, channel: str) -> str:
    return f"{prefix}:t:{{{APP_ID}:c:{channel}}}"


def redis_clients(url: str, shards: Any = None) -> list[Any]:
    """One client per Redis to probe: the one Redis, or each primary of a Redis Cluster."""
    if shards is None:
        return [redis_client(url)]
    return [redis_client(f"redis://127.0.0.1:{s.port}/0") for s in shards.primaries()]


def probe_all(rs: list[Any]) -> dict[str, Any]:
    """``redis_probe`` summed over ``rs``, with each one's commands and CPU kept apart."""
    per = [redis_probe(r) for r in rs]
    calls: dict[str, int] = {}
    for p in per:
        for k, v in p["calls"].items():
            calls[k] = calls.get(k, 0) + v
    return {
        "cpu_s": sum(p["cpu_s"] for p in per), "commands": sum(p["commands"] for p in per), "calls": calls,
        "clients": sum(p["clients"] for p in per), "shards": [(p["commands"], p["cpu_s"]) for p in per],
    }


def shard_delta(a: dict[str, Any], z: dict[str, Any]) -> dict[str, Any]:
    """Commands and CPU per shard over a phase, and how far apart the busiest and idlest are."""
    commands = [z1 - a1 for (a1, _), (z1, _) in zip(a["shards"], z["shards"], strict=True)]
    cpu = [round(z2 - a2, 3) for (_, a2), (_, z2) in zip(a["shards"], z["shards"], strict=True)]
    return {"shard_commands": commands, "shard_cpu_s": cpu,
            "shard_spread": round(max(commands) / max(1, min(commands)), 2) if commands else None}


def numsub(rs: list[Any], topics: list[str], sharded: bool) -> dict[str, int]:
    """Subscribers per topic; shard channels are counted by the primary that owns them."""
    counts: dict[str, int] = {}
    for r in rs:
        for chunk in range(0, len(topics), 500):
            part = topics[chunk : chunk + 500]
            reply = r.execute_command("PUBSUB", "SHARDNUMSUB", *part) if sharded else r.execute_command("PUBSUB", "NUMSUB", *part)
            for name, n in zip(reply[::2], reply[1::2], strict=True):
                counts[str(name)] = counts.get(str(name), 0) + int(n)
    return counts


# ----------------------------------------------------------------------------- the WebSocket driver
class Load:
    """``bench/scaling_load.py`` in a subprocess: sockets, their subscriptions and counts."""

    def __init__(self, sockets: list[tuple[int, str | None]], tag: str, conn_rate: float = 1000.0,
                 subscribe: bool = True, cores: str = BOTH_CORES, setup_timeout: float = 60.0) -> None:
        self.log = b.OUT / f"load-{tag}.log"
        self._lf = self.log.open("wb")
        self.proc = subprocess.Popen(["taskset", "-c", cores, PY, "-m", "bench.scaling_load"], cwd=b.ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._lf, text=True,
                                     start_new_session=True, preexec_fn=b.raise_nofile)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.setup_timeout = setup_timeout
        self._send({"sockets": sockets, "key": b.APP_KEY, "conn_rate": conn_rate, "subscribe": subscribe,
                    "setup_timeout": setup_timeout})

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def _send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()

    def _line(self, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"load driver silent for {timeout:.0f} s, see {self.log}") from None
        if line is None:
            raise RuntimeError(f"load driver exited (rc={self.proc.poll()}), see {self.log}")
        return line

    def ready(self) -> dict[str, Any]:
        deadline = time.monotonic() + 2 * self.setup_timeout + 60
        while True:
            line = self._line(max(1.0, deadline - time.monotonic()))
            if line.startswith("READY "):
                return dict(json.loads(line[6:]))

    def ask(self, cmd: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        self._send(cmd)
        return dict(json.loads(self._line(timeout)))

    def count(self) -> int:
        return int(self.ask({"cmd": "count"})["deliveries"])

    def wait_count(self, want: int, timeout: float, stable: float = 0.0) -> int:
        """Poll until ``want`` deliveries, or no progress for ``stable`` s, or ``timeout``."""
        deadline = time.monotonic() + timeout
        last, last_change = -1, time.monotonic()
        while True:
            n = self.count()
            if n != last:
                last, last_change = n, time.monotonic()
            if n >= want or time.monotonic() >= deadline or (stable and time.monotonic() - last_change >= stable):
                return n
            time.sleep(0.1)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.proc.poll() is None:
                self._send({"cmd": "quit"})
                self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        self._lf.close()


def pusher_client(port: int) -> Any:
    import pusher

    return pusher.Pusher(app_id=APP_ID, key=b.APP_KEY, secret=b.APP_SECRET, host="127.0.0.1", port=port, ssl=False, timeout=5)


def cpu_now(servers: list[b.Server]) -> list[float]:
    return [b.proc_cpu_s(s.pid) for s in servers]


def busy_pct(a: dict[str, tuple[int, int]], z: dict[str, tuple[int, int]]) -> dict[str, float]:
    return {c: round(100 * (z[c][0] - a[c][0]) / max(1, z[c][1] - a[c][1]), 1) for c in a}


# ----------------------------------------------------------------------------- scenarios
def sc_routing(url: str, tag: str, nodes: int = 4, channels: int = 400, events: int = 4000, threads: int = 4,
               shards: Any = None) -> dict[str, Any]:
    """Channels partitioned over ``nodes``; events published through node 0's API. With
    ``shards`` (a ``RedisClusterServers``), on a Redis Cluster, counting each primary's work."""
    prefix = f"bench-{secrets.token_hex(4)}"
    sharded = shards is not None
    rs = redis_clients(url, shards)
    servers: list[b.Server] = []
    load: Load | None = None
    try:
        others = probe_all(rs)["clients"] - len(rs)
        for i in range(nodes):
            servers.append(start_node(url, prefix, f"routing{i}", tag, sharded=sharded))
        wait_registered(servers)
        names = [f"rt-{j}" for j in range(channels)]
        load = Load([(servers[j % nodes].port, names[j]) for j in range(channels)], f"routing-{tag}", conn_rate=1000)
        ready = load.ready()
        time.sleep(1.0)  # subscriptions confirmed, heartbeats settled
        subs = numsub(rs, [topic(prefix, n) for n in names], sharded)
        subs_per_topic = [int(subs.get(topic(prefix, n), 0)) for n in names]
        m0 = [adapter_metrics(s.port) for s in servers]
        rp0 = probe_all(rs)
        cpu0, cores0, t0 = cpu_now(servers), b.core_ticks(), time.monotonic()
        accepted = [0] * threads
        errors: list[str] = []

        def publish(t: int) -> None:
            try:
                client = pusher_client(servers[0].port)
            except Exception as e:
                errors.append(f"harness: {e!r}")
                return
            for k in range(events):
                if (k % channels) % threads != t:
                    continue
                try:
                    client.trigger(names[k % channels], "ev", str(k))
                    accepted[t] += 1
                except Exception as e:  # counted
                    errors.append(repr(e)[:200])

        workers = [threading.Thread(target=publish, args=(t,), daemon=True) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=300)
        t_pub = time.monotonic()
        if any(e.startswith("harness:") for e in errors):
            raise RuntimeError(next(e for e in errors if e.startswith("harness:")))
        got = load.wait_count(sum(accepted), timeout=30, stable=5)
        t1 = time.monotonic()
        time.sleep(0.3)
        cpu1, cores1 = cpu_now(servers), b.core_ticks()
        rp1 = probe_all(rs)
        m1 = [adapter_metrics(s.port) for s in servers]
        rep = load.ask({"cmd": "report"})
        per_node = []
        for i in range(nodes):
            mine = [n for j, n in enumerate(names) if j % nodes == i]
            on_mine = sum(1 for k in range(events) if (k % channels) % nodes == i)
            expected = 0 if i == 0 else on_mine  # node 0 publishes: its own channels never cross Redis
            received = int((m1[i].get("received") or 0) - (m0[i].get("received") or 0))
            ch = [rep["channels"].get(n, {}) for n in mine]
            per_node.append({
                "node": i, "channels": len(mine), "events_on_its_channels": on_mine, "expected_received": expected,
                "received": received, "unserved": received - expected,
                "deliveries": sum(c.get("n", 0) for c in ch), "dups": sum(c.get("dups", 0) for c in ch),
                "out_of_order": sum(c.get("ooo", 0) for c in ch),
                "cpu_s": round(cpu1[i] - cpu0[i], 3),
                "dropped": m1[i].get("dropped"), "buffered": m1[i].get("buffered"),
            })
        return {
            "scenario": "shards" if sharded else "routing", "nodes": nodes, "channels": channels, "events": events,
            "redis": f"Redis Cluster, {len(rs)} primaries" if sharded else "one Redis",
            **(shard_delta(rp0, rp1) if sharded else {}),
            "sockets_subscribed": ready.get("subscribed"), "setup_errors": ready.get("errors"),
            "topic_subscribers": {"min": min(subs_per_topic), "max": max(subs_per_topic), "total": sum(subs_per_topic)},
            "accepted": sum(accepted), "http_errors": len(errors), "first_http_error": errors[0] if errors else "",
            "deliveries": rep["deliveries"], "delivered_waited": got,
            "publish_s": round(t_pub - t0, 3), "phase_s": round(t1 - t0, 3),
            "per_node": per_node, "unserved_total": sum(n["unserved"] for n in per_node),
            "nodes_cpu_s": round(sum(n["cpu_s"] for n in per_node), 3),
            "core_busy_pct": busy_pct(cores0, cores1),
            "redis_other_clients_before": others,
            **{k: v for k, v in redis_delta(rp0, rp1).items() if k != "redis_calls"},
            "redis_top_calls": dict(list(redis_delta(rp0, rp1)["redis_calls"].items())[:8]),
            "exactly_once": rep["deliveries"] == events and sum(n["dups"] for n in per_node) == 0,
        }
    finally:
        if load is not None:
            load.close()
        for s in servers:
            s.stop()
        for r in rs:
            r.close()


def sc_shards(tag: str, nodes: int = 4, channels: int = 1000, events: int = 10000, burst: int = 5000) -> dict[str, Any]:
    """The routing scenario on a Redis Cluster of 3 primaries (each with a replica) started
    here on loopback: does traffic spread over the shards, and still reach only its nodes?"""
    import tempfile
    from pathlib import Path

    from tests.soak.harness import RedisClusterServers

    with tempfile.TemporaryDirectory(prefix="bench-shards-") as workdir:
        shards = RedisClusterServers(Path(workdir))
        try:
            shards.start()
            result = sc_routing(shards.url, tag, nodes=nodes, channels=channels, events=events, shards=shards)
            result["join_burst"] = sc_join_burst(shards.url, tag, sockets=burst, shards=shards)
            return result
        finally:
            shards.stop()


def sc_cluster(url: str, tag: str, nodes: int, rate: float = 500.0, seconds: float = 8.0, per_node: int = 100) -> dict[str, Any]:
    """``nodes`` nodes, ``per_node`` subscribed sockets each (one per channel; channel j on node
    j % nodes), and per node 3 C publishers at ``rate``/3 events/s each through that node's
    API, to one channel each on other nodes (its own with one node)."""
    prefix = f"bench-{secrets.token_hex(4)}"
    r = redis_client(url)
    servers: list[b.Server] = []
    load: Load | None = None
    gens: list[tuple[str, subprocess.Popen[str]]] = []
    k = 3
    try:
        for i in range(nodes):
            servers.append(start_node(url, prefix, f"cluster{nodes}-{i}", tag))
        wait_registered(servers)
        channels = per_node * nodes
        names = [f"cl-{j}" for j in range(channels)]
        load = Load([(servers[j % nodes].port, names[j]) for j in range(channels)], f"cluster{nodes}-{tag}", conn_rate=1000)
        ready = load.ready()
        time.sleep(1.0)
        targets: list[tuple[int, str]] = []  # (publishing node, channel)
        for i in range(nodes):
            for d in range(k):
                target_node = (i + 1 + d % max(1, nodes - 1)) % nodes if nodes > 1 else i
                targets.append((i, names[target_node + nodes * (k * i + d)]))
        rp0 = redis_probe(r)
        m0 = [adapter_metrics(s.port) for s in servers]
        warm, drain = 0.5, 1.0
        cpu0, cores0, t0 = cpu_now(servers), b.core_ticks(), time.monotonic()
        drv0 = b.proc_cpu_s(load.proc.pid)
        for i, ch in targets:
            cmd = [str(b.GEN), "--mode", "pub", "--port", str(servers[i].port), "--key", b.APP_KEY, "--secret", b.APP_SECRET,
                   "--app-id", APP_ID, "--subs", "0", "--pubconns", "4", "--rate", f"{rate / k:g}", "--channel", ch,
                   "--warmup", str(warm), "--duration", str(seconds), "--drain", str(drain)]
            gens.append((ch, subprocess.Popen(["taskset", "-c", BOTH_CORES, *cmd], stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE, text=True, start_new_session=True)))
        gen_out: dict[str, dict[str, Any]] = {}
        for ch, p in gens:
            out, err = p.communicate(timeout=seconds + 60)
            res = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
            gen_out[ch] = res[0] if res else {"error": err[-300:]}
        t_pub = time.monotonic()
        cpu1, cores1 = cpu_now(servers), b.core_ticks()
        drv1 = b.proc_cpu_s(load.proc.pid)
        rp_pub = redis_probe(r)
        accepted = sum(int(g.get("accepted", 0)) for g in gen_out.values())
        got = load.wait_count(accepted, timeout=20, stable=5)
        rp1 = redis_probe(r)
        m1 = [adapter_metrics(s.port) for s in servers]
        rep = load.ask({"cmd": "report", "t0": t0 + warm + 0.5, "t1": t0 + warm + seconds})
        window = seconds - 0.5
        exact = {ch: rep["channels"].get(ch, {}).get("n", 0) == int(g.get("accepted", -1)) for ch, g in gen_out.items()}
        others = sum(c.get("n", 0) for n, c in rep["channels"].items() if n not in gen_out)
        busy = busy_pct(cores0, cores1)
        dt = t_pub - t0
        nodes_pct = [round(100 * (cpu1[i] - cpu0[i]) / dt, 1) for i in range(nodes)]
        redis_pct = round(100 * (rp_pub["cpu_s"] - rp0["cpu_s"]) / dt, 1)
        driver_pct = round(100 * (drv1 - drv0) / dt, 1)
        gens_pct = round(100 * sum(float(g.get("gen_cpu_total_s", 0)) for g in gen_out.values()) / dt, 1)
        others_pct = round(max(0.0, sum(busy.values()) - sum(nodes_pct) - redis_pct - driver_pct - gens_pct), 1)
        received = [int((m1[i].get("received") or 0) - (m0[i].get("received") or 0)) for i in range(nodes)]
        # every publisher's channel is on another node (nodes > 1): each accepted event crosses Redis once
        expected_received = accepted if nodes > 1 else 0
        return {
            "scenario": "cluster", "nodes": nodes, "sockets_subscribed": ready.get("subscribed"), "publishers": len(gens),
            "offered_per_s": rate * nodes, "accepted": accepted,
            "accepted_per_s": round(sum(float(g.get("accepted_per_s", 0)) for g in gen_out.values()), 1),
            "http_errors": sum(int(g.get("http_errors", 0)) for g in gen_out.values()),
            "late_slots": sum(int(g.get("late_slots", 0)) for g in gen_out.values()),
            "deliveries": rep["deliveries"], "delivered_waited": got,
            "deliveries_per_s": round(rep["in_window"] / window, 1),
            "exactly_once": all(exact.values()) and others == 0, "channels_not_exact": [c for c, ok in exact.items() if not ok][:5],
            "stray_deliveries": others, "lat": rep["lat"],
            "received_per_node": received, "unserved_total": sum(received) - expected_received,
            "nodes_cpu_pct": nodes_pct, "redis_cpu_pct": redis_pct, "driver_cpu_pct": driver_pct, "gens_cpu_pct": gens_pct,
            "other_processes_cpu_pct": others_pct,
            "core_busy_pct": busy, "machine_busy_pct": round(sum(busy.values()), 1),
            "machine_capped": sum(busy.values()) >= 180,
            "redis_commands": rp1["commands"] - rp0["commands"],
        }
    finally:
        for _, p in gens:
            stop_proc(p, signal.SIGKILL)
        if load is not None:
            load.close()
        for s in servers:
            s.stop()
        r.close()


def sc_join_burst(url: str, tag: str, sockets: int = 5000, conn_rate: float = 1000.0, shards: Any = None) -> dict[str, Any]:
    prefix = f"bench-{secrets.token_hex(4)}"
    sharded = shards is not None
    rs = redis_clients(url, shards)
    server: b.Server | None = None
    load: Load | None = None
    try:
        others = probe_all(rs)["clients"] - len(rs)
        server = start_node(url, prefix, "burst", tag, cores=b.SERVER_CORE, sharded=sharded)
        wait_registered([server])
        names = [f"jb-{i}" for i in range(sockets)]
        load = Load([(server.port, n) for n in names], f"burst-{tag}", conn_rate=conn_rate, subscribe=False, cores=b.GEN_CORE,
                    setup_timeout=max(60.0, 3 * sockets / conn_rate))
        ready = load.ready()
        time.sleep(2.5)  # idle: past a heartbeat
        rp0 = probe_all(rs)
        cpu0 = b.proc_cpu_s(server.pid)
        res = load.ask({"cmd": "burst"}, timeout=120)["burst"]
        cpu1 = b.proc_cpu_s(server.pid)
        rp1 = probe_all(rs)
        subs = numsub(rs, [topic(prefix, n) for n in names], sharded)
        followed = sum(1 for n in names if int(subs.get(topic(prefix, n), 0)) > 0)
        d = redis_delta(rp0, rp1)
        return {
            "scenario": "join-burst", "sockets": sockets,
            "redis": f"Redis Cluster, {len(rs)} primaries" if sharded else "one Redis",
            **(shard_delta(rp0, rp1) if sharded else {}), "opened": ready.get("open"), "open_s": ready.get("open_s"),
            "setup_errors": ready.get("errors"), "succeeded": res.get("succeeded"),
            "join": {k: res.get(k) for k in ("n", "p50_ms", "p99_ms", "max_ms")},
            "send_s": res.get("send_s"), "all_joined_s": res.get("all_s"), "errors": res.get("errors"),
            "first_error": res.get("first_error"),
            "subscribe_cmds": d["redis_calls"].get("subscribe", 0) + d["redis_calls"].get("ssubscribe", 0),
            "evalsha": d["redis_calls"].get("evalsha", 0),
            "redis_client_calls": d["redis_client_calls"], "redis_commands": d["redis_commands"],
            "redis_top_calls": dict(list(d["redis_calls"].items())[:8]), "redis_cpu_s": d["redis_cpu_s"],
            "redis_other_clients_before": others,
            "topics_subscribed_after": followed, "server_cpu_s": round(cpu1 - cpu0, 3),
            "cores": f"node on core {b.SERVER_CORE}, driver on core {b.GEN_CORE}",
        }
    finally:
        if load is not None:
            load.close()
        if server is not None:
            server.stop()
        for r in rs:
            r.close()


def sc_outage(tag: str, how: str, rate: float = 200.0, seconds: float = 10.0, down_at: float = 3.0, up_at: float = 6.0) -> dict[str, Any]:
    """``how``: "restart" (SIGTERM, then a new redis-server on the same port) or "stop"
    (SIGSTOP, then SIGCONT)."""
    port = b.free_port()
    redis_box: dict[str, subprocess.Popen[bytes] | None] = {"p": start_redis_server(port)}
    url = f"redis://127.0.0.1:{port}/0"
    prefix = f"bench-{secrets.token_hex(4)}"
    servers: list[b.Server] = []
    load: Load | None = None
    timers: list[threading.Timer] = []
    events: list[tuple[str, float]] = []
    try:
        for name in ("A", "B"):
            servers.append(start_node(url, prefix, f"outage-{how}-{name}", tag))
        wait_registered(servers)
        a, bnode = servers
        load = Load([(bnode.port, "gap")], f"outage-{how}-{tag}", conn_rate=100)
        ready = load.ready()
        time.sleep(0.5)
        client = pusher_client(a.port)

        def down() -> None:
            p = redis_box["p"]
            assert p is not None
            if how == "restart":
                p.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=5)
            else:
                os.kill(p.pid, signal.SIGSTOP)
            events.append(("down", time.monotonic()))

        def up() -> None:
            if how == "restart":
                redis_box["p"] = None
                redis_box["p"] = start_redis_server(port)
            else:
                p = redis_box["p"]
                assert p is not None
                os.kill(p.pid, signal.SIGCONT)
            events.append(("up", time.monotonic()))

        accepted: list[int] = []
        accepted_t: list[float] = []
        errors: list[str] = []
        slow = 0
        t0 = time.monotonic()
        timers = [threading.Timer(down_at, down), threading.Timer(up_at, up)]
        for tm in timers:
            tm.start()
        k = 0
        while True:
            due = t0 + k / rate
            now = time.monotonic()
            if due - t0 >= seconds or now - t0 >= seconds + 20:
                break
            if due > now:
                time.sleep(due - now)
            ts = time.monotonic()
            try:
                client.trigger("gap", "ev", str(k))
                accepted.append(k)
                accepted_t.append(ts - t0)
            except Exception as e:  # counted: not accepted
                errors.append(repr(e)[:200])
            if time.monotonic() - ts > 0.5:
                slow += 1
            k += 1
        for tm in timers:
            tm.join(timeout=15)
        t_end = time.monotonic()
        got = load.wait_count(len(accepted), timeout=45, stable=12)
        t_done = time.monotonic()
        rep = load.ask({"cmd": "report", "seqs": True})
        seqs = rep["channels"].get("gap", {}).get("seqs", [])
        got_set = set(seqs)
        missing = sorted(set(accepted) - got_set)
        ma, mb = adapter_metrics(a.port), adapter_metrics(bnode.port)
        t_down = next((t for e, t in events if e == "down"), t0) - t0
        t_up = next((t for e, t in events if e == "up"), t0) - t0
        during = sum(1 for t in accepted_t if t_down <= t < t_up)
        return {
            "scenario": "outage", "how": how, "subscribed": ready.get("subscribed"), "sent": k,
            "accepted": len(accepted), "http_errors": len(errors), "first_http_error": errors[0] if errors else "",
            "slow_requests_over_0_5s": slow, "accepted_while_down": during,
            "down_s": round(t_down, 2), "up_s": round(t_up, 2),
            "received": len(seqs), "distinct": len(got_set), "duplicates": len(seqs) - len(got_set),
            "out_of_order": sum(1 for x, y in itertools.pairwise(seqs) if y <= x),
            "missing": len(missing), "missing_first": missing[:20],
            "missing_ranges": ranges(missing)[:10],
            "unexpected": len(got_set - set(accepted)),
            "all_in_order_once": not missing and len(seqs) == len(got_set) and seqs == sorted(seqs),
            "drain_s": round(t_done - t_end, 2), "delivered_waited": got,
            "A": ma, "B": mb,
        }
    finally:
        for tm in timers:
            tm.cancel()
        if load is not None:
            load.close()
        for s in servers:
            s.stop()
        stop_proc(redis_box["p"])


def ranges(xs: list[int]) -> list[str]:
    out: list[str] = []
    for x in xs:
        if out and int(out[-1].split("-")[-1]) == x - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{x}"
        else:
            out.append(str(x))
    return out


# ----------------------------------------------------------------------------- report
def med(rs: list[dict[str, Any]], get: Any) -> Any:
    vals = [v for v in (get(r) for r in rs) if isinstance(v, (int, float))]
    return statistics.median(vals) if vals else None


def table_fanout(rs: dict[str, list[dict[str, Any]]], repeat: int) -> None:
    base = statistics.median(r.get("deliveries_per_s", 0) for r in rs["memory"]) if rs["memory"] else 0
    base = base or 1
    print(f"\n## fanout, 2,000 subscribers, median of {repeat}")
    print(f"{'variant':<10} {'deliveries/s':>14} {'ratio to memory':>16} {'lost':>6}")
    for variant, vr in rs.items():
        if not vr:
            continue
        d = statistics.median(r.get("deliveries_per_s", 0) for r in vr)
        lost = sum(int(r.get("lost") or 0) for r in vr)
        print(f"{variant:<10} {d:>14,.0f} {d / base:>16.2f} {lost:>6}")


def table_routing(rs: list[dict[str, Any]]) -> None:
    if not rs:
        return
    r0 = rs[0]
    print(f"\n## routing: {r0['nodes']} nodes (taskset 0,1), {r0['channels']} channels, 1 socket each, "
          f"{r0['events']:,} events via node 0's API (pusher SDK); median of {len(rs)} (unserved: max)")
    print(f"{'node':>4} {'channels':>8} {'expected rx':>11} {'received':>9} {'unserved':>9} {'deliveries':>10} {'dups':>5} "
          f"{'ooo':>4} {'CPU s':>7}")
    for i in range(r0["nodes"]):
        node = [r["per_node"][i] for r in rs]
        print(f"{i:>4} {node[0]['channels']:>8} {node[0]['expected_received']:>11,} {med(node, lambda n: n['received']):>9,.0f} "
              f"{max(n['unserved'] for n in node):>9,} {med(node, lambda n: n['deliveries']):>10,.0f} "
              f"{max(n['dups'] for n in node):>5} {max(n['out_of_order'] for n in node):>4} {med(node, lambda n: n['cpu_s']):>7.2f}")
    print(f"deliveries {med(rs, lambda r: r['deliveries']):,.0f} of {r0['events']:,} (accepted "
          f"{med(rs, lambda r: r['accepted']):,.0f}); exactly once in every run: {all(r['exactly_once'] for r in rs)}; "
          f"subscribers per channel topic in Redis: min {min(r['topic_subscribers']['min'] for r in rs)} "
          f"max {max(r['topic_subscribers']['max'] for r in rs)}")
    print(f"publish phase {med(rs, lambda r: r['phase_s']):.2f} s; nodes CPU {med(rs, lambda r: r['nodes_cpu_s']):.2f} s; "
          f"Redis CPU {med(rs, lambda r: r['redis_cpu_s']):.2f} s, {med(rs, lambda r: r['redis_commands']):,.0f} commands "
          f"(other Redis clients before: {max(r['redis_other_clients_before'] for r in rs)}); "
          f"target 0 unserved per node: {'met' if all(r['unserved_total'] == 0 and all(n['unserved'] == 0 for n in r['per_node']) for r in rs) else 'NOT MET'}")


def table_shards(rs: list[dict[str, Any]]) -> None:
    if not rs:
        return
    print("\n## Routing on a Redis Cluster (3 primaries + replicas), per run")
    print("| run | nodes | channels | events | commands per primary | spread (max/min) | Redis CPU s per primary | unserved envelopes | deliveries | exactly once |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(rs):
        print(f"| {i + 1} | {r['nodes']} | {r['channels']} | {r['events']} | {', '.join(f'{c:,}' for c in r['shard_commands'])} "
              f"| {r['shard_spread']}x | {', '.join(str(c) for c in r['shard_cpu_s'])} | {r['unserved_total']} "
              f"| {r['deliveries']:,} | {r['exactly_once']} |")
    print("\n## Join burst on the Redis Cluster, per run")
    print("| run | sockets | succeeded | p50 ms | p99 ms | SSUBSCRIBE | commands per primary | spread | Redis CPU s (primaries) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(rs):
        jb = r["join_burst"]
        print(f"| {i + 1} | {jb['sockets']} | {jb['succeeded']} | {jb['join']['p50_ms']} | {jb['join']['p99_ms']} | {jb['subscribe_cmds']} "
              f"| {', '.join(f'{c:,}' for c in jb['shard_commands'])} | {jb['shard_spread']}x | {jb['redis_cpu_s']} |")


def table_cluster(rs: list[dict[str, Any]]) -> None:
    if not rs:
        return
    print("\n## cluster: 100 sockets per node, 500 events/s per node through its own API to other nodes' channels "
          "(nodes, driver, publishers and Redis all on cores 0,1)")
    print(f"{'nodes':>5} {'offered/s':>9} {'accepted/s':>10} {'deliv/s':>9} {'exactly once':>12} {'lat p50/p99 ms':>15} "
          f"{'node CPU %':>18} {'Redis %':>7} {'driver %':>8} {'pubs %':>6} {'other %':>7} {'machine %':>9}")
    by_n: dict[int, list[dict[str, Any]]] = {}
    for r in rs:
        by_n.setdefault(r["nodes"], []).append(r)
    capped: list[int] = []
    short = False
    for n, nr in sorted(by_n.items()):
        lat = f"{med(nr, lambda r: r['lat'].get('p50_ms'))}/{med(nr, lambda r: r['lat'].get('p99_ms'))}"
        cpu = "/".join(f"{c:.0f}" for c in nr[0]["nodes_cpu_pct"])
        if any(r["machine_capped"] for r in nr):
            capped.append(n)
        short |= any(r["deliveries_per_s"] < 0.97 * r["offered_per_s"] for r in nr)
        print(f"{n:>5} {nr[0]['offered_per_s']:>9,.0f} {med(nr, lambda r: r['accepted_per_s']):>10,.0f} "
              f"{med(nr, lambda r: r['deliveries_per_s']):>9,.0f} {all(r['exactly_once'] for r in nr)!s:>12} {lat:>15} "
              f"{cpu:>18} {med(nr, lambda r: r['redis_cpu_pct']):>7.0f} {med(nr, lambda r: r['driver_cpu_pct']):>8.0f} "
              f"{med(nr, lambda r: r['gens_cpu_pct']):>6.0f} {med(nr, lambda r: r['other_processes_cpu_pct']):>7.0f} "
              f"{med(nr, lambda r: r['machine_busy_pct']):>9.0f}")
    print("CPU % in % of one core; 'other' = processes outside this benchmark; machine = both cores, 200% at most")
    if capped:
        what = ("and deliveries/s fell short of the offered load: the machine, not the cluster, is the limit"
                if short else "though every offered event was still delivered")
        print(f"the 2-core machine is the cap: both cores >= 90% busy with {', '.join(map(str, capped))} node(s), "
              f"{what};\nmore nodes (or a higher per-node rate) cannot add deliveries/s on this machine")


def table_burst(rs: list[dict[str, Any]]) -> None:
    if not rs:
        return
    r0 = rs[0]
    print(f"\n## join burst: {r0['sockets']:,} idle sockets subscribe to {r0['sockets']:,} channels at once "
          f"({r0['cores']}); median of {len(rs)}")
    print(f"{'succeeded':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'all in s':>8} {'SUBSCRIBE':>9} {'EVALSHA':>8} "
          f"{'client cmds':>11} {'all cmds':>10} {'Redis CPU s':>11}")
    print(f"{med(rs, lambda r: r['succeeded']):>9,.0f} {med(rs, lambda r: r['join'].get('p50_ms')):>8} "
          f"{med(rs, lambda r: r['join'].get('p99_ms')):>8} {med(rs, lambda r: r['join'].get('max_ms')):>8} "
          f"{med(rs, lambda r: r['all_joined_s']):>8} {med(rs, lambda r: r['subscribe_cmds']):>9,.0f} "
          f"{med(rs, lambda r: r['evalsha']):>8,.0f} {med(rs, lambda r: r['redis_client_calls']):>11,.0f} "
          f"{med(rs, lambda r: r['redis_commands']):>10,.0f} {med(rs, lambda r: r['redis_cpu_s']):>11.2f}")
    print("client cmds: commands sent to Redis (an EVALSHA counts once, what its script runs is left out; pipelined\n"
          "commands count one each); all cmds: total_commands_processed, scripts' inner commands included")
    print(f"topics subscribed after: {min(r['topics_subscribed_after'] for r in rs):,}; commands by name (1st run): {r0['redis_top_calls']}")


def table_outage(rs: list[dict[str, Any]]) -> None:
    if not rs:
        return
    print("\n## outage: 2 nodes, own redis-server, 200 events/s via A's API for 10 s, Redis down 3 s -> 6 s, subscriber on B")
    print(f"{'how':<8} {'sent':>5} {'accepted':>8} {'while down':>10} {'received':>8} {'missing':>7} {'dups':>5} {'ooo':>4} "
          f"{'all, in order, once':>19} {'A dropped':>9} {'drain s':>7}")
    for r in rs:
        print(f"{r['how']:<8} {r['sent']:>5} {r['accepted']:>8} {r['accepted_while_down']:>10} {r['received']:>8} "
              f"{r['missing']:>7} {r['duplicates']:>5} {r['out_of_order']:>4} {r['all_in_order_once']!s:>19} "
              f"{fmt(r['A'].get('dropped')):>9} {r['drain_s']:>7}")
        if r["missing"]:
            print(f"  {r['how']}: missing sequence numbers {', '.join(r['missing_ranges'])}")
        if r["http_errors"]:
            print(f"  {r['how']}: {r['http_errors']} API errors, first: {r['first_http_error']}")


def fmt(v: Any) -> str:
    return "-" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, from {','.join(SCENARIOS)}")
    parser.add_argument("--repeat", type=int, default=3, help="runs of fanout, routing and join-burst (median)")
    parser.add_argument("--cluster-repeat", type=int, default=1, help="runs of each cluster size (median)")
    parser.add_argument("--duration", type=float, default=8.0, help="fanout measurement seconds")
    parser.add_argument("--cluster-seconds", type=float, default=8.0)
    parser.add_argument("--quick", action="store_true", help="reduced sizes: a check that everything runs")
    opts = parser.parse_args(argv)
    scenarios = [s for s in opts.scenarios.split(",") if s]
    for s in scenarios:
        if s not in SCENARIOS:
            parser.error(f"unknown scenario {s}; choose from {','.join(SCENARIOS)}")
    q = opts.quick
    sizes = {
        "routing": dict(channels=40, events=400) if q else dict(channels=400, events=4000),
        "shards": dict(channels=100, events=1000, burst=500) if q else dict(channels=1000, events=10000, burst=5000),
        "cluster_s": 3.0 if q else opts.cluster_seconds,
        "burst": 500 if q else 5000,
        "outage_s": 10.0,
    }
    b.OUT.mkdir(parents=True, exist_ok=True)
    b.raise_nofile()
    b.build_generator()
    url, own_redis = redis_url()
    profile = b.Profile(warmup=2.0, duration=3.0 if q else opts.duration, idle_conns=0, idle_procs=0)
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    extra: dict[str, list[dict[str, Any]]] = {s: [] for s in SCENARIOS[1:]}
    out = b.OUT / f"scaling-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    t_start = time.monotonic()
    harness_errors = 0

    def record(r: dict[str, Any]) -> None:
        with out.open("a") as f:
            f.write(json.dumps(r) + "\n")

    def guarded(name: str, fn: Any, *args: Any, **kw: Any) -> dict[str, Any] | None:
        nonlocal harness_errors
        b.wait_quiet(15)
        t0 = time.monotonic()
        try:
            r: dict[str, Any] = fn(*args, **kw)
        except Exception as e:
            harness_errors += 1
            b.log(f"[{name}] harness error: {e!r}")
            record({"scenario": name, "error": repr(e)})
            return None
        r["wall_s"] = round(time.monotonic() - t0, 1)
        record(r)
        return r

    try:
        if "fanout" in scenarios:
            for rep in range(opts.repeat):
                for variant in VARIANTS:
                    b.wait_quiet(15)
                    try:
                        server = start(variant, url, f"{rep}")
                    except RuntimeError as e:
                        harness_errors += 1
                        b.log(f"[fanout] {variant}: {e}")
                        continue
                    try:
                        r = b.sc_fanout(server, profile)
                    finally:
                        server.stop()
                    r.update(scenario="fanout", variant=variant, repeat=rep)
                    results[variant].append(r)
                    record(r)
                    b.log(f"[fanout #{rep + 1}] {variant}: deliveries/s={r.get('deliveries_per_s', 0):,.0f} "
                          f"p99={r.get('lat', {}).get('p99_ms', '?')}ms lost={r.get('lost')} gen_cpu={r.get('gen_cpu_pct')}")
        if "routing" in scenarios:
            for rep in range(opts.repeat):
                r = guarded("routing", sc_routing, url, f"{rep}", **sizes["routing"])
                if r:
                    extra["routing"].append(r)
                    b.log(f"[routing #{rep + 1}] received/unserved per node "
                          f"{[(n['received'], n['unserved']) for n in r['per_node']]} deliveries={r['deliveries']} "
                          f"phase={r['phase_s']}s redis_cpu={r['redis_cpu_s']}s")
        if "shards" in scenarios:
            for rep in range(opts.repeat):
                r = guarded("shards", sc_shards, f"{rep}", **sizes["shards"])
                if r:
                    extra["shards"].append(r)
                    jb = r["join_burst"]
                    b.log(f"[shards #{rep + 1}] commands per primary {r['shard_commands']} (spread {r['shard_spread']}x) "
                          f"unserved={r['unserved_total']} deliveries={r['deliveries']} exactly_once={r['exactly_once']}; "
                          f"join burst p99={jb['join']['p99_ms']}ms SSUBSCRIBE={jb['subscribe_cmds']} per primary {jb['shard_commands']}")
        if "cluster" in scenarios:
            for rep in range(opts.cluster_repeat):
                for n in (1, 2, 4):
                    r = guarded("cluster", sc_cluster, url, f"{rep}", n, seconds=sizes["cluster_s"])
                    if r:
                        extra["cluster"].append(r)
                        b.log(f"[cluster #{rep + 1}] {n} nodes: deliveries/s={r['deliveries_per_s']:,.0f} "
                              f"accepted/s={r['accepted_per_s']:,.0f} exactly_once={r['exactly_once']} "
                              f"machine={r['machine_busy_pct']}% p99={r['lat'].get('p99_ms')}ms")
        if "join-burst" in scenarios:
            for rep in range(opts.repeat):
                r = guarded("join-burst", sc_join_burst, url, f"{rep}", sockets=sizes["burst"])
                if r:
                    extra["join-burst"].append(r)
                    b.log(f"[join-burst #{rep + 1}] succeeded={r['succeeded']} p50/p99={r['join']['p50_ms']}/{r['join']['p99_ms']}ms "
                          f"SUBSCRIBE={r['subscribe_cmds']} client_cmds={r['redis_client_calls']}")
        if "outage" in scenarios:
            for how in ("restart", "stop"):
                r = guarded("outage", sc_outage, "0", how, seconds=sizes["outage_s"])
                if r:
                    extra["outage"].append(r)
                    b.log(f"[outage {how}] accepted={r['accepted']} received={r['received']} missing={r['missing']} "
                          f"dups={r['duplicates']} ooo={r['out_of_order']}")
    finally:
        stop_proc(own_redis)
    print(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')}  {b.machine_info()}")
    print(f"# python -m bench.scaling {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip()
          + f"   total {time.monotonic() - t_start:.0f} s; Redis {url}")
    if "fanout" in scenarios:
        table_fanout(results, opts.repeat)
    table_routing(extra["routing"])
    table_shards(extra["shards"])
    table_cluster(extra["cluster"])
    table_burst(extra["join-burst"])
    table_outage(extra["outage"])
    print(f"\nJSON lines: {out.relative_to(b.ROOT)}")
    if harness_errors:
        print(f"{harness_errors} harness error(s), see above and the JSON lines")
    return 1 if harness_errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
