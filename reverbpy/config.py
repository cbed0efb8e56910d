"""Typed configuration, read from the environment, a ``.env`` file and an optional apps file.

This is the only module that reads the environment. It accepts Laravel Reverb's own variable
names (``REVERB_APP_ID``, ``REVERB_SERVER_PORT``...), so a Laravel app's ``.env`` works as is.
Precedence: command-line flags > real environment > ``.env`` file > apps file defaults.

Errors are ``ConfigError`` naming the offending key; the CLI prints one line and exits 2.
"""

from __future__ import annotations

import json
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ClientEventsFrom = Literal["members", "all", "none"]
LogFormat = Literal["text", "json"]


class ConfigError(Exception):
    """A configuration value is missing or wrong; the message names the key."""


class Secret:
    """A string that never shows itself in a repr, a log line or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


WEBHOOK_EVENTS = frozenset(
    {
        "channel_occupied",
        "channel_vacated",
        "member_added",
        "member_removed",
        "client_event",
        "cache_miss",
        "subscription_count",
    }
)


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """One webhook receiver; soketi's per-webhook filters."""

    url: str
    event_types: frozenset[str] = WEBHOOK_EVENTS
    channel_prefix: str | None = None
    channel_suffix: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def wants(self, event: str, channel: str | None) -> bool:
        if event not in self.event_types:
            return False
        if channel is not None:
            if self.channel_prefix and not channel.startswith(self.channel_prefix):
                return False
            if self.channel_suffix and not channel.endswith(self.channel_suffix):
                return False
        return True


def parse_webhooks(raw: object, where: str) -> tuple[WebhookTarget, ...]:
    """Accept a list of ``{url, event_types?, filter?: {channel_name_starts_with, ...}, headers?}``."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise ConfigError(f"{where}: not valid JSON: {exc}") from None
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: must be a list of webhooks")
    targets = []
    for i, item in enumerate(raw):
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("url"), str)
            or not item["url"].startswith(("http://", "https://"))
        ):
            raise ConfigError(f"{where}[{i}]: 'url' must be an http(s) URL")
        events = item.get("event_types", sorted(WEBHOOK_EVENTS))
        if not isinstance(events, list) or not set(events) <= WEBHOOK_EVENTS:
            raise ConfigError(
                f"{where}[{i}]: event_types must be a subset of {sorted(WEBHOOK_EVENTS)}"
            )
        flt = item.get("filter") or {}
        headers = item.get("headers") or {}
        if not isinstance(flt, dict) or not isinstance(headers, dict):
            raise ConfigError(f"{where}[{i}]: 'filter' and 'headers' must be objects")
        targets.append(
            WebhookTarget(
                url=item["url"],
                event_types=frozenset(events),
                channel_prefix=flt.get("channel_name_starts_with") or item.get("channel_prefix"),
                channel_suffix=flt.get("channel_name_ends_with") or item.get("channel_suffix"),
                headers=tuple((str(k), str(v)) for k, v in headers.items()),
            )
        )
    return tuple(targets)


@dataclass(frozen=True, slots=True)
class AppConfig:
    """One Pusher app. Limits follow Pusher's published ones; ``None`` means unlimited."""

    id: str
    key: str
    secret: Secret
    enabled: bool = True
    ping_interval: float = 60.0
    """Seconds of silence after which the server pings the client (Reverb's ping_interval)."""
    activity_timeout: int = 30
    """Seconds advertised in ``connection_established``; pusher-js pings after that long idle."""
    pong_timeout: float = 30.0
    """Seconds to wait for any message after a server ping before closing with 4201."""
    max_connections: int | None = None
    max_message_size: int = 10_000
    """Bytes per incoming WebSocket message; larger ones close the socket with 1009."""
    accept_client_events_from: ClientEventsFrom = "members"
    allowed_origins: tuple[str, ...] = ("*",)
    max_event_payload: int = 10_240
    """Bytes of ``data`` per event (HTTP API: 413; client events: 4301)."""
    max_channels_per_event: int = 100
    max_batch_size: int = 10
    max_channel_name_length: int = 200
    max_event_name_length: int = 200
    max_presence_members: int = 100
    max_presence_member_size: int = 1_024
    max_user_id_length: int = 128
    client_event_rate: int | None = 10
    """Client events per connection per second; over it the event is refused with 4301."""
    backend_event_rate: int | None = None
    """Events per second accepted by the HTTP API (``POST events``/``batch_events``); 429 over it."""
    read_request_rate: int | None = None
    """HTTP API read requests per second (``GET channels``...); 429 over it."""
    cache_ttl: float = 1800.0
    """Seconds a cache channel keeps its last event (Pusher: up to 30 minutes)."""
    subscription_count_events: bool = False
    """Send ``pusher_internal:subscription_count`` to subscribers (Pusher's opt-in)."""
    authorized_connections_timeout: float | None = None
    """Close sockets that neither sign in nor join a private/presence channel in this time (4009)."""
    webhooks: tuple[WebhookTarget, ...] = ()
    webhook_batch_ms: int = 0
    """Collect webhook events for this long and send them in one request (0: one per event)."""

    def __repr__(self) -> str:
        return f"AppConfig(id={self.id!r}, key={self.key!r}, secret=Secret('**********'))"


