"""`make serve`: reverbpy alone, started exactly the way `make run` starts it.

    python -m examples.booking_app.reverb [--port PORT]

Same app id, key and secret as the booking app (the real environment, then `./.env`, then the
demo's defaults) and the same bind address, so a reverbpy stopped under a running `make run`
can be started again by hand and the dashboard reconnects to it by itself.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from .config import BookingConfig, load_config


def reverb_command(config: BookingConfig, port: int | None = None) -> list[str]:
    """One definition for `make run` and `make serve`, so the two cannot drift apart."""
    return [
        sys.executable,
        "-m",
        "reverbpy",
        "serve",
        "--host",
        config.reverb_host,
        "--port",
        str(config.reverb_port if port is None else port),
    ]


def reverb_env(config: BookingConfig) -> dict[str, str]:
    """The environment plus the credentials the app signs with: when they come from the demo's
    defaults, reverbpy would otherwise generate an app of its own. The operator console's token
    too, so that the demo's reverbpy serves its console (``/console``)."""
    env = dict(os.environ)
    env.update(
        REVERB_APP_ID=config.app_id,
        REVERB_APP_KEY=config.app_key,
        REVERB_APP_SECRET=config.app_secret,
        REVERB_CONSOLE_TOKEN=config.console_token,
        PYTHONUNBUFFERED="1",
    )
    return env


def main(argv: list[str] | None = None) -> NoReturn:
    parser = argparse.ArgumentParser(
        prog="python -m examples.booking_app.reverb", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--port", type=int, help="port to listen on (default: REVERB_PORT, 8080)")
    args = parser.parse_args(argv)
    config = load_config()
    command = reverb_command(config, args.port)
    # Replace this process: Ctrl-C, SIGTERM and the pid then belong to reverbpy itself.
    os.execve(command[0], command, reverb_env(config))


if __name__ == "__main__":
    main()
