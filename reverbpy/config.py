"""Typed configuration, read from the environment, a ``.env`` file and an optional apps file.

This is the only module that reads the environment. It accepts Laravel Reverb's own variable
names (``REVERB_APP_ID``, ``REVERB_SERVER_PORT``...), so a Laravel app's ``.env`` works as is.
Precedence: command-line flags > real environment > ``.env`` file > apps file defaults.

Errors are ``ConfigError`` naming the offending key; the CLI prints one line and exits 2.
"""

from __future__ import annotations

import json
import os
import secrets
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar
from urllib.parse import quote

from annotated_types import Ge, Gt
from dotenv import dotenv_values
from pydantic import Field, TypeAdapter, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ClientEventsFrom = Literal["members", "all", "none"]
# Constraints as plain metadata (annotated-types): pydantic enforces them when a file or the
# environment is read, and nothing else here has to know about pydantic.
T = TypeVar("T", int, float)
Positive = Annotated[T, Gt(0)]
Limit = Annotated[int, Ge(0)] | None
"""A count per connection, app or second; None (or 0, as written in a file or variable): no limit."""
UNLIMITED_WHEN_ZERO = (
    "max_connections",
    "client_event_rate",
    "backend_event_rate",
    "read_request_rate",
)
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

    # Read by pydantic when the apps file or the environment is validated (a plain dict, so this
    # module's AppConfig does not need pydantic to exist); `Secret` is our own type.
    __pydantic_config__: ClassVar[dict[str, object]] = {
        "arbitrary_types_allowed": True,
        "extra": "forbid",
        "strict": False,
    }

    id: str
    key: str
    secret: Secret
    enabled: bool = True
    ping_interval: Positive[float] = 60.0
    """Seconds of silence after which the server pings the client (Reverb's ping_interval)."""
    activity_timeout: Positive[int] = 30
    """Seconds advertised in ``connection_established``; pusher-js pings after that long idle."""
    pong_timeout: Positive[float] = 30.0
    """Seconds to wait for any message after a server ping before closing with 4201."""
    max_connections: Limit = None
    """Sockets of this app (4004); cluster-wide with a scaling adapter."""
    max_message_size: Positive[int] = 10_000
    """Bytes per incoming WebSocket message; larger ones close the socket with 1009."""
    accept_client_events_from: ClientEventsFrom = "members"
    allowed_origins: tuple[str, ...] = ("*",)
    max_event_payload: Positive[int] = 10_240
    """Bytes of ``data`` per event (HTTP API: 413; client events: 4301)."""
    max_channels_per_event: Positive[int] = 100
    max_batch_size: Positive[int] = 10
    max_channel_name_length: Positive[int] = 200
    max_event_name_length: Positive[int] = 200
    max_presence_members: Positive[int] = 100
    max_presence_member_size: Positive[int] = 1_024
    max_user_id_length: Positive[int] = 128
    client_event_rate: Limit = 10
    """Client events per connection per second; over it the event is refused with 4301."""
    backend_event_rate: Limit = None
    """Events per second accepted by the HTTP API (``POST events``/``batch_events``); 429 over it."""
    read_request_rate: Limit = None
    """HTTP API read requests per second (``GET channels``...); 429 over it."""
    cache_ttl: Positive[float] = 1800.0
    """Seconds a cache channel keeps its last event (Pusher: up to 30 minutes)."""
    subscription_count_events: bool = False
    """Send ``pusher_internal:subscription_count`` to subscribers (Pusher's opt-in)."""
    authorized_connections_timeout: Positive[float] | None = None
    """Close sockets that neither sign in nor join a private/presence channel in this time (4009)."""
    webhooks: tuple[WebhookTarget, ...] = ()
    webhook_batch_ms: Annotated[int, Ge(0)] = 0
    """Collect webhook events for this long and send them in one request (0: one per event)."""

    def __post_init__(self) -> None:
        # 0 means unlimited for every limit, wherever it was written (README, "Apps").
        for name in UNLIMITED_WHEN_ZERO:
            if getattr(self, name) == 0:
                object.__setattr__(self, name, None)

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


_APP_FIELDS = tuple(f.name for f in fields(AppConfig))
_APP_MODEL: TypeAdapter[AppConfig] = TypeAdapter(AppConfig)
ENV_APP_PREFIX = "REVERB_APP_"
"""Every per-app option is also a variable: ``max_connections`` is ``REVERB_APP_MAX_CONNECTIONS``."""


