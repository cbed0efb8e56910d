"""Run the benchmark scenarios against reverbpy and soketi 1.6.1, side by side.

    python -m bench.run                      # every scenario, both servers, medians of 3 runs
    python -m bench.run --quick              # short runs, one repeat, 4,000 idle connections
    python -m bench.run --scenarios fanout,http0 --servers reverbpy --repeat 1

Each server starts fresh for every scenario and repeat, pinned to core 0 (`taskset -c 0`); the C
load generator (bench/gen/wsgen.c, built here with gcc and libcrypto) runs pinned to core 1. Loopback
only; every run is bounded in time. Output: a table on stdout, JSON lines in bench/out/, and the
ratio chart bench/ratios.png (needs matplotlib; skipped with a warning when it is missing).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
GEN_SRC = HERE / "gen" / "wsgen.c"
GEN = OUT / "wsgen"
APP_ID, APP_KEY, APP_SECRET = "bench-app", "bench-key", "bench-secret"
SERVER_CORE, GEN_CORE = "0", "1"
TICK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


# ----------------------------------------------------------------------------- helpers
def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_generator() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    if GEN.exists() and GEN.stat().st_mtime >= GEN_SRC.stat().st_mtime:
        return
    cmd = ["gcc", "-O2", "-Wall", "-o", str(GEN), str(GEN_SRC), "-lcrypto"]
    log("building generator: " + " ".join(cmd))
    subprocess.run(cmd, check=True)


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    """A port P such that P and P+1000 (soketi's metrics port) are free."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 1000 > 65535:
            continue
        try:
            with socket.socket() as s2:
                s2.bind(("127.0.0.1", port + 1000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


def proc_cpu_s(pid: int) -> float:
    """utime+stime of a process and its reaped children, all threads, in seconds."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(f[11]) + int(f[12])) / TICK


def proc_rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB."""
    rss = hwm = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def core_ticks() -> dict[str, tuple[int, int]]:
    """cpuN -> (busy, total) jiffies."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3].isdigit():
            parts = line.split()
            vals = [int(x) for x in parts[1:9]]
            idle = vals[3] + vals[4]
            out[parts[0]] = (sum(vals) - idle, sum(vals))
    return out


def wait_quiet(max_wait: float, threshold: float = 25.0) -> float:
    """Wait (up to max_wait s) until the machine's other load is under threshold % of one core.

    Other sessions may share this machine; their load distorts a one-core-each benchmark.
    Returns the load seen last (in % of one core, summed over cores)."""
    deadline = time.monotonic() + max_wait
    warned = False
    while True:
        a = core_ticks()
        time.sleep(1.0)
        b = core_ticks()
        load = sum(100 * (b[c][0] - a[c][0]) / max(1, b[c][1] - a[c][1]) for c in a)
        if load < threshold or time.monotonic() >= deadline:
            if load >= threshold:
                log(f"  machine still busy ({load:.0f}% of a core used by other processes): running anyway")
            return round(load, 1)
        if not warned:
            log(f"  machine busy ({load:.0f}% of a core used by other processes): waiting up to {max_wait:.0f} s")
            warned = True


def signed_trigger(port: int, data: str, channel: str = "bench", channels: list[str] | None = None) -> int:
    """One event to `channel`, or to `channels` (at most 100, the HTTP API's limit per event)."""
    target: dict[str, Any] = {"channels": channels} if channels else {"channel": channel}
    body = json.dumps({"name": "ev", **target, "data": data}, separators=(",", ":")).encode()
    q = (
        f"auth_key={APP_KEY}&auth_timestamp={int(time.time())}&auth_version=1.0"
        f"&body_md5={hashlib.md5(body).hexdigest()}"
    )
    sig = hmac.new(APP_SECRET.encode(), f"POST\n/apps/{APP_ID}/events\n{q}".encode(), hashlib.sha256).hexdigest()
    req = (
        f"POST /apps/{APP_ID}/events?{q}&auth_signature={sig} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(req)
        resp = s.recv(65536)
    return int(resp.split(b" ", 2)[1])


# ----------------------------------------------------------------------------- servers
@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    logfile: Path
    console: ConsoleTail | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.console is not None:
            self.console.stop()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


CONSOLE_TOKEN = "bench-console-token"


class ConsoleTail:
    """An operator with the console open on the app: signed in, reading its live log (Server-
    Sent Events, reconnecting as a browser does) for as long as the server runs. Used by the
    ``reverbpy+console`` server: the cost of an open console on the scenario measured."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.lines = 0  # SSE data lines received (each carries a batch of log lines or a sample)
        self.skipped = 0  # what the console's rate bound left out, as it reported
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import http.cookiejar
        import urllib.parse
        import urllib.request

        base = f"http://127.0.0.1:{self.port}"
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        try:
            body = urllib.parse.urlencode({"token": CONSOLE_TOKEN}).encode()
            opener.open(urllib.request.Request(f"{base}/console/login", body, {"Origin": base}), timeout=10).read()
        except Exception as e:
            self.errors.append(f"sign-in: {e!r}")
            return
        while not self._stop.is_set():
            try:
                with opener.open(f"{base}/console/stream?app={APP_ID}", timeout=5) as stream:
                    for raw in stream:
                        if self._stop.is_set():
                            return
                        if raw.startswith(b"data:"):
                            self.lines += 1
                            with contextlib.suppress(ValueError):
                                self.skipped = max(self.skipped, int(json.loads(raw[5:]).get("skipped", 0)))
            except Exception as e:
                if not self._stop.is_set():
                    self.errors.append(repr(e)[:200])
                    time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()

    def report(self) -> dict[str, Any]:
        return {"console_lines": self.lines, "console_skipped": self.skipped, "console_errors": self.errors[:3]}


def server_env(name: str) -> dict[str, str]:
    env = dict(os.environ)
    if name == "reverbpy+console":
        env = server_env("reverbpy")
        env["REVERB_CONSOLE_TOKEN"] = CONSOLE_TOKEN
        return env
    if name == "reverbpy":
        env.update(
            REVERB_APP_ID=APP_ID,
            REVERB_APP_KEY=APP_KEY,
            REVERB_APP_SECRET=APP_SECRET,
            REVERB_APP_MAX_MESSAGE_SIZE="1000000",
            REVERB_APP_ACCEPT_CLIENT_EVENTS_FROM="members",
            REVERB_APP_CLIENT_EVENT_RATE="0",  # 0 = unlimited
            REVERB_APP_MAX_PRESENCE_MEMBERS="1000",
            REVERB_APP_ACTIVITY_TIMEOUT="120",
        )
        env.pop("REVERB_APP_MAX_CONNECTIONS", None)  # unset = unlimited
    else:
        env.update(
            SOKETI_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SEC="-1",
            SOKETI_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SEC="-1",
            SOKETI_DEFAULT_APP_MAX_READ_REQUESTS_PER_SEC="-1",
            SOKETI_DEFAULT_APP_MAX_CONNECTIONS="-1",
            SOKETI_DEFAULT_APP_MAX_PRESENCE_MEMBERS_PER_CHANNEL="1000",
            SOKETI_SHUTDOWN_GRACE_PERIOD="0",
        )
    return env


def start_server(name: str, tag: str) -> Server:
    port = free_port()
    if name.startswith("reverbpy"):
        cmd = [str(ROOT / ".venv" / "bin" / "python"), "-m", "reverbpy", "serve", "--host", "127.0.0.1", "--port", str(port)]
    else:
        cmd = ["bash", str(HERE / "soketi" / "start.sh"), str(port), APP_ID, APP_KEY, APP_SECRET]
    logfile = OUT / f"server-{name}-{tag}.log"
    lf = logfile.open("wb")
    proc = subprocess.Popen(
        ["taskset", "-c", SERVER_CORE, *cmd],
        cwd=ROOT,
        env=server_env(name),
        stdout=lf,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=raise_nofile,
    )
    srv = Server(name, port, proc, logfile)
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
        srv.stop()
        raise RuntimeError(f"{name} did not listen on {port}, see {logfile}")
    time.sleep(0.5)  # let it settle (JIT, imports)
    if name == "reverbpy+console":
        srv.console = ConsoleTail(port)
        time.sleep(0.5)  # signed in, the stream open
    return srv


# ----------------------------------------------------------------------------- generator runs
@dataclass
class Sampler:
    """Samples server CPU/RSS and per-core load at the generator's PHASE lines."""

    server: Server
    marks: dict[str, dict[str, Any]] = field(default_factory=dict)
    gen_cpu_pct: float | None = None
    profile: Path | None = None
    profile_s: float = 0.0
    _spy: subprocess.Popen[bytes] | None = None

    def mark(self, name: str) -> None:
        if name == "measure" and self.profile is not None:
            self._spy = start_profiler(self.server.pid, self.profile, self.profile_s)
        if name == "end" and self._spy is not None:
            self._spy.wait(timeout=60)
            summarize_profile(self.profile)  # type: ignore[arg-type]
        rss, hwm = proc_rss_kib(self.server.pid)
        self.marks[name] = {"t": time.monotonic(), "cpu": proc_cpu_s(self.server.pid), "rss": rss, "hwm": hwm, "cores": core_ticks()}

    def window(self, a: str, b: str) -> dict[str, Any]:
        if a not in self.marks or b not in self.marks:
            return {}
        ma, mb = self.marks[a], self.marks[b]
        dt = mb["t"] - ma["t"]
        res: dict[str, Any] = {
            "server_cpu_pct": round(100 * (mb["cpu"] - ma["cpu"]) / dt, 1) if dt > 0 else None,
            "server_rss_mib": round(mb["rss"] / 1024, 1),
            "server_hwm_mib": round(mb["hwm"] / 1024, 1),
        }
        busy = 0.0
        for core, (busy_b, tot_b) in mb["cores"].items():
            busy_a, tot_a = ma["cores"][core]
            if tot_b > tot_a:
                res[f"{core}_busy_pct"] = round(100 * (busy_b - busy_a) / (tot_b - tot_a), 1)
                busy += res[f"{core}_busy_pct"]
        gen = self.gen_cpu_pct if self.gen_cpu_pct is not None else 0.0
        if res["server_cpu_pct"] is not None:
            # CPU used by anything else on the machine (other processes), in % of one core
            res["background_cpu_pct"] = round(max(0.0, busy - res["server_cpu_pct"] - gen), 1)
        return res


def gen_cmd(server: Server, **opts: Any) -> list[str]:
    cmd = ["taskset", "-c", GEN_CORE, str(GEN), "--port", str(server.port), "--key", APP_KEY, "--secret", APP_SECRET, "--app-id", APP_ID]
    for k, v in opts.items():
        cmd += ["--" + k.replace("_", "-"), str(v)]
    return cmd


PROFILE: dict[str, Any] = {"on": False}


def start_profiler(pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes]:
    """py-spy (in the venv) samples the server for `seconds` of the measurement window."""
    spy = ROOT / ".venv" / "bin" / "py-spy"
    cmd = [str(spy), "record", "-p", str(pid), "-d", str(max(1, int(seconds))), "-r", "250", "-f", "raw", "-o", str(out)]
    # --native (C frames of uvloop, orjson, the interpreter) needs to pause the process per sample
    cmd.append("--native" if PROFILE.get("native") else "--nonblocking")
    return subprocess.Popen(["taskset", "-c", GEN_CORE, *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarize_profile(raw: Path) -> None:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    if not raw.exists():
        log(f"no profile written to {raw}")
        return
    self_c: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        c = int(n)
        total += c
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        leaf = frames[-1]
        self_c[leaf] = self_c.get(leaf, 0) + c
        for f in set(frames):
            incl[f] = incl.get(f, 0) + c
    lines = [f"# {raw.name}: {total} samples", "", "## self time (leaf frames)"]
    lines += [f"{100 * c / total:6.2f}%  {f}" for f, c in sorted(self_c.items(), key=lambda x: -x[1])[:40]]
    lines += ["", "## inclusive time"]
    lines += [f"{100 * c / total:6.2f}%  {f}" for f, c in sorted(incl.items(), key=lambda x: -x[1])[:60]]
    raw.with_suffix(".summary.txt").write_text("\n".join(lines) + "\n")
    log(f"profile: {raw.with_suffix('.summary.txt').relative_to(ROOT)}")


def run_gen(server: Server, sampler: Sampler, timeout: float, **opts: Any) -> dict[str, Any]:
    cmd = gen_cmd(server, **opts)
    if PROFILE["on"] and server.name == "reverbpy" and opts.get("duration"):
        sampler.profile = OUT / f"profile-{PROFILE['scenario']}.txt"
        sampler.profile_s = float(opts["duration"]) - 0.5
    sampler.mark("start")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=raise_nofile)
    timer = threading.Timer(timeout, p.kill)
    timer.start()
    result: dict[str, Any] = {}
    try:
        assert p.stdout is not None
        for line in p.stdout:
            line = line.strip()
            if line == "PHASE measure":
                sampler.mark("measure")
            elif line == "PHASE drain":
                sampler.mark("drain")
            elif line.startswith("{"):
                result = json.loads(line)
        p.wait()
    finally:
        timer.cancel()
    sampler.mark("end")
    sampler.gen_cpu_pct = result.get("gen_cpu_pct")
    err = p.stderr.read() if p.stderr else ""
    if err.strip():
        result["gen_stderr"] = err.strip()[-500:]
    if not result:
        result = {"error": f"generator produced no result (rc={p.returncode})"}
    result.update(sampler.window("measure", "drain") or sampler.window("start", "end"))
    result["gen_cmd"] = " ".join(cmd[3:])
    return result


def merge_buckets(lists: list[list[list[int]]]) -> dict[str, float]:
    counts: dict[int, int] = {}
    for lst in lists:
        for v, c in lst:
            counts[v] = counts.get(v, 0) + c
    n = sum(counts.values())
    if not n:
        return {"n": 0}
    out: dict[str, float] = {"n": n}
    items = sorted(counts.items())
    for name, p in (("p50_ms", 50), ("p99_ms", 99), ("max_ms", 100)):
        want = min(n - 1, int(p / 100 * n))
        acc = 0
        for v, c in items:
            acc += c
            if acc > want:
                out[name] = v / 1000
                break
    return out


# ----------------------------------------------------------------------------- scenarios
@dataclass
class Profile:
    warmup: float
    duration: float
    idle_conns: int
    idle_procs: int


def sc_fanout(server: Server, pr: Profile) -> dict[str, Any]:
    r = run_gen(server, Sampler(server), 120, mode="pub", subs=2000, pubconns=8, backlog=32,
                warmup=pr.warmup, duration=pr.duration, drain=5)
    r["saturated_generator"] = r.get("gen_cpu_pct", 0) >= 90
    return r


def sc_latency(server: Server, pr: Profile) -> dict[str, Any]:
    return run_gen(server, Sampler(server), 120, mode="pub", subs=2000, pubconns=8, backlog=1000000, rate=20,
                   warmup=pr.warmup, duration=pr.duration, drain=5)


def sc_http0(server: Server, pr: Profile) -> dict[str, Any]:
    return run_gen(server, Sampler(server), 120, mode="pub", subs=0, pubconns=32,
                   warmup=pr.warmup, duration=pr.duration, drain=3)


def sc_http100(server: Server, pr: Profile) -> dict[str, Any]:
    return run_gen(server, Sampler(server), 120, mode="pub", subs=100, pubconns=32, backlog=64,
                   warmup=pr.warmup, duration=pr.duration, drain=5)


def sc_client_events(server: Server, pr: Profile) -> dict[str, Any]:
    return run_gen(server, Sampler(server), 120, mode="pairs", pairs=200, window=4,
                   warmup=pr.warmup, duration=pr.duration, drain=2)


def sc_presence(server: Server, pr: Profile) -> dict[str, Any]:
    return run_gen(server, Sampler(server), 120, mode="presence", watchers=20, churners=50,
                   warmup=pr.warmup, duration=pr.duration, drain=2)


def sc_connections(server: Server, pr: Profile, *, channels: int = 1, rate: float = 2000.0) -> dict[str, Any]:
    """~19,900 idle subscribed sockets opened at `rate`/s from several processes and source
    addresses, all on one channel or spread over `channels` (what real apps do)."""
    nproc, total = pr.idle_procs, pr.idle_conns
    per = [total // nproc + (1 if i < total % nproc else 0) for i in range(nproc)]
    sampler = Sampler(server)
    time.sleep(0.5)
    sampler.mark("before")
    procs = []
    for i, n in enumerate(per):
        srcs = ",".join(f"127.0.{i + 1}.{j}" for j in range(2, 6))
        cmd = gen_cmd(server, mode="idle", subs=n, conn_rate=rate / nproc, src=srcs, expect=1, wait=10,
                      setup_timeout=max(30, 3 * total / rate), dump=1, channels=channels)
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=raise_nofile))
    t0 = time.monotonic()
    ready = []
    for p in procs:
        assert p.stdout is not None
        line = p.stdout.readline().strip()
        ready.append(json.loads(line[6:]) if line.startswith("READY ") else {"subscribed": 0})
    t_ready = time.monotonic() - t0
    time.sleep(2)  # let the server settle before reading its RSS
    sampler.mark("after")
    t_trig = time.monotonic_ns()
    names = [f"bench-{i}" for i in range(channels)] if channels > 1 else None
    status = signed_trigger(server.port, f"@ts{t_trig}@", channels=names)
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        res = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
        results.append(res[0] if res else {"error": err[-300:]})
    sampler.mark("end")
    before, after = sampler.marks["before"], sampler.marks["after"]
    subscribed = sum(r.get("subscribed", 0) for r in ready)
    hs = merge_buckets([r.get("handshake_buckets", []) for r in results])
    sub = merge_buckets([r.get("subscribe_buckets", []) for r in results])
    lat = merge_buckets([r.get("lat_buckets", []) for r in results])
    delivered = sum(r.get("deliveries", 0) for r in results)
    rss_delta = after["rss"] - before["rss"]
    return {
        "target_conns": total,
        "subscribed": subscribed,
        "all_established": subscribed == total,
        "open_s": round(t_ready, 3),
        "connect_rate": round(subscribed / max(r.get("open_s", 0) for r in ready), 1) if subscribed else 0,
        "handshake": hs,
        "subscribe": sub,
        "conn_errors": sum(r.get("conn_errors", 0) for r in results),
        "first_error": next((r.get("first_error") for r in results if r.get("first_error")), ""),
        "server_rss_before_mib": round(before["rss"] / 1024, 1),
        "server_rss_after_mib": round(after["rss"] / 1024, 1),
        "kib_per_conn": round(rss_delta / subscribed, 2) if subscribed else None,
        "trigger_status": status,
        "trigger_delivered": delivered,
        "trigger_reached_all": delivered == total,
        "trigger_lat": lat,
        "gen_cpu_total_s": round(sum(r.get("gen_cpu_total_s", 0) for r in results), 2),
        "server_cpu_s": round(sampler.marks["end"]["cpu"] - before["cpu"], 2),
        # Server CPU from the first connect to all subscribed (and 2 s idle), per socket.
        "cpu_us_per_conn": round(1e6 * (after["cpu"] - before["cpu"]) / subscribed, 1) if subscribed else None,
        "connect_cpu_pct": round(100 * (after["cpu"] - before["cpu"]) / max(0.001, after["t"] - before["t"] - 2), 1),
    }


def sc_connections100(server: Server, pr: Profile) -> dict[str, Any]:
    """The same sockets spread over 100 channels at 2,000/s."""
    return sc_connections(server, pr, channels=100)


def sc_storm(server: Server, pr: Profile) -> dict[str, Any]:
    """A reconnect storm: the same sockets over 100 channels, opened at 10,000/s (a deploy or a
    network blip that reconnects every client at once)."""
    return sc_connections(server, pr, channels=100, rate=10_000.0)


def sc_selfcheck(pr: Profile) -> dict[str, Any]:
    """The generator's own receive capacity: a trivial C server floods 200 subscribers."""
    port = free_port()
    blast = subprocess.Popen(["taskset", "-c", SERVER_CORE, str(GEN), "--mode", "blast", "--port", str(port),
                              "--duration", str(pr.warmup + pr.duration + 6)], stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(0.3)
    try:
        out = subprocess.run(["taskset", "-c", GEN_CORE, str(GEN), "--mode", "pub", "--port", str(port), "--subs", "200",
                              "--warmup", str(pr.warmup), "--duration", str(pr.duration), "--drain", "0"],
                             capture_output=True, text=True, timeout=120).stdout
        r = [json.loads(x) for x in out.splitlines() if x.startswith("{")][0]
    finally:
        blast.wait(timeout=30)
    return {"frames_per_s": r["deliveries_per_s"], "gen_cpu_pct": r["gen_cpu_pct"]}


SCENARIOS = {
    "fanout": sc_fanout,
    "latency": sc_latency,
    "connections": sc_connections,
    "connections100": sc_connections100,
    "storm": sc_storm,
    "http0": sc_http0,
    "http100": sc_http100,
    "client-events": sc_client_events,
    "presence": sc_presence,
}

# (scenario, label, getter, unit, higher_is_better, target ratio or None)
METRICS: list[tuple[str, str, Any, str, bool, float | None]] = [
    ("fanout", "fanout deliveries/s", lambda r: r.get("deliveries_per_s"), "/s", True, 10.0),
    ("fanout", "fanout deliveries per server CPU-s", lambda r: per_cpu(r, "deliveries_per_s"), "/s", True, None),
    ("fanout", "fanout events accepted/s", lambda r: r.get("accepted_per_s"), "/s", True, None),
    ("fanout", "fanout latency p50", lambda r: r.get("lat", {}).get("p50_ms"), "ms", False, None),
    ("fanout", "fanout latency p99", lambda r: r.get("lat", {}).get("p99_ms"), "ms", False, None),
    ("fanout", "fanout latency max", lambda r: r.get("lat", {}).get("max_ms"), "ms", False, None),
    ("fanout", "fanout lost deliveries", lambda r: r.get("lost"), "", False, None),
    ("fanout", "fanout server RSS", lambda r: r.get("server_rss_mib"), "MiB", False, None),
    ("fanout", "fanout server CPU", lambda r: r.get("server_cpu_pct"), "%", False, None),
    ("fanout", "fanout other processes' CPU", lambda r: r.get("background_cpu_pct"), "%", False, None),
    ("fanout", "fanout generator CPU", lambda r: r.get("gen_cpu_pct"), "%", False, None),
    ("latency", "20 ev/s x 2000 latency p50", lambda r: r.get("lat", {}).get("p50_ms"), "ms", False, None),
    ("latency", "20 ev/s x 2000 latency p99", lambda r: r.get("lat", {}).get("p99_ms"), "ms", False, 1.0),
    ("latency", "20 ev/s x 2000 latency max", lambda r: r.get("lat", {}).get("max_ms"), "ms", False, None),
    ("latency", "20 ev/s x 2000 lost", lambda r: r.get("lost"), "", False, None),
    ("latency", "20 ev/s server CPU", lambda r: r.get("server_cpu_pct"), "%", False, None),
    ("connections", "conns subscribed", lambda r: r.get("subscribed"), "", True, None),
    ("connections", "conns connect rate", lambda r: r.get("connect_rate"), "/s", True, None),
    ("connections", "conns handshake p99", lambda r: r.get("handshake", {}).get("p99_ms"), "ms", False, 2.0),
    ("connections", "conns subscribe p99", lambda r: r.get("subscribe", {}).get("p99_ms"), "ms", False, None),
    ("connections", "conns KiB RSS/conn", lambda r: r.get("kib_per_conn"), "KiB", False, None),
    ("connections", "conns trigger delivered", lambda r: r.get("trigger_delivered"), "", True, None),
    ("connections", "conns trigger max latency", lambda r: r.get("trigger_lat", {}).get("max_ms"), "ms", False, None),
    ("connections", "conns server CPU us/conn", lambda r: r.get("cpu_us_per_conn"), "us", False, None),
    ("connections100", "100 ch: conns subscribed", lambda r: r.get("subscribed"), "", True, None),
    ("connections100", "100 ch: handshake p99", lambda r: r.get("handshake", {}).get("p99_ms"), "ms", False, 1.0),
    ("connections100", "100 ch: subscribe p99", lambda r: r.get("subscribe", {}).get("p99_ms"), "ms", False, None),
    ("connections100", "100 ch: server CPU us/conn", lambda r: r.get("cpu_us_per_conn"), "us", False, 1.0),
    ("connections100", "100 ch: server CPU in connect phase", lambda r: r.get("connect_cpu_pct"), "%", False, None),
    ("connections100", "100 ch: KiB RSS/conn", lambda r: r.get("kib_per_conn"), "KiB", False, None),
    ("connections100", "100 ch: trigger delivered", lambda r: r.get("trigger_delivered"), "", True, None),
    ("storm", "storm: conns subscribed", lambda r: r.get("subscribed"), "", True, None),
    ("storm", "storm: connect rate", lambda r: r.get("connect_rate"), "/s", True, 1.0),
    ("storm", "storm: handshake p50", lambda r: r.get("handshake", {}).get("p50_ms"), "ms", False, None),
    ("storm", "storm: handshake p99", lambda r: r.get("handshake", {}).get("p99_ms"), "ms", False, 1.0),
    ("storm", "storm: server CPU us/conn", lambda r: r.get("cpu_us_per_conn"), "us", False, None),
    ("storm", "storm: trigger delivered", lambda r: r.get("trigger_delivered"), "", True, None),
    ("http0", "triggers/s, 0 subs", lambda r: r.get("accepted_per_s"), "/s", True, 2.0),
    ("http0", "triggers per server CPU-s, 0 subs", lambda r: per_cpu(r, "accepted_per_s"), "/s", True, None),
    ("http0", "trigger p99, 0 subs", lambda r: r.get("http_lat", {}).get("p99_ms"), "ms", False, None),
    ("http0", "http0 server CPU", lambda r: r.get("server_cpu_pct"), "%", False, None),
    ("http0", "http0 generator CPU", lambda r: r.get("gen_cpu_pct"), "%", False, None),
    ("http100", "triggers/s, 100 subs", lambda r: r.get("accepted_per_s"), "/s", True, 2.0),
    ("http100", "triggers per server CPU-s, 100 subs", lambda r: per_cpu(r, "accepted_per_s"), "/s", True, None),
    ("http100", "trigger p99, 100 subs", lambda r: r.get("http_lat", {}).get("p99_ms"), "ms", False, None),
    ("http100", "http100 deliveries/s", lambda r: r.get("deliveries_per_s"), "/s", True, None),
    ("http100", "http100 lost", lambda r: r.get("lost"), "", False, None),
    ("client-events", "client events relayed/s", lambda r: r.get("relayed_per_s"), "/s", True, 1.5),
    ("client-events", "relayed per server CPU-s", lambda r: per_cpu(r, "relayed_per_s"), "/s", True, None),
    ("client-events", "client event p99", lambda r: r.get("lat", {}).get("p99_ms"), "ms", False, None),
    ("client-events", "client-events server CPU", lambda r: r.get("server_cpu_pct"), "%", False, None),
    ("client-events", "client-events generator CPU", lambda r: r.get("gen_cpu_pct"), "%", False, None),
    ("presence", "presence joins/s", lambda r: r.get("joins_per_s"), "/s", True, None),
    ("presence", "joins per server CPU-s", lambda r: per_cpu(r, "joins_per_s"), "/s", True, None),
    ("presence", "presence join p99", lambda r: r.get("join", {}).get("p99_ms"), "ms", False, None),
    ("presence", "member_added to watchers/s", lambda r: r.get("member_added_watchers_per_s"), "/s", True, None),
    ("presence", "member_added p99", lambda r: r.get("member_added_lat", {}).get("p99_ms"), "ms", False, None),
]
def per_cpu(r: dict[str, Any], key: str) -> float | None:
    """Throughput per second of server CPU: robust to other load on the shared machine."""
    v, cpu = r.get(key), r.get("server_cpu_pct")
    if not isinstance(v, (int, float)) or not cpu:
        return None
    return v / (cpu / 100)


RATIO_CHART = ["fanout deliveries/s", "fanout deliveries per server CPU-s", "20 ev/s x 2000 latency p99", "conns handshake p99", "conns KiB RSS/conn",
               "100 ch: handshake p99", "100 ch: server CPU us/conn", "storm: connect rate", "storm: handshake p99",
               "triggers/s, 0 subs", "triggers/s, 100 subs", "client events relayed/s", "presence joins/s"]


def median(vals: list[Any]) -> Any:
    nums = [v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not nums:
        return None
    return statistics.median(nums)


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def build_table(results: dict[tuple[str, str], list[dict[str, Any]]], servers: list[str]) -> tuple[str, list[dict[str, Any]]]:
    rows = []
    for sc, label, get, unit, higher, target in METRICS:
        vals = {s: median([get(r) for r in results.get((sc, s), [])]) for s in servers}
        if all(v is None for v in vals.values()):
            continue
        ratio = None
        if "reverbpy" in vals and "soketi" in vals and vals["reverbpy"] is not None and vals["soketi"]:
            ratio = vals["reverbpy"] / vals["soketi"]
        met = None
        if target is not None and ratio is not None:
            met = ratio >= target if higher else ratio <= target
        if label == "conns KiB RSS/conn" and vals.get("reverbpy") is not None:
            met = vals["reverbpy"] <= 12.0
            target = None
        if label == "conns subscribed" and vals.get("reverbpy") is not None:
            met = bool(results.get(("connections", "reverbpy"), [{}])[0].get("all_established"))
        rows.append({"metric": label, "unit": unit, **vals, "ratio": ratio, "target": target, "higher_is_better": higher, "met": met})
    w = max(len(r["metric"]) for r in rows) if rows else 10
    head = f"{'metric':<{w}}  {'unit':<4} " + " ".join(f"{s:>12}" for s in servers) + f" {'ratio r/s':>10} {'target':>8}  met"
    lines = [head, "-" * len(head)]
    for r in rows:
        tgt = ""
        if r["target"] is not None:
            tgt = ("≥" if r["higher_is_better"] else "≤") + f"{r['target']:g}x"
        elif r["metric"] == "conns KiB RSS/conn":
            tgt = "≤12KiB"
        elif r["metric"] == "conns subscribed":
            tgt = "all"
        met = "" if r["met"] is None else ("yes" if r["met"] else "NO")
        lines.append(f"{r['metric']:<{w}}  {r['unit']:<4} " + " ".join(f"{fmt(r.get(s)):>12}" for s in servers)
                     + f" {fmt(r['ratio']) if r['ratio'] is not None else '-':>10} {tgt:>8}  {met}")
    return "\n".join(lines), rows


def draw_chart(rows: list[dict[str, Any]], path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: skipping the chart (pip install matplotlib)")
        return False
    sel = [r for r in rows if r["metric"] in RATIO_CHART and r["ratio"] is not None]
    if not sel:
        return False
    # Plot "how many times better than soketi": ratio for higher-is-better, 1/ratio otherwise.
    labels, vals, colors, targets = [], [], [], []
    for r in sel:
        better = r["ratio"] if r["higher_is_better"] else (1 / r["ratio"] if r["ratio"] else 0)
        labels.append(r["metric"] + ("" if r["higher_is_better"] else " (inverted)"))
        vals.append(better)
        t = r["target"]
        targets.append(None if t is None else (t if r["higher_is_better"] else 1 / t))
        colors.append("#2e7d32" if r["met"] else ("#c62828" if r["met"] is False else "#607d8b"))
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(sel) + 1.6))
    y = list(range(len(sel)))[::-1]
    # Log scale, bars from 1x: a 280x handshake ratio would flatten a 1.4x one on a linear axis,
    # and a ratio below 1x shows as a bar going left.
    ax.set_xscale("log")
    ax.barh(y, [v - 1 for v in vals], left=1, color=colors)
    for yi, v, t in zip(y, vals, targets):
        ax.text(v, yi, f" {v:.2f}x", va="center", fontsize=9)
        if t is not None:
            ax.plot([t, t], [yi - 0.4, yi + 0.4], color="black", lw=2)
    ax.axvline(1.0, color="grey", ls="--", lw=1)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=9)
    ax.set_xlabel(
        "reverbpy advantage over soketi 1.6.1 (x, log scale, one core each; black tick = target)"
    )
    ax.set_title(title, fontsize=10)
    ax.set_xlim(min(vals + [0.5]) / 1.5, max(vals + [3.3]) * 2.5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def machine_info() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.node()} | {cpu} x{os.cpu_count()} | {mem:.0f} GiB | Linux {platform.release()} | Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default="reverbpy,soketi",
                    help="from reverbpy, soketi and reverbpy+console (reverbpy with its console open, its log streaming)")
    ap.add_argument("--scenarios", default="selfcheck," + ",".join(SCENARIOS))
    ap.add_argument("--repeat", type=int, default=None, help="runs per scenario and server (median); default 3, 1 with --quick")
    ap.add_argument("--quick", action="store_true", help="short runs, 1 repeat, 4,000 idle connections")
    ap.add_argument("--duration", type=float, default=None)
    ap.add_argument("--no-chart", action="store_true")
    ap.add_argument("--profile", action="store_true",
                    help="sample reverbpy with py-spy during each measurement window (bench/out/profile-*.txt)")
    ap.add_argument("--native", action="store_true", help="with --profile: include native frames")
    ap.add_argument("--quiet-wait", type=float, default=15.0,
                    help="before each run wait up to this many seconds for other processes to go quiet")
    ap.add_argument("--report", metavar="JSONL", help="only rebuild the table and chart from a results file")
    args = ap.parse_args(argv)
    if args.report:
        return report(Path(args.report), args.no_chart)
    servers = [s for s in args.servers.split(",") if s]
    scenarios = [s for s in args.scenarios.split(",") if s]
    for s in scenarios:
        if s not in SCENARIOS and s != "selfcheck":
            ap.error(f"unknown scenario {s}; choose from selfcheck,{','.join(SCENARIOS)}")
    repeat = args.repeat or (1 if args.quick else 3)
    pr = Profile(warmup=1.5, duration=4.0, idle_conns=4000, idle_procs=2) if args.quick else Profile(2.0, 8.0, 19900, 4)
    if args.duration:
        pr.duration = args.duration
    raise_nofile()
    build_generator()
    if "soketi" in servers:
        subprocess.run(["bash", str(HERE / "soketi" / "start.sh"), "0"], env={**os.environ, "SOKETI_INSTALL_ONLY": "1"}, check=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    jsonl = OUT / f"results-{stamp}.jsonl"
    command = "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:])
    meta = {"kind": "meta", "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "machine": machine_info(), "command": command.strip(),
            "repeat": repeat, "profile": pr.__dict__}
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    t_start = time.monotonic()
    with jsonl.open("w") as jf:
        jf.write(json.dumps(meta) + "\n")
        if "selfcheck" in scenarios:
            sc = sc_selfcheck(pr)
            log(f"[selfcheck] generator receives {sc['frames_per_s']:,.0f} frames/s at {sc['gen_cpu_pct']}% of core {GEN_CORE}")
            jf.write(json.dumps({"kind": "selfcheck", **sc}) + "\n")
            meta["selfcheck"] = sc
        for sc_name in scenarios:
            if sc_name == "selfcheck":
                continue
            for rep in range(repeat):
                for srv_name in servers:
                    tag = f"{sc_name}-{rep}"
                    PROFILE.update(on=args.profile, native=args.native, scenario=sc_name)
                    idle_load = wait_quiet(args.quiet_wait)
                    t0 = time.monotonic()
                    try:
                        srv = start_server(srv_name, tag)
                    except RuntimeError as e:
                        log(f"[{sc_name} #{rep + 1}] {srv_name}: {e}")
                        continue
                    try:
                        r = SCENARIOS[sc_name](srv, pr)
                    except Exception as e:  # a failed run is recorded, not fatal
                        r = {"error": repr(e)}
                    finally:
                        srv.stop()
                    if srv.console is not None:
                        r.update(srv.console.report())
                    r.update(kind="result", idle_load_before_pct=idle_load, scenario=sc_name, server=srv_name, repeat=rep, wall_s=round(time.monotonic() - t0, 1))
                    results.setdefault((sc_name, srv_name), []).append(r)
                    jf.write(json.dumps(r) + "\n")
                    jf.flush()
                    log(f"[{sc_name} #{rep + 1}] {srv_name}: " + summary(sc_name, r))
    table, rows = build_table(results, servers)
    with jsonl.open("a") as jf:
        for row in rows:
            jf.write(json.dumps({"kind": "summary", **row}) + "\n")
    (OUT / "latest.jsonl").write_bytes(jsonl.read_bytes())
    print()
    print(f"# {meta['date']}  {meta['machine']}")
    print(f"# {meta['command']}  (median of {repeat}; server on core {SERVER_CORE}, generator on core {GEN_CORE})")
    if "selfcheck" in meta:
        print(f"# generator self-check: {meta['selfcheck']['frames_per_s']:,.0f} frames/s received on one core")
    print(table)
    print(f"\nJSON lines: {jsonl.relative_to(ROOT)}   total {time.monotonic() - t_start:.0f} s")
    if not args.no_chart and "reverbpy" in servers and "soketi" in servers:
        title = f"reverbpy vs soketi 1.6.1, {meta['date'][:10]}, median of {repeat}"
        if draw_chart(rows, HERE / "ratios.png", title):
            print(f"chart: {(HERE / 'ratios.png').relative_to(ROOT)}")
    return 0


def report(path: Path, no_chart: bool) -> int:
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    meta: dict[str, Any] = {}
    servers: list[str] = []
    for line in path.read_text().splitlines():
        d = json.loads(line)
        if d.get("kind") == "meta":
            meta = d
        elif d.get("kind") == "selfcheck":
            meta["selfcheck"] = d
        elif d.get("kind") == "result":
            results.setdefault((d["scenario"], d["server"]), []).append(d)
            if d["server"] not in servers:
                servers.append(d["server"])
    servers.sort(key=lambda s: s != "reverbpy")
    table, rows = build_table(results, servers)
    print(f"# {meta.get('date')}  {meta.get('machine')}")
    print(f"# {meta.get('command')}  (median of {meta.get('repeat')})")
    if "selfcheck" in meta:
        print(f"# generator self-check: {meta['selfcheck']['frames_per_s']:,.0f} frames/s received on one core")
    print(table)
    if not no_chart and "reverbpy" in servers and "soketi" in servers:
        title = f"reverbpy vs soketi 1.6.1, {str(meta.get('date'))[:10]}, median of {meta.get('repeat')}"
        if draw_chart(rows, HERE / "ratios.png", title):
            print(f"chart: {(HERE / 'ratios.png').relative_to(ROOT)}")
    return 0


def summary(sc: str, r: dict[str, Any]) -> str:
    if "error" in r:
        return "ERROR " + r["error"]
    keys = {
        "fanout": ["deliveries_per_s", "accepted_per_s", "lost", "server_cpu_pct", "gen_cpu_pct"],
        "latency": ["deliveries_per_s", "lost", "server_cpu_pct"],
        "http0": ["accepted_per_s", "http_errors", "server_cpu_pct", "gen_cpu_pct"],
        "http100": ["accepted_per_s", "deliveries_per_s", "lost", "server_cpu_pct", "gen_cpu_pct"],
        "client-events": ["relayed_per_s", "server_cpu_pct", "gen_cpu_pct", "ws_errors"],
        "presence": ["joins_per_s", "member_added_watchers_per_s", "server_cpu_pct", "ws_errors"],
        "connections": ["subscribed", "connect_rate", "kib_per_conn", "cpu_us_per_conn", "trigger_delivered", "conn_errors"],
    }[sc if sc in ("fanout", "latency", "http0", "http100", "client-events", "presence") else "connections"]
    parts = [f"{k}={fmt(r.get(k))}" for k in keys]
    for h in ("lat", "http_lat", "handshake", "join"):
        if isinstance(r.get(h), dict) and r[h].get("n"):
            parts.append(f"{h} p50/p99={fmt(r[h].get('p50_ms'))}/{fmt(r[h].get('p99_ms'))}ms")
    if r.get("background_cpu_pct") is not None:
        parts.append(f"bg={r['background_cpu_pct']}%")
    if r.get("gen_cpu_pct", 0) >= 90:
        parts.append("GENERATOR SATURATED")
    if r.get("first_error"):
        parts.append(f"first_error={r['first_error'][:120]!r}")
    return " ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
