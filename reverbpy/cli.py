"""``reverbpy serve``: flags override the environment, which overrides files."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import socket
import sys
from collections.abc import Sequence

from reverbpy import __version__
from reverbpy.config import ConfigError, ServerConfig, load_config

log = logging.getLogger("reverbpy")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reverbpy", description="Pusher protocol 7 WebSocket server"
    )
    parser.add_argument("--version", action="version", version=f"reverbpy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the WebSocket server and HTTP API")
    serve.add_argument("--host", help="bind address (REVERB_SERVER_HOST, default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="bind port (REVERB_SERVER_PORT, default 8080)")
    serve.add_argument("--path", help="route prefix (REVERB_SERVER_PATH, default none)")
    serve.add_argument(
        "--env-file", default=".env", help="dotenv file to read (default ./.env if present)"
    )
    serve.add_argument(
        "--config", dest="apps_file", help="apps file, TOML or JSON (REVERB_APPS_FILE)"
    )
    serve.add_argument("--debug", action="store_true", default=None, help="log every frame")
    return parser


def _banner(config: ServerConfig) -> str:
    lines = [f"reverbpy {__version__} listening on http://{config.host}:{config.port}{config.path}"]
    for app in config.apps:
        lines.append(f"  app id={app.id} key={app.key}")
    if config.generated_app:
        app = config.apps[0]
        lines.append(
            "  No app configured: generated a development app. Put these in your .env:\n"
            f"    REVERB_APP_ID={app.id}\n    REVERB_APP_KEY={app.key}\n    REVERB_APP_SECRET={app.secret.reveal()}"
        )
    return "\n".join(lines)


def _install_uvloop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def serve(config: ServerConfig) -> int:
    from aiohttp import web

    from reverbpy.server import create_app

    loop_name = _install_uvloop()
    logging.basicConfig(
        level=logging.DEBUG if config.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    sock = socket.socket(socket.AF_INET6 if ":" in config.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host, config.port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(
                f"reverbpy: port {config.port} on {config.host} is already in use", file=sys.stderr
            )
        else:
            print(
                f"reverbpy: cannot listen on {config.host}:{config.port}: {exc.strerror}",
                file=sys.stderr,
            )
        return 1
    print(_banner(config) + f"\n  event loop: {loop_name}", flush=True)

    async def make_app() -> web.Application:
        return create_app(config)

    web.run_app(
        make_app(), sock=sock, print=None, access_log=None, backlog=4096, handle_signals=True
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        try:
            config = load_config(
                env_file=args.env_file,
                apps_file=args.apps_file,
                overrides={
                    "host": args.host,
                    "port": args.port,
                    "path": args.path,
                    "debug": args.debug,
                },
            )
        except ConfigError as exc:
            print(f"reverbpy: configuration error: {exc}", file=sys.stderr)
            return 2
        return serve(config)
    return 2
