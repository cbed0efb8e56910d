"""`make run`: reverbpy on 8080 and the booking app on 8000 together, stopped together on Ctrl-C.

    python -m examples.booking_app.run [--no-reverb]

Both read the same `REVERB_APP_ID`/`REVERB_APP_KEY`/`REVERB_APP_SECRET` (dev defaults if unset)
and `REVERB_HOST`/`REVERB_PORT`, from the environment or `./.env`, the way a Laravel app and its
Reverb server share one `.env`. `--no-reverb` skips starting the server, to publish to one
already running (say soketi).

If reverbpy stops on its own (killed, crashed), the app keeps serving and one line says how to
start reverbpy again (`make serve`); the dashboards reconnect to it without a reload.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shlex
import signal
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from aiohttp import web

from .app import create_app, vendor_missing
from .config import BookingConfig, load_config, read_env
from .reverb import reverb_command, reverb_env

ROOT = Path(__file__).resolve().parents[2]
MAKE_DEFAULT_PORT = "8080"  # the Makefile's `PORT ?= 8080`, which `make serve` listens on
log = logging.getLogger("booking")


async def start_reverb(config: BookingConfig) -> asyncio.subprocess.Process:
    # Same working directory as ours: reverbpy reads the same `./.env` the app read.
    proc = await asyncio.create_subprocess_exec(
        *reverb_command(config),
        env=reverb_env(config),
        # Its own session: Ctrl-C reaches only us, and we stop reverbpy after the app, in order.
        start_new_session=True,
    )
    url = f"{config.reverb_scheme}://{config.reverb_host}:{config.reverb_port}/up"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise SystemExit(
                f"reverbpy exited with code {proc.returncode}; is port {config.reverb_port} free?"
            )
        if await asyncio.to_thread(_is_up, url):
            return proc
        await asyncio.sleep(0.1)
    proc.terminate()
    raise SystemExit(f"reverbpy did not answer {url} within 20 s")


def _is_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def restart_hint(port: int, *, cwd: Path, environ: Mapping[str, str]) -> str:
    """The command that starts reverbpy again as we did, typed in the same shell.

    `make serve` reads the same environment and `./.env`, so it is exact without printing the
    secret. Make works in the repository root, though: started elsewhere (another `./.env`), we
    offer only the direct form, which is exact anywhere.
    """
    python = Path(sys.executable)
    if python.is_relative_to(cwd):
        python = python.relative_to(cwd)
    direct = f"{shlex.quote(str(python))} -m examples.booking_app.reverb --port {port}"
    if cwd.resolve() != ROOT:
        return direct
    make = "make serve"
    if environ.get("PORT", MAKE_DEFAULT_PORT) != str(port):
        make += f" PORT={port}"
    return f"{make} (or {direct})"


def exit_status(returncode: int) -> str:
    """A negative code is a signal, which says more by name (SIGKILL: `kill -9`, the OOM killer)."""
    try:
        return f"exit code {returncode}, {signal.Signals(-returncode).name}"
    except ValueError:
        return f"exit code {returncode}"


async def report_reverb_exit(proc: asyncio.subprocess.Process, config: BookingConfig) -> None:
    """One line when reverbpy stops under us, and nothing more: the app keeps serving (a booking
    made meanwhile is saved, and dashboards re-read the orders when they reconnect), so the
    checklist's stop-and-restart of reverbpy needs no new `make run`."""
    returncode = await proc.wait()
    hint = restart_hint(config.reverb_port, cwd=Path.cwd(), environ=os.environ)
    print(
        f"reverbpy stopped ({exit_status(returncode)}); the booking app keeps serving. "
        f"Start reverbpy again with: {hint}",
        file=sys.stderr,
        flush=True,
    )


async def stop_process(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def serve(config: BookingConfig, *, host: str, port: int, with_reverb: bool) -> int:
    missing = vendor_missing()
    if missing:
        log.warning(
            "browser clients missing (%s): run `make run` or `cd examples/booking_app && "
            "npm install && node vendor.mjs`",
            ", ".join(missing),
        )
    reverb = await start_reverb(config) if with_reverb else None
    watcher: asyncio.Task[None] | None = None
    runner = web.AppRunner(create_app(config), access_log=None)
    try:
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        print(
            "\n"
            f"  reverbpy      ws://{config.reverb_host}:{config.reverb_port}/app/{config.app_key}"
            f"{f'  (pid {reverb.pid})' if reverb else '  (not started here: --no-reverb)'}\n"
            f"  booking app   http://{host}:{port}/\n"
            f"  dashboard     http://{host}:{port}/admin/reservations/realtime\n"
            f"  admin login   {config.admin_email} / {config.admin_password}\n"
            f"  console       {config.reverb_scheme}://{config.reverb_host}:{config.reverb_port}"
            f"/console  (token: {config.console_token})\n"
            "\n  Press Ctrl-C to stop both.\n",
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if reverb is not None:
            watcher = asyncio.create_task(report_reverb_exit(reverb, config))
        await stop.wait()
        return 0
    finally:
        if watcher is not None:
            watcher.cancel()  # our own stop below is not news
        print("Stopping…", flush=True)
        await runner.cleanup()
        if reverb is not None:
            await stop_process(reverb)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.booking_app.run", description=__doc__.split("\n")[0]
    )
    env = read_env()
    parser.add_argument("--host", default=env.get("BOOKING_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env.get("BOOKING_PORT", "8000")))
    parser.add_argument("--no-reverb", action="store_true", help="do not start reverbpy")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(
            serve(load_config(env), host=args.host, port=args.port, with_reverb=not args.no_reverb)
        )
    return 130


if __name__ == "__main__":
    raise SystemExit(main())
