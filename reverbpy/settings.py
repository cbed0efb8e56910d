"""Settings: the environment, a ``.env`` file and an apps file, read once and validated by one
model per concern.

This is the only module that reads the environment. It accepts Laravel Reverb's own variable
names (``REVERB_APP_ID``, ``REVERB_SERVER_PORT``...), so a Laravel app's ``.env`` works as is.
Precedence: command-line flags > real environment > ``.env`` file > apps file defaults.
Every per-app option is validated by the same rules wherever it was written (``AppConfig``'s
field constraints, through pydantic): ``max_connections`` in a file means what
``REVERB_APP_MAX_CONNECTIONS`` means.

Errors are ``ConfigError`` naming the offending key; the CLI prints one line and exits 2.
"""

from __future__ import annotations

import json
import os
import secrets
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from dotenv import dotenv_values
from pydantic import Field, TypeAdapter, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from reverbpy.config import (
    WEBHOOK_EVENTS,
    AppConfig,
    ConfigError,
    LogFormat,
    ScalingConfig,
    Secret,
    ServerConfig,
    WebhookTarget,
)


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
    head_timeout: float = Field(20.0, gt=0)
    max_pending_heads: int = Field(1000, gt=0)
    apps_file: Path | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    metrics_port: int | None = Field(None, ge=1, le=65535)
    metrics_token: str | None = None
    console_token: str | None = None
    console_sample_interval: float = Field(5.0, ge=0.1, le=60)
    log_format: LogFormat = "text"
    shutdown_grace: float = Field(10.0, ge=0)
    trusted_proxies: str = ""
    scaling_enabled: bool = False
    scaling_driver: Literal["redis", "nats"] = "redis"
    scaling_channel: str = "reverb"
    scaling_prefix: str = "reverbpy"
    scaling_node_timeout: float = Field(15.0, gt=0)
    scaling_buffer_size: int = Field(100_000, ge=1)
    scaling_buffer_age: float = Field(30.0, gt=0)
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
    cluster: bool = False
    """REDIS_CLUSTER=true: the URL names one node of a Redis Cluster. Laravel's own values,
    ``redis`` and ``predis`` (its ``database.redis.options.cluster``: which client clusters,
    not whether), mean false, so a Laravel ``.env`` that carries them still starts."""

    @field_validator("cluster", mode="before")
    @classmethod
    def _laravel_cluster_option(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("redis", "predis"):
            return False
        return value

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
    if redis.cluster and ("{" in settings.scaling_prefix or "}" in settings.scaling_prefix):
        raise ConfigError(
            "REVERB_SCALING_PREFIX: no braces with REDIS_CLUSTER=true (reverbpy puts each"
            " channel's keys in one hash slot with a {...} tag of its own)"
        )
    scaling = ScalingConfig(
        adapter=settings.scaling_driver if settings.scaling_enabled else "memory",
        channel=settings.scaling_channel,
        prefix=settings.scaling_prefix,
        redis_url=Secret(redis.to_url()),
        redis_cluster=redis.cluster,
        nats_url=Secret(variables.get("NATS_URL") or "nats://127.0.0.1:4222"),
        node_timeout=settings.scaling_node_timeout,
        buffer_size=settings.scaling_buffer_size,
        buffer_age=settings.scaling_buffer_age,
    )

    config = ServerConfig(
        scaling=scaling,
        workers=settings.workers,
        host=settings.server_host,
        port=settings.server_port,
        path=settings.server_path,
        max_request_size=settings.max_request_size,
        max_write_buffer=settings.max_write_buffer,
        head_timeout=settings.head_timeout,
        max_pending_heads=settings.max_pending_heads,
        tls_cert=settings.tls_cert,
        tls_key=settings.tls_key,
        metrics_port=settings.metrics_port,
        metrics_token=Secret(settings.metrics_token) if settings.metrics_token else None,
        console_token=Secret(settings.console_token) if settings.console_token else None,
        console_sample_interval=settings.console_sample_interval,
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
