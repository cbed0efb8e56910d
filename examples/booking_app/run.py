"""`make run`: reverbpy on 8080 and the booking app on 8000 together, stopped together on Ctrl-C.

    python -m examples.booking_app.run [--no-reverb]

Both read the same `REVERB_APP_ID`/`REVERB_APP_KEY`/`REVERB_APP_SECRET` (dev defaults if unset)
and `REVERB_HOST`/`REVERB_PORT`, the way a Laravel app and its Reverb server share one `.env`.
`--no-reverb` skips starting the server, to publish to one already running (say soketi).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from aiohttp import web

from .app import create_app, vendor_missing
from .config import BookingConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger("booking")


def reverb_env(config: BookingConfig) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        REVERB_APP_ID=config.app_id,
        REVERB_APP_KEY=config.app_key,
        REVERB_APP_SECRET=config.app_secret,
        PYTHONUNBUFFERED="1",
    )
    return env


async def start_reverb(config: BookingConfig) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "reverbpy",
        "serve",
        "--host",
        config.reverb_host,
        "--port",
        str(config.reverb_port),
        cwd=ROOT,
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
    runner = web.AppRunner(create_app(config), access_log=None)
    try:
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        print(
            "\n"
            f"  reverbpy      ws://{config.reverb_host}:{config.reverb_port}/app/{config.app_key}"
            f"{'' if reverb else '  (not started here: --no-reverb)'}\n"
            f"  booking app   http://{host}:{port}/\n"
            f"  dashboard     http://{host}:{port}/admin/reservations/realtime\n"
            f"  admin login   {config.admin_email} / {config.admin_password}\n"
            "\n  Press Ctrl-C to stop both.\n",
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        waiters: set[asyncio.Task[Any]] = {asyncio.create_task(stop.wait())}
        if reverb is not None:
            waiters.add(asyncio.create_task(reverb.wait()))
        _done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if reverb is not None and reverb.returncode is not None and not stop.is_set():
            print(f"reverbpy exited with code {reverb.returncode}; stopping.", file=sys.stderr)
            return 1
        return 0
    finally:
        print("Stopping…", flush=True)
        await runner.cleanup()
        if reverb is not None:
            await stop_process(reverb)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.booking_app.run", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default=os.environ.get("BOOKING_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("BOOKING_PORT", "8000")))
    parser.add_argument("--no-reverb", action="store_true", help="do not start reverbpy")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(
            serve(load_config(), host=args.host, port=args.port, with_reverb=not args.no_reverb)
        )
    return 130


if __name__ == "__main__":
    raise SystemExit(main())
