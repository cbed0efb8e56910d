"""``reverbpy serve`` and the companion commands: flags override the environment, which
overrides files. Exit codes: 0 done, 1 runtime failure (port in use, server unreachable),
2 bad usage or configuration (see ``commands``)."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

from reverbpy import __version__
from reverbpy.config import ConfigError, ServerConfig
from reverbpy.settings import load_config

log = logging.getLogger("reverbpy")


def _config_flags() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--env-file", default=".env", help="dotenv file to read (default ./.env if present)"
    )
    common.add_argument(
        "--config", dest="apps_file", help="apps file, TOML or JSON (REVERB_APPS_FILE)"
    )
    common.add_argument("--host", help="bind address (REVERB_SERVER_HOST, default 0.0.0.0)")
    common.add_argument("--port", type=int, help="bind port (REVERB_SERVER_PORT, default 8080)")
    common.add_argument("--path", help="route prefix (REVERB_SERVER_PATH, default none)")
    common.add_argument("--tls-cert", help="PEM certificate chain (REVERB_TLS_CERT)")
    common.add_argument("--tls-key", help="PEM private key (REVERB_TLS_KEY)")
    return common


def _client_flags() -> argparse.ArgumentParser:
    client = argparse.ArgumentParser(add_help=False)
    client.add_argument("--app-id", help="which app (needed when several are configured)")
    client.add_argument("--url", help="server base URL (default: from the configuration)")
    client.add_argument(
        "--insecure", action="store_true", help="do not verify the server's TLS certificate"
    )
    client.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    return client


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reverbpy",
        description="Pusher protocol 7 WebSocket server",
        epilog="exit codes: 0 done, 1 runtime failure, 2 bad usage or configuration",
    )
    parser.add_argument("--version", action="version", version=f"reverbpy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    common, client = _config_flags(), _client_flags()
    serve = sub.add_parser("serve", parents=[common], help="run the WebSocket server and HTTP API")
    serve.add_argument("--debug", action="store_true", default=None, help="log every frame")
    serve.add_argument(
        "--log-format", choices=("text", "json"), help="log format (REVERB_LOG_FORMAT, text)"
    )
    serve.add_argument(
        "--metrics-port", type=int, help="serve /metrics on this port (REVERB_METRICS_PORT)"
    )
    serve.add_argument("--pid-file", help="write the process id here (for `reverbpy reload`)")
    serve.add_argument(
        "--workers",
        type=int,
        help="processes on this port, coordinated through Redis (REVERB_WORKERS, 1)",
    )

    trigger = sub.add_parser(
        "trigger", parents=[common, client], help="publish an event through the HTTP API"
    )
    trigger.add_argument("channel", help="channel name; repeat with --channel for more")
    trigger.add_argument("event", help="event name")
    trigger.add_argument("data", help="event data (a string, usually JSON)")
    trigger.add_argument("--channel", dest="more_channels", action="append", default=[])
    trigger.add_argument("--socket-id", help="exclude this socket from the recipients")

    channels = sub.add_parser(
        "channels", parents=[common, client], help="list occupied channels with counts"
    )
    channels.add_argument("--prefix", help="only channels starting with this")
    channels.add_argument("--json", action="store_true", help="print JSON")

    sub.add_parser(
        "check-config",
        parents=[common],
        help="validate the configuration and print it, secrets masked",
    )

    reload = sub.add_parser("reload", help="re-read the apps of a running server (SIGHUP)")
    target = reload.add_mutually_exclusive_group()
    target.add_argument("--pid-file", help="the file `serve --pid-file` wrote")
    target.add_argument("--pid", type=int, help="process id of the server")
    return parser


def _banner(config: ServerConfig) -> str:
    """The development hint printed when no app is configured (the secret is made up here)."""
    app = config.apps[0]
    return (
        "No app configured: generated a development app. Put these in your .env:\n"
        f"    REVERB_APP_ID={app.id}\n    REVERB_APP_KEY={app.key}\n"
        f"    REVERB_APP_SECRET={app.secret.reveal()}"
    )


def console_line(config: ServerConfig) -> str | None:
    """Where the operator console is, when it is served (``console.web.access``)."""
    from reverbpy.console.web import access
    from reverbpy.tls import scheme

    mode = access(config)
    if mode is None:
        return None
    host = "127.0.0.1" if config.host in ("0.0.0.0", "::", "") else config.host
    host = f"[{host}]" if ":" in host else host
    url = f"{scheme(config)}://{host}:{config.port}{config.path}/console"
    if mode == "open":
        return f"Console (loopback, development app, no sign-in): {url}"
    return f"Console: {url} (sign in with REVERB_CONSOLE_TOKEN)"


def startup_line(config: ServerConfig, loop_name: str) -> tuple[str, dict[str, Any]]:
    """The one start-up log line: where, which apps (ids and keys only), adapter, limits."""
    from reverbpy.metrics import adapter_name
    from reverbpy.tls import scheme

    url = f"{scheme(config)}://{config.host}:{config.port}{config.path}"
    apps = [{"id": a.id, "key": a.key, "enabled": a.enabled} for a in config.apps]
    limits: dict[str, Any] = {
        "max_request_size": config.max_request_size,
        "max_write_buffer": config.max_write_buffer,
        "shutdown_grace": config.shutdown_grace,
        "head_timeout": config.head_timeout,
        "max_pending_heads": config.max_pending_heads,
        "apps": {
            a.id: {
                "max_connections": a.max_connections,
                "max_message_size": a.max_message_size,
                "client_event_rate": a.client_event_rate,
                "backend_event_rate": a.backend_event_rate,
                "read_request_rate": a.read_request_rate,
                "max_presence_members": a.max_presence_members,
            }
            for a in config.apps
        },
    }
    metrics = f"port {config.metrics_port}" if config.metrics_port else f"{config.path}/metrics"
    adapter = adapter_name(config)
    per_app = "; ".join(
        f"app {app_id}: " + " ".join(f"{k}={v}" for k, v in app_limits.items())
        for app_id, app_limits in limits["apps"].items()
    )
    text = (
        f"reverbpy {__version__} listening on {url} "
        f"(apps: {', '.join(f'id={a.id} key={a.key}' for a in config.apps)}; "
        f"adapter {adapter}; loop {loop_name}; metrics {metrics}; "
        f"max_request_size={config.max_request_size} "
        f"max_write_buffer={config.max_write_buffer} shutdown_grace={config.shutdown_grace} "
        f"head_timeout={config.head_timeout} max_pending_heads={config.max_pending_heads}; "
        f"{per_app})"
    )
    extra = {"listen": url, "apps": apps, "adapter": adapter, "loop": loop_name, "limits": limits}
    return text, extra


def _install_uvloop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def _bind(host: str, port: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if os.environ.get("REVERBPY_REUSEPORT") == "1":  # a worker of `serve --workers N`
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            print(f"reverbpy: port {port} on {host} is already in use", file=sys.stderr)
        else:
            print(f"reverbpy: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return None
    return sock


def serve(
    config: ServerConfig,
    *,
    loader: Callable[[], ServerConfig] | None = None,
    pid_file: str | None = None,
) -> int:
    from reverbpy import lifecycle, logs, tls
    from reverbpy.proxies import parse_networks
    from reverbpy.server import NODE, create_app

    loop_name = _install_uvloop()
    secrets = [a.secret.reveal() for a in config.apps]
    if config.metrics_token is not None:
        secrets.append(config.metrics_token.reveal())
    if config.console_token is not None:
        secrets.append(config.console_token.reveal())
    logs.setup(config.log_format, debug=config.debug, secrets=secrets)
    try:
        ssl_context = tls.server_context(config)
        parse_networks(config.trusted_proxies)
    except ConfigError as exc:
        print(f"reverbpy: configuration error: {exc}", file=sys.stderr)
        return 2
    sock = _bind(config.host, config.port)
    if sock is None:
        return 1
    metrics_sock = None
    if config.metrics_port:
        metrics_sock = _bind(config.host, config.metrics_port)
        if metrics_sock is None:
            return 1
    if config.generated_app:
        print(_banner(config), flush=True)
    console = console_line(config)
    if console:
        print(console, flush=True)

    async def main() -> int:
        app = create_app(config)
        text, extra = startup_line(config, loop_name)
        log.info(text, extra=extra)
        node = app[NODE]
        return await lifecycle.serve(
            app,
            node,
            sock,
            ssl_context=ssl_context,
            metrics_app=lifecycle.metrics_app(node) if metrics_sock else None,
            metrics_sock=metrics_sock,
            loader=loader,
        )

    with lifecycle.PidFile(pid_file):
        return asyncio.run(main())


def _load(args: argparse.Namespace) -> ServerConfig:
    overrides = {
        "host": args.host,
        "port": args.port,
        "path": args.path,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "debug": getattr(args, "debug", None),
        "log_format": getattr(args, "log_format", None),
        "metrics_port": getattr(args, "metrics_port", None),
        "workers": getattr(args, "workers", None),
    }
    return load_config(env_file=args.env_file, apps_file=args.apps_file, overrides=overrides)


def main(argv: Sequence[str] | None = None) -> int:
    from reverbpy import commands

    args = _parser().parse_args(argv)
    if args.command == "reload":
        return commands.reload(args)
    try:
        config = _load(args)
    except ConfigError as exc:
        print(f"reverbpy: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve" and config.workers > 1:
        if config.scaling.adapter != "redis":
            print(
                "reverbpy: configuration error: --workers > 1 needs Redis: "
                "set REVERB_SCALING_ENABLED=true (and REDIS_URL or REDIS_HOST/REDIS_PORT)",
                file=sys.stderr,
            )
            return 2
        from reverbpy.workers import supervise

        return supervise(config.workers, sys.argv[1:] if argv is None else argv)
    if args.command == "serve":
        return serve(config, loader=lambda: _load(args), pid_file=args.pid_file)
    if args.command == "trigger":
        args.channels = [args.channel, *args.more_channels]
        return commands.trigger(config, args)
    if args.command == "channels":
        return commands.channels(config, args)
    if args.command == "check-config":
        return commands.check_config(config, args)
    return 2
