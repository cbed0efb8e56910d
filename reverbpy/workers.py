"""``reverbpy serve --workers N``: N processes on one port, sharing traffic through Redis.

Each worker is a full ``reverbpy serve`` that binds the same port with ``SO_REUSEPORT``, so
the kernel spreads new connections across them; the Redis adapter makes them one server.
The parent only supervises: it forwards SIGTERM/SIGINT/SIGHUP, restarts a worker that dies
(with a back-off), and exits with the first worker's failure code if they cannot start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

REUSEPORT_ENV = "REVERBPY_REUSEPORT"
STARTUP_GRACE = 3.0


def worker_argv(argv: Sequence[str]) -> list[str]:
    """The parent's arguments with ``--workers`` removed (a worker serves; it does not fork)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        out.append(arg)
    return out


def supervise(count: int, argv: Sequence[str]) -> int:
    cmd = [sys.executable, "-m", "reverbpy", *worker_argv(argv), "--workers", "1"]
    env = {**os.environ, REUSEPORT_ENV: "1"}
    started = time.monotonic()
    workers = [subprocess.Popen(cmd, env=env) for _ in range(count)]
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    print(
        f"reverbpy: supervising {count} workers (pids {', '.join(str(p.pid) for p in workers)})",
        flush=True,
    )
    restarts = 0
    while True:
        time.sleep(0.2)
        for i, proc in enumerate(workers):
            code = proc.poll()
            if code is None or stopping:
                continue
            if time.monotonic() - started < STARTUP_GRACE:
                # A worker that cannot even start (port in use, bad config): give up.
                forward(signal.SIGTERM, None)
                for other in workers:
                    other.wait()
                return code or 1
            restarts += 1
            print(
                f"reverbpy: worker {proc.pid} exited with {code}; restarting",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(min(5.0, 0.2 * restarts))
            workers[i] = subprocess.Popen(cmd, env=env)
        if stopping and all(p.poll() is not None for p in workers):
            return 0
