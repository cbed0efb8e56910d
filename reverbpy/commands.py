"""Companion commands: ``trigger``, ``channels``, ``check-config`` and ``reload``.

They read the same configuration as ``serve`` (flags, environment, ``.env``, apps file), so
on the server's own machine they need no arguments beyond what they act on. HTTP API calls
are signed like the Pusher SDKs sign them (``protocol.auth``).

Exit codes (all commands):

- 0: done;
- 1: the server could not be reached, answered with an error, or the process to signal
  does not exist;
- 2: bad usage or configuration (the message names the setting).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp

from reverbpy.config import AppConfig, ConfigError, Secret, ServerConfig
from reverbpy.metrics import adapter_name
from reverbpy.protocol.auth import body_md5, sign_request
from reverbpy.proxies import parse_networks
from reverbpy.tls import scheme, server_context

OK, FAILED, USAGE = 0, 1, 2


def _err(message: str) -> None:
    print(f"reverbpy: {message}", file=sys.stderr)


def pick_app(config: ServerConfig, app_id: str | None) -> AppConfig:
    if config.generated_app:
        raise ConfigError("no app configured (set REVERB_APP_ID/KEY/SECRET or --config)")
    if app_id is not None:
        for app in config.apps:
            if app.id == app_id:
                return app
        raise ConfigError(f"--app-id: no app {app_id!r} in the configuration")
    if len(config.apps) > 1:
        raise ConfigError("--app-id is required when several apps are configured")
    return config.apps[0]


def base_url(config: ServerConfig, url: str | None) -> str:
    """Where the server's HTTP API is: ``--url``, else the configured host, port and path."""
    if url:
        return url.rstrip("/")
    host = config.host
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"{scheme(config)}://{host}:{config.port}{config.path}"


def signed_url(
    base: str, app: AppConfig, method: str, path: str, query: dict[str, str], body: bytes
) -> str:
    params = dict(query)
    params.update(auth_key=app.key, auth_timestamp=str(int(time.time())), auth_version="1.0")
    if body:
        params["body_md5"] = body_md5(body)
    # The server accepts the path signed with or without its prefix; sign exactly what we send.
    full_path = urlsplit(base + path).path
    params["auth_signature"] = sign_request(method, full_path, params, app.secret.reveal())
    return f"{base}{path}?{urlencode(params)}"


async def _request(
    method: str, url: str, body: bytes, *, insecure: bool, seconds: float
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as session,
        session.request(
            method,
            url,
            data=body or None,
            headers={"Content-Type": "application/json"} if body else None,
            ssl=not insecure,
        ) as resp,
    ):
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


def _call(
    config: ServerConfig, args: Any, method: str, path_tail: str, query: dict[str, str], body: bytes
) -> tuple[int, Any] | int:
    try:
        app = pick_app(config, args.app_id)
    except ConfigError as exc:
        _err(str(exc))
        return USAGE
    base = base_url(config, args.url)
    url = signed_url(base, app, method, f"/apps/{app.id}{path_tail}", query, body)
    try:
        return asyncio.run(
            _request(method, url, body, insecure=args.insecure, seconds=args.timeout)
        )
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        _err(f"cannot reach {base}: {exc or type(exc).__name__}")
        return FAILED


def _failed(status: int, answer: Any) -> int:
    message = answer.get("error", answer) if isinstance(answer, dict) else answer
    _err(f"server answered {status}: {message}")
    return FAILED


def trigger(config: ServerConfig, args: Any) -> int:
    event: dict[str, Any] = {"name": args.event, "channels": args.channels, "data": args.data}
    if args.socket_id:
        event["socket_id"] = args.socket_id
    body = json.dumps(event, separators=(",", ":")).encode()
    result = _call(config, args, "POST", "/events", {}, body)
    if isinstance(result, int):
        return result
    status, answer = result
    if status != 200:
        return _failed(status, answer)
    print(f"sent {args.event} to {', '.join(args.channels)}")
    return OK


def channels(config: ServerConfig, args: Any) -> int:
    query = {"info": "subscription_count"}
    if args.prefix:
        query["filter_by_prefix"] = args.prefix
        if args.prefix.startswith("presence-"):
            query["info"] = "subscription_count,user_count"
    result = _call(config, args, "GET", "/channels", query, b"")
    if isinstance(result, int):
        return result
    status, answer = result
    if status != 200 or not isinstance(answer, dict):
        return _failed(status, answer)
    found: dict[str, dict[str, int]] = answer.get("channels", {})
    if args.json:
        print(json.dumps(found, indent=2, sort_keys=True))
        return OK
    width = max((len(n) for n in found), default=7)
    print(f"{'CHANNEL':<{width}}  SUBSCRIPTIONS  USERS")
    for name in sorted(found):
        info = found[name]
        users = info.get("user_count", "")
        print(f"{name:<{width}}  {info.get('subscription_count', 0):>13}  {users}")
    return OK


def _masked(value: Any) -> Any:
    if isinstance(value, Secret):
        return "**********"
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple | frozenset | set):
        items = [_masked(v) for v in value]
        return sorted(items) if isinstance(value, frozenset | set) else items
    return value


def effective_settings(config: ServerConfig) -> dict[str, Any]:
    """Every setting as JSON-able data, secrets replaced by asterisks."""
    doc: dict[str, Any] = {}
    for f in fields(config):
        value = getattr(config, f.name)
        if f.name == "apps":
            doc["apps"] = [{g.name: _masked(getattr(a, g.name)) for g in fields(a)} for a in value]
        elif hasattr(value, "__dataclass_fields__"):
            doc[f.name] = {g.name: _masked(getattr(value, g.name)) for g in fields(value)}
        else:
            doc[f.name] = _masked(value)
    doc["adapter"] = adapter_name(config)
    return doc


def check_config(config: ServerConfig, args: Any) -> int:
    try:
        server_context(config)
        parse_networks(config.trusted_proxies)
    except ConfigError as exc:
        _err(f"configuration error: {exc}")
        return USAGE
    doc = effective_settings(config)
    text = json.dumps(doc, indent=2, default=str)
    # Belt and braces: the masking above must have caught every secret.
    assert not any(a.secret.reveal() in text for a in config.apps if len(a.secret.reveal()) > 3)
    print(text)
    if config.generated_app:
        _err("warning: no app configured; `serve` would generate a development app")
    return OK


def reload(args: Any) -> int:
    pid: int | None = args.pid
    if pid is None:
        if not args.pid_file:
            _err("reload needs --pid-file or --pid")
            return USAGE
        try:
            pid = int(Path(args.pid_file).read_text().strip())
        except (OSError, ValueError) as exc:
            _err(f"cannot read a pid from {args.pid_file}: {exc}")
            return FAILED
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        _err(f"no process {pid}")
        return FAILED
    except PermissionError:
        _err(f"not allowed to signal process {pid}")
        return FAILED
    print(f"sent SIGHUP to {pid}")
    return OK
