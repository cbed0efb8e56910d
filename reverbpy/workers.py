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
from pathlib import Path
from types import FrameType

REUSEPORT_ENV = "REVERBPY_REUSEPORT"
STARTUP_GRACE = 3.0


_PARENT_ONLY = ("--workers", "--pid-file")


def worker_argv(argv: Sequence[str]) -> list[str]:
    """The parent's arguments without ``--workers`` (a worker serves; it does not fork) and
    ``--pid-file`` (the parent's pid goes there: it forwards SIGHUP to every worker)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in _PARENT_ONLY:
            skip = True
            continue
        if arg.startswith(tuple(f"{flag}=" for flag in _PARENT_ONLY)):
            continue
        out.append(arg)
    return out


def _pid_file(argv: Sequence[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--pid-file" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--pid-file="):
            return arg.split("=", 1)[1]
    return None


def supervise(count: int, argv: Sequence[str]) -> int:
    cmd = [sys.executable, "-m", "reverbpy", *worker_argv(argv), "--workers", "1"]
    pid_file = _pid_file(argv)
    if pid_file:
        Path(pid_file).write_text(f"{os.getpid()}\n")
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
            if pid_file:
                Path(pid_file).unlink(missing_ok=True)
            return 0
