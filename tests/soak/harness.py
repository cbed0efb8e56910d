"""What the soak scenarios measure with: a cheap raw WebSocket client, /proc readings of the
server process, /metrics scraping, signed HTTP triggers and a Redis of our own.

Thousands of sockets live in one client process, so the client is a few lines over asyncio
streams rather than aiohttp's ``ws_connect`` (which costs a task, a parser and a reader each).
Server frames are unmasked and never fragmented by reverbpy; client frames carry a zero mask
key (RFC 6455 asks for a random one, which only matters through proxies).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.conftest import ServerProcess, free_port
from tests.functional.raw import decode, signed_url

TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA


def raise_nofile() -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- the server process, from /proc -------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pid_of(server: ServerProcess) -> int:
    assert server.proc is not None
    return server.proc.pid


GAUGES = (
    "reverbpy_connections",
    "reverbpy_users",
    "reverbpy_channels",
    "reverbpy_subscriptions",
    "reverbpy_slow_consumers_dropped_total",
    "reverbpy_adapter_dropped_envelopes_total",
    "reverbpy_adapter_up",
    "reverbpy_connections_opened_total",
)


def parse_metrics(text: str) -> dict[str, float]:
    """The series in ``GAUGES``, each summed over its labels."""
    totals = dict.fromkeys(GAUGES, 0.0)
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        name = series.split("{", 1)[0]
        if name in totals:
            totals[name] += float(value)
    return totals


async def scrape(http: aiohttp.ClientSession, server: ServerProcess) -> dict[str, float]:
    async with http.get(f"{server.http_url}/metrics") as r:
        return parse_metrics(await r.text())


def state_figures(metrics: dict[str, float]) -> dict[str, float]:
    """The registry-size gauges (what must return to baseline)."""
    return {k: metrics[k] for k in GAUGES[:4]}


async def poll(
    check: Callable[[], Awaitable[bool]], within: float, every: float = 0.1
) -> float | None:
    """Seconds until ``check()`` holds, or None if it did not within ``within`` seconds."""
    start = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - start
        if time.monotonic() - start > within:
            return None
        await asyncio.sleep(every)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


# --- signed HTTP API -------------------------------------------------------------------


async def trigger(
    http: aiohttp.ClientSession, server: ServerProcess, channel: str, event: str, data: Any
) -> int:
    """POST one event; the HTTP status, or 0 when the request did not get an answer."""
    body = orjson.dumps({"name": event, "channel": channel, "data": orjson.dumps(data).decode()})
    url = signed_url(server, "POST", f"/apps/{server.app_id}/events", body)
    try:
        async with http.post(
            url,
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=10),
        ) as r:
            await r.read()
            return r.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


async def api_get(http: aiohttp.ClientSession, server: ServerProcess, path: str) -> Any:
    url = signed_url(server, "GET", f"/apps/{server.app_id}{path}")
    async with http.get(url) as r:
        return await r.json(content_type=None)


def channel_auth(
    server: ServerProcess, socket_id: str, channel: str, data: str | None = None
) -> str:
    text = f"{socket_id}:{channel}" + (f":{data}" if data is not None else "")
    sig = hmac.new(server.secret.encode(), text.encode(), hashlib.sha256).hexdigest()
    return f"{server.key}:{sig}"


# --- a raw WebSocket client ------------------------------------------------------------


class Closed(Exception):
    """The server closed the socket (close frame or EOF)."""


class RawWS:
    """One client socket: masked frames out, unmasked frames in, no task of its own."""

    __slots__ = ("close_code", "reader", "socket_id", "writer")
    live: set[RawWS] = set()  # noqa: RUF012 -- every open socket, for ``abort_all``

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.socket_id = ""
        self.close_code: int | None = None

    @classmethod
    async def open(
        cls,
        server: ServerProcess,
        *,
        rcvbuf: int | None = None,
        established: bool = True,
        timeout: float = 10.0,
    ) -> RawWS:
        """Connect and upgrade; with ``rcvbuf`` the kernel receive buffer is that small (set
        before connecting, so TCP autotuning stays off)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
                reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
                key = base64.b64encode(os.urandom(16)).decode()
                writer.write(
                    (
                        f"GET {server.path}/app/{server.key}?protocol=7&client=js&version=8.4.0 HTTP/1.1\r\n"
                        f"Host: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                    ).encode()
                )
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 101"):
                    writer.transport.abort()
                    raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
                ws = cls(reader, writer)
                cls.live.add(ws)
                if established:
                    hello = await ws.recv_json()
                    assert hello["event"] == "pusher:connection_established", hello
                    ws.socket_id = hello["data"]["socket_id"]
        except BaseException:
            sock.close()
            raise
        return ws

    # --- in ---

    async def recv_frame(self) -> tuple[int, bytes]:
        try:
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            payload = await self.reader.readexactly(n)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise Closed("EOF") from exc
        return b0 & 0x0F, payload

    async def recv_json(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next text message (control frames are skipped); ``Closed`` on a close frame."""
        async with asyncio.timeout(timeout):
            while True:
                opcode, payload = await self.recv_frame()
                if opcode == TEXT:
                    return decode(payload.decode())
                if opcode == CLOSE:
                    self.close_code = (
                        struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    )
                    raise Closed(f"close {self.close_code}")

    async def recv_event(self, event: str, timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.recv_json(timeout)
                if msg["event"] == event:
                    return msg

    async def until_closed(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Read to the close frame (or EOF); the text messages before it."""
        got: list[dict[str, Any]] = []
        with contextlib.suppress(Closed):
            while True:
                got.append(await self.recv_json(timeout))
        return got

    # --- out ---

    def send_frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        if (
            self.writer.transport.is_closing()
        ):  # dropped by the server: asyncio would log each write
            return
        self.writer.write(head + b"\0\0\0\0" + payload)  # a zero mask leaves the payload as is

    def send(self, event: str, data: Any = None, channel: str | None = None) -> None:
        msg: dict[str, Any] = {"event": event, "data": {} if data is None else data}
        if channel is not None:
            msg["channel"] = channel
        self.send_frame(TEXT, orjson.dumps(msg))

    def subscribe(
        self, server: ServerProcess, channel: str, channel_data: str | None = None
    ) -> None:
        """Send the subscribe, signed when the channel needs it (the answer is not read)."""
        data: dict[str, Any] = {"channel": channel}
        if channel.startswith(("private-", "presence-")):
            data["auth"] = channel_auth(server, self.socket_id, channel, channel_data)
        if channel_data is not None:
            data["channel_data"] = channel_data
        self.send("pusher:subscribe", data)

    async def close(self, timeout: float = 5.0) -> None:
        """The closing handshake: our close frame, the server's answer, then EOF."""
        with contextlib.suppress(ConnectionError, RuntimeError):
            self.send_frame(CLOSE, struct.pack("!H", 1000))
        with contextlib.suppress(Closed, TimeoutError):
            async with asyncio.timeout(timeout):
                while True:
                    opcode, _ = await self.recv_frame()
                    if opcode == CLOSE:
                        break
        self.abort_quietly()

    def abort(self) -> None:
        """Drop the TCP link: an RST, no close frame (a killed browser tab)."""
        RawWS.live.discard(self)
        self.writer.transport.abort()

    def abort_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self.abort()

    @classmethod
    def abort_all(cls) -> None:
        """Drop every socket still open (a scenario's end, whatever happened in it)."""
        for ws in list(cls.live):
            ws.abort_quietly()

    def stop_reading(self) -> None:
        """Stop taking bytes from the kernel: the receive buffer fills, then the server's."""
        self.writer.transport.pause_reading()


# --- Redis of our own, for fault injection ------------------------------------------------


class RedisServer:
    """A ``redis-server`` on a free port that a scenario may kill, freeze and restart."""

    def __init__(self, workdir: Path, args: tuple[str, ...] = (), port: int = 0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.5) as s,
            ):
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on {self.port}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class RedisClusterServers:
    """A Redis Cluster on loopback: ``masters`` primaries with one replica each, a short node
    timeout so that a killed primary's replica takes over within a few seconds."""

    def __init__(self, workdir: Path, masters: int = 3) -> None:
        if shutil.which("redis-cli") is None:
            raise RuntimeError("redis-cli is not installed (apt-get install redis-tools)")
        self.workdir = workdir
        self.masters = masters
        self.servers: list[RedisServer] = []
        self._attempt = 0
        self._make_servers()

    def _make_servers(self) -> None:
        """Fresh ports and directories: a second attempt must not meet the first one's
        ``nodes.conf`` or a port someone took in between."""
        self._attempt += 1
        self.servers = []
        for i in range(self.masters * 2):
            node_dir = self.workdir / f"try{self._attempt}" / f"node{i}"
            node_dir.mkdir(parents=True, exist_ok=True)
            # A replica may take over however long ago it last heard its primary (validity
            # factor 0): the tests kill primaries seconds after the cluster was made. The log
            # file is what a failed start reports.
            args = (
                "--cluster-enabled", "yes", "--cluster-node-timeout", "1000",
                "--cluster-replica-validity-factor", "0", "--logfile", str(node_dir / "redis.log"),
            )
            self.servers.append(RedisServer(node_dir, args, port=_cluster_port()))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.servers[0].port}/0"

    def start(self) -> None:
        """Start the nodes and make the cluster; on a busy machine a node can lose its port
        (its bus port is the port + 10,000, chosen free but not held) or the cluster can be slow
        to agree, so a failed attempt is stopped, reported, and tried once more on new ports."""
        try:
            self._create()
        except (RuntimeError, subprocess.SubprocessError) as first:
            report = self.diagnose()
            self.stop()
            self._make_servers()
            try:
                self._create()
            except BaseException as second:
                self.stop()
                raise RuntimeError(f"{second}; first attempt: {first}\n{report}\n{self.diagnose()}") from second
        except BaseException:
            self.stop()
            raise

    def _create(self) -> None:
        for server in self.servers:
            server.start()
        addresses = [f"127.0.0.1:{s.port}" for s in self.servers]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
        )
        self.wait_ok()

    def diagnose(self) -> str:
        """What each node says, and the end of the log of any node that died: enough to tell a
        lost port from a slow agreement."""
        lines = []
        for server in self.servers:
            state = "running" if server.proc is not None and server.proc.poll() is None else "not running"
            info = ""
            if state == "running":
                with contextlib.suppress(subprocess.SubprocessError):
                    info = self.cli(server, "CLUSTER", "INFO")
            cluster_state = next((x for x in info.splitlines() if x.startswith("cluster_state")), "")
            lines.append(f"node {server.port}: {state} {cluster_state}")
            if state != "running":
                log = server.workdir / "redis.log"
                if log.exists():
                    lines.extend("    " + x for x in log.read_text(errors="replace").splitlines()[-5:])
        return "\n".join(lines)

    def cli(self, server: RedisServer, *args: str) -> str:
        return subprocess.run(
            ["redis-cli", "-p", str(server.port), *args], capture_output=True, text=True, timeout=10, check=False
        ).stdout

    def alive(self) -> list[RedisServer]:
        return [s for s in self.servers if s.proc is not None and s.proc.poll() is None]

    def primaries(self) -> list[RedisServer]:
        return [s for s in self.alive() if "role:master" in self.cli(s, "INFO", "replication")]

    def wait_ok(self, timeout: float = 45) -> None:
        """Until every live node says the cluster is whole, with a live primary per shard."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replication = [self.cli(s, "INFO", "replication") for s in self.alive()]
            if (
                all("cluster_state:ok" in self.cli(s, "CLUSTER", "INFO") for s in self.alive())
                and sum("role:master" in r for r in replication) >= self.masters
                and all("master_link_status:up" in r for r in replication if "role:slave" in r)
            ):
                return
            time.sleep(0.2)
        raise RuntimeError(f"the Redis Cluster did not become ready in {timeout:.0f} s")

    def owner(self, key: str) -> RedisServer:
        """The live primary that serves ``key``'s slot now."""
        slot = int(self.cli(self.alive()[0], "CLUSTER", "KEYSLOT", key).strip())
        for server in self.primaries():
            for line in self.cli(server, "CLUSTER", "NODES").splitlines():
                fields = line.split()
                if "myself" in fields[2] and "master" in fields[2]:
                    for span in fields[8:]:
                        low, _, high = span.partition("-")
                        if low.isdigit() and int(low) <= slot <= int(high or low):
                            return server
        raise RuntimeError(f"no primary serves slot {slot}")

    def kill_primary(self, server: RedisServer) -> None:
        """SIGKILL a primary; its replica is promoted after the node timeout."""
        server.kill()

    def command_counts(self) -> dict[int, int]:
        """Commands each live primary has run (``INFO stats``), by port."""
        counts = {}
        for s in self.primaries():
            for line in self.cli(s, "INFO", "stats").splitlines():
                if line.startswith("total_commands_processed:"):
                    counts[s.port] = int(line.split(":")[1])
        return counts

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10,000) is a port too, and free."""
    for _ in range(1000):
        port = free_port()
        if port + 10000 < 65536:
            with contextlib.suppress(OSError), socket.socket() as s:
                s.bind(("127.0.0.1", port + 10000))
                return port
    raise RuntimeError("no free port pair for a Redis Cluster node")