@dataclass(frozen=True, slots=True)
class ScalingConfig:
    """How nodes share traffic (Reverb's ``scaling`` block, on Laravel's variable names)."""

    adapter: Literal["memory", "redis"] = "memory"
    channel: str = "reverb"
    """Pub/sub channel name (REVERB_SCALING_CHANNEL), under ``prefix``."""
    prefix: str = "reverbpy"
    """Every Redis key and channel starts with this, so deployments can share a Redis."""
    redis_url: Secret = field(default_factory=lambda: Secret("redis://127.0.0.1:6379/0"))
    """May carry a password, hence a Secret."""
    node_timeout: float = 15.0
    """Seconds without a heartbeat after which a node's members and counts are removed."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 8080
    path: str = ""
    """Prefix for every route (``/ws/app/{key}``...), Reverb's REVERB_SERVER_PATH."""
    max_request_size: int = 262_144
    """Bytes of HTTP API request body; larger ones get 413."""
    max_write_buffer: int = 1_048_576
    """Unsent bytes a socket may hold before it is dropped as a slow consumer (4100)."""
    tls_cert: str | None = None
    """PEM certificate chain; with ``tls_key`` the server speaks https/wss (REVERB_TLS_CERT)."""
    tls_key: str | None = None
    """PEM private key for ``tls_cert`` (REVERB_TLS_KEY)."""
    metrics_port: int | None = None
    """Serve ``/metrics`` on this port instead of the main one (REVERB_METRICS_PORT)."""
    metrics_token: Secret | None = None
    """Bearer token that ``/metrics`` requires (REVERB_METRICS_TOKEN); None: no token."""
    log_format: LogFormat = "text"
    shutdown_grace: float = 10.0
    """Seconds SIGTERM waits for closing handshakes and queued webhooks (REVERB_SHUTDOWN_GRACE)."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses or networks whose ``X-Forwarded-For`` is believed (REVERB_TRUSTED_PROXIES)."""
    debug: bool = False
    apps: tuple[AppConfig, ...] = field(default_factory=tuple)
    generated_app: bool = False
    """True when no app was configured and a development app was made up."""
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    workers: int = 1


class _Settings(BaseSettings):
    """Environment variables, named as Laravel Reverb names them."""

    model_config = SettingsConfigDict(
        env_prefix="REVERB_", extra="ignore", env_ignore_empty=True, case_sensitive=False
    )

    server_host: str = "0.0.0.0"
    server_port: int = Field(8080, ge=0, le=65535)
    server_path: str = ""
    max_request_size: int = Field(262_144, gt=0)
    max_write_buffer: int = Field(1_048_576, gt=0)
    apps_file: Path | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    metrics_port: int | None = Field(None, ge=1, le=65535)
    metrics_token: str | None = None
    log_format: LogFormat = "text"
    shutdown_grace: float = Field(10.0, ge=0)
    trusted_proxies: str = ""
    scaling_enabled: bool = False
    scaling_channel: str = "reverb"
    scaling_prefix: str = "reverbpy"
    scaling_node_timeout: float = Field(15.0, gt=0)
    workers: int = Field(1, ge=1, le=256)

    app_id: str | None = None
    app_key: str | None = None
    app_secret: str | None = None
    app_enabled: bool | None = None
    app_ping_interval: float | None = Field(None, gt=0)
    app_activity_timeout: int | None = Field(None, gt=0)
    app_pong_timeout: float | None = Field(None, gt=0)
    app_max_connections: int | None = Field(None, ge=0)
    app_max_message_size: int | None = Field(None, gt=0)
    app_accept_client_events_from: ClientEventsFrom | None = None
    app_allowed_origins: str | None = None
    app_max_event_payload: int | None = Field(None, gt=0)
    app_client_event_rate: int | None = Field(None, ge=0)
    app_max_presence_members: int | None = Field(None, gt=0)
    app_backend_event_rate: int | None = Field(None, ge=0)
    app_read_request_rate: int | None = Field(None, ge=0)
    app_cache_ttl: float | None = Field(None, gt=0)
    app_subscription_count_events: bool | None = None
    app_authorized_connections_timeout: float | None = Field(None, gt=0)
    app_webhooks: str | None = None
    app_webhook_batch_ms: int | None = Field(None, ge=0)

    @field_validator("server_path")
    @classmethod
    def _normalise_path(cls, value: str) -> str:
        value = value.strip().strip("/")
        return f"/{value}" if value else ""