def _app_from_mapping(raw: Mapping[str, Any], where: str, name: Callable[[str], str]) -> AppConfig:
    """Validate one app, from the apps file or the environment, by the same rules.

    ``name`` spells an option the way the user wrote it (``ping_interval`` in a file,
    ``REVERB_APP_PING_INTERVAL`` in the environment), so the one-line error points at it.
    """
    data = dict(raw)
    # Accept Reverb's `app_id` and soketi's `id` spellings.
    if "app_id" in data:
        data["id"] = data.pop("app_id")
    for key in ("id", "key", "secret"):
        if not isinstance(data.get(key), str | int) or not str(data[key]):
            raise ConfigError(f"{where}: {name(key)} is required")
    data["id"] = str(data["id"])
    data["key"] = str(data["key"])
    data["secret"] = Secret(str(data["secret"]))
    origins = data.get("allowed_origins")
    if isinstance(origins, str):
        data["allowed_origins"] = [o.strip() for o in origins.split(",") if o.strip()]
    if "webhooks" in data:
        data["webhooks"] = parse_webhooks(data["webhooks"], f"{where}: {name('webhooks')}")
    try:
        return _APP_MODEL.validate_python(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        option = str(err["loc"][0]) if err["loc"] else "?"
        if err["type"] == "unexpected_keyword_argument":
            raise ConfigError(f"{where}: unknown option {name(option)!r}") from None
        raise ConfigError(
            f"{where}: {name(option)}: {err['msg']} (got {err.get('input')!r})"
        ) from None


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
    return [
        _app_from_mapping(a, f"{path}: apps[{i}] (id {a.get('id', a.get('app_id'))!r})", str)
        for i, a in enumerate(apps)
    ]


def _env_app(environ: Mapping[str, str]) -> AppConfig | None:
    """The app that ``REVERB_APP_*`` describes (Laravel's one-app ``.env``), if any."""
    raw = {
        option: environ[ENV_APP_PREFIX + option.upper()]
        for option in _APP_FIELDS
        if environ.get(ENV_APP_PREFIX + option.upper(), "") != ""
    }
    if not raw:
        return None
    for key in ("id", "key", "secret"):
        if key not in raw:
            raise ConfigError(
                f"{ENV_APP_PREFIX}{key.upper()} is required when any of REVERB_APP_* is set"
            )
    return _app_from_mapping(raw, "environment", lambda option: ENV_APP_PREFIX + option.upper())


def generate_app() -> AppConfig:
    """A development app, as ``php artisan reverb:install`` would make one."""
    return AppConfig(
        id=str(secrets.randbelow(900_000) + 100_000),
        key=secrets.token_hex(10),
        secret=Secret(secrets.token_hex(10)),
    )


def _prefixed(variables: Mapping[str, str], prefix: str) -> dict[str, str]:
    """``REVERB_SERVER_PORT=1`` as ``{"server_port": "1"}``; names are case-insensitive."""
    n = len(prefix)
    return {
        k[n:].lower(): v for k, v in variables.items() if k.upper().startswith(prefix) and v != ""
    }


def _format_validation_error(exc: ValidationError, prefix: str) -> str:
    err = exc.errors()[0]
    key = prefix + "_".join(str(p) for p in err["loc"]).upper()
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
    # One mapping, read once: the real environment over the .env file. Every model below
    # validates from it, so a value means the same wherever it was written.
    variables = (
        {k: v for k, v in dotenv_values(env_path).items() if v is not None} if env_path else {}
    )
    variables.update(os.environ if environ is None else environ)
    try:
        settings = _Settings.model_validate(_prefixed(variables, "REVERB_"))
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, "REVERB_")) from None

    apps: list[AppConfig] = []
    file = apps_file or settings.apps_file
    if file:
        apps.extend(_load_apps_file(Path(file)))
    env_app = _env_app(variables)
    if env_app is not None:
        apps = [a for a in apps if a.id != env_app.id] + [env_app]
    _check_unique(apps)

    try:
        redis = _RedisSettings.model_validate(_prefixed(variables, "REDIS_"))
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, "REDIS_")) from None
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
