"""Issue 6's figures: the Redis adapter's cost and ``--workers 2``, as ratios to one in-memory
process, measured back to back in one run with the fanout scenario of ``bench.run``.

    python -m bench.scaling               # medians of 3
    python -m bench.scaling --repeat 1    # quick look

Variants (reverbpy only): ``memory`` (one process, no Redis: the baseline), ``redis`` (one
process with REVERB_SCALING_ENABLED: every trigger is also published to Redis) and
``redis-w2`` (``serve --workers 2``: the kernel spreads the 2,000 subscribers over two
processes and every trigger crosses Redis to the other one). One-process variants are pinned
to core 0 as in ``bench.run``; the two workers may use both cores, and so share core 1 with
the load generator: on this 2-core machine that caps what a second worker can add, which the
output says. Redis: ``REDIS_URL`` when set, else 127.0.0.1:6379 when it answers, else a
``redis-server`` started here on a free loopback port.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

from bench import run as b

VARIANTS: dict[str, tuple[list[str], bool, str]] = {
    # name: (extra serve args, scaling on, cores)
    "memory": ([], False, b.SERVER_CORE),
    "redis": ([], True, b.SERVER_CORE),
    "redis-w2": (["--workers", "2"], True, "0,1"),
}


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
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("bench.scaling: no Redis (set REDIS_URL or install redis-server)")
    port = b.free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return f"redis://127.0.0.1:{port}/0", proc


def start(variant: str, url: str, tag: str) -> b.Server:
    args, scaling, cores = VARIANTS[variant]
    port = b.free_port()
    env = b.server_env("reverbpy")
    if scaling:
        env.update(REVERB_SCALING_ENABLED="true", REDIS_URL=url, REVERB_SCALING_PREFIX=f"bench-{secrets.token_hex(4)}")
    cmd = [str(b.ROOT / ".venv" / "bin" / "python"), "-m", "reverbpy", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    logfile = b.OUT / f"server-{variant}-{tag}.log"
    with logfile.open("wb") as lf:
        proc = subprocess.Popen(["taskset", "-c", cores, *cmd], cwd=b.ROOT, env=env, stdout=lf, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=b.raise_nofile)
    server = b.Server(variant, port, proc, logfile)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{variant} exited at start, see {logfile}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    time.sleep(1.5 if args else 0.5)  # every worker up and registered
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    opts = parser.parse_args(argv)
    b.OUT.mkdir(parents=True, exist_ok=True)
    b.build_generator()
    url, own_redis = redis_url()
    profile = b.Profile(warmup=2.0, duration=opts.duration, idle_conns=0, idle_procs=0)
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    out = b.OUT / f"scaling-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    try:
        for rep in range(opts.repeat):
            for variant in VARIANTS:
                b.wait_quiet(15)
                server = start(variant, url, f"{rep}")
                try:
                    r = b.sc_fanout(server, profile)
                finally:
                    server.stop()
                r.update(variant=variant, repeat=rep)
                results[variant].append(r)
                with out.open("a") as f:
                    f.write(json.dumps(r) + "\n")
                b.log(f"[fanout #{rep + 1}] {variant}: deliveries/s={r.get('deliveries_per_s', 0):,.0f} "
                      f"p99={r.get('lat_p99_ms', r.get('lat', {}).get('p99', '?'))} lost={r.get('lost')} gen_cpu={r.get('gen_cpu_pct')}")
    finally:
        if own_redis is not None:
            own_redis.terminate()
    base = statistics.median(r.get("deliveries_per_s", 0) for r in results["memory"]) or 1
    print(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')}  fanout, 2,000 subscribers, median of {opts.repeat}")
    print(f"{'variant':<10} {'deliveries/s':>14} {'ratio to memory':>16} {'lost':>6}")
    for variant, rs in results.items():
        d = statistics.median(r.get("deliveries_per_s", 0) for r in rs)
        lost = sum(int(r.get("lost") or 0) for r in rs)
        print(f"{variant:<10} {d:>14,.0f} {d / base:>16.2f} {lost:>6}")
    print(f"\nJSON lines: {out.relative_to(b.ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