class _RedisSettings(BaseSettings):
    """Laravel's own Redis variables (no REVERB_ prefix)."""

    model_config = SettingsConfigDict(
        env_prefix="REDIS_", extra="ignore", env_ignore_empty=True, case_sensitive=False
    )

    url: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(6379, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    db: int = Field(0, ge=0)

    def to_url(self) -> str:
        if self.url:
            return self.url
        auth = ""
        if self.password:
            auth = f"{quote(self.username or '', safe='')}:{quote(self.password, safe='')}@"
        return f"redis://{auth}{self.host}:{self.port}/{self.db}"


_APP_FIELDS = {f.name for f in fields(AppConfig)}


def _app_from_mapping(raw: Mapping[str, Any], where: str) -> AppConfig:
    data = dict(raw)
    # Accept Reverb's `app_id` and soketi's `id` spellings.
    if "app_id" in data:
        data["id"] = data.pop("app_id")
    unknown = set(data) - _APP_FIELDS
    if unknown:
        raise ConfigError(f"{where}: unknown option {sorted(unknown)[0]!r}")
    for key in ("id", "key", "secret"):
        if not isinstance(data.get(key), str | int) or not str(data[key]):
            raise ConfigError(f"{where}: {key!r} is required")
    data["id"] = str(data["id"])
    data["key"] = str(data["key"])
    data["secret"] = Secret(str(data["secret"]))
    if "allowed_origins" in data:
        origins = data["allowed_origins"]
        if isinstance(origins, str):
            origins = [o.strip() for o in origins.split(",") if o.strip()]
        data["allowed_origins"] = tuple(origins)
    if "webhooks" in data:
        data["webhooks"] = parse_webhooks(data["webhooks"], f"{where}: webhooks")
    if data.get("accept_client_events_from", "members") not in ("members", "all", "none"):
        raise ConfigError(f"{where}: accept_client_events_from must be members, all or none")
    try:
        return AppConfig(**data)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _load_apps_file(path: Path) -> list[AppConfig]:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"REVERB_APPS_FILE: cannot read {path}: {exc.strerror}") from None
    try:
        doc = tomllib.loads(text.decode()) if path.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"REVERB_APPS_FILE: {path} is not valid: {exc}") from None
    apps = doc.get("apps") if isinstance(doc, dict) else doc
    if not isinstance(apps, list) or not all(isinstance(a, dict) for a in apps):
        raise ConfigError(f"REVERB_APPS_FILE: {path} must hold a list of apps under 'apps'")
    return [_app_from_mapping(a, f"{path}: apps[{i}]") for i, a in enumerate(apps)]


def _env_app(s: _Settings) -> AppConfig | None:
    given = {
        "REVERB_APP_ID": s.app_id,
        "REVERB_APP_KEY": s.app_key,
        "REVERB_APP_SECRET": s.app_secret,
    }
    if not any(given.values()):
        return None
    for name, value in given.items():
        if not value:
            raise ConfigError(f"{name} is required when any of REVERB_APP_ID/KEY/SECRET is set")
    overrides: dict[str, Any] = {
        "enabled": s.app_enabled,
        "ping_interval": s.app_ping_interval,
        "activity_timeout": s.app_activity_timeout,
        "pong_timeout": s.app_pong_timeout,
        "max_connections": s.app_max_connections or None,
        "max_message_size": s.app_max_message_size,
        "accept_client_events_from": s.app_accept_client_events_from,
        "allowed_origins": s.app_allowed_origins,
        "max_event_payload": s.app_max_event_payload,
        "client_event_rate": s.app_client_event_rate,
        "max_presence_members": s.app_max_presence_members,
        "backend_event_rate": s.app_backend_event_rate or None,
        "read_request_rate": s.app_read_request_rate or None,
        "cache_ttl": s.app_cache_ttl,
        "subscription_count_events": s.app_subscription_count_events,
        "authorized_connections_timeout": s.app_authorized_connections_timeout,
        "webhooks": s.app_webhooks,
        "webhook_batch_ms": s.app_webhook_batch_ms,
    }
    raw = {"id": s.app_id, "key": s.app_key, "secret": s.app_secret}
    raw.update({k: v for k, v in overrides.items() if v is not None})
    if s.app_client_event_rate == 0:
        raw["client_event_rate"] = None
    return _app_from_mapping(raw, "REVERB_APP_*")


def generate_app() -> AppConfig:
    """A development app, as ``php artisan reverb:install`` would make one."""
    return AppConfig(
        id=str(secrets.randbelow(900_000) + 100_000),
        key=secrets.token_hex(10),
        secret=Secret(secrets.token_hex(10)),
    )


def _format_validation_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    key = "REVERB_" + "_".join(str(p) for p in err["loc"]).upper()
    return f"{key}: {err['msg']} (got {err.get('input')!r})"


def load_config(
    *,
    env_file: str | Path | None = ".env",
    apps_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServerConfig:
    """Build the server configuration.

    ``overrides`` holds command-line flags (``host``, ``port``, ``path``, ``debug``) and wins
    over everything. ``environ`` replaces ``os.environ`` (tests).
    """
    env_path = Path(env_file) if env_file else None
    if env_path is not None and not env_path.exists():
        if env_file != ".env":
            raise ConfigError(f"--env-file: {env_path} does not exist")
        env_path = None
    try:
        if environ is None:
            settings = _Settings(_env_file=env_path)  # type: ignore[call-arg]
        else:
            settings = _Settings.model_validate(
                {
                    k[len("REVERB_") :].lower(): v
                    for k, v in environ.items()
                    if k.startswith("REVERB_") and v != ""
                }
            )
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None

    apps: list[AppConfig] = []
    file = apps_file or settings.apps_file
    if file:
        apps.extend(_load_apps_file(Path(file)))
    env_app = _env_app(settings)
    if env_app is not None:
        apps = [a for a in apps if a.id != env_app.id] + [env_app]
    _check_unique(apps)

    try:
        if environ is None:
            redis = _RedisSettings(_env_file=env_path)  # type: ignore[call-arg]
        else:
            redis = _RedisSettings.model_validate(
                {
                    k[len("REDIS_") :].lower(): v
                    for k, v in environ.items()
                    if k.startswith("REDIS_") and v != ""
                }
            )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(
            f"REDIS_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
        ) from None
    scaling = ScalingConfig(
        adapter="redis" if settings.scaling_enabled else "memory",
        channel=settings.scaling_channel,
        prefix=settings.scaling_prefix,
        redis_url=Secret(redis.to_url()),
        node_timeout=settings.scaling_node_timeout,
    )

    config = ServerConfig(
        scaling=scaling,
        workers=settings.workers,
        host=settings.server_host,
        port=settings.server_port,
        path=settings.server_path,
        max_request_size=settings.max_request_size,
        max_write_buffer=settings.max_write_buffer,
        tls_cert=settings.tls_cert,
        tls_key=settings.tls_key,
        metrics_port=settings.metrics_port,
        metrics_token=Secret(settings.metrics_token) if settings.metrics_token else None,
        log_format=settings.log_format,
        shutdown_grace=settings.shutdown_grace,
        trusted_proxies=tuple(p.strip() for p in settings.trusted_proxies.split(",") if p.strip()),
        apps=tuple(apps),
    )
    if overrides:
        given = {k: v for k, v in overrides.items() if v is not None}
        if "path" in given:
            given["path"] = _Settings._normalise_path(given["path"])
        config = replace(config, **given)
    if not config.apps:
        config = replace(config, apps=(generate_app(),), generated_app=True)
    return config


def _check_unique(apps: list[AppConfig]) -> None:
    for attr in ("id", "key"):
        seen: set[str] = set()
        for app in apps:
            value = getattr(app, attr)
            if value in seen:
                raise ConfigError(f"apps: two apps share the {attr} {value!r}")
            seen.add(value)
