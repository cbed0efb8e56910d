"""Configuration of the booking app, read from the environment and `./.env` in one place.

The `REVERB_*` names are the ones a Laravel app's `.env` uses, so one set of variables configures
both the server and the app that publishes to it. `BOOKING_*` names are this example's own.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values

DEV_APP_ID = "123456"
DEV_APP_KEY = "reverb-key"
DEV_APP_SECRET = "reverb-secret"
DEV_ADMIN_EMAIL = "admin@example.com"
DEV_ADMIN_PASSWORD = "password"
DEV_CONSOLE_TOKEN = "demo-console"
"""The demo reverbpy's operator console token (``REVERB_CONSOLE_TOKEN`` overrides it)."""


@dataclass(frozen=True, kw_only=True)
class BookingConfig:
    """Everything the app needs; defaults suit a local `make run`.

    `reverb_host`/`reverb_port`/`reverb_scheme` are where both the pusher SDK (server side) and
    the browser reach reverbpy, exactly like Laravel's `REVERB_HOST`/`REVERB_PORT`/`REVERB_SCHEME`.
    """

    app_id: str = DEV_APP_ID
    app_key: str = DEV_APP_KEY
    app_secret: str = field(default=DEV_APP_SECRET, repr=False)
    reverb_host: str = "127.0.0.1"
    reverb_port: int = 8080
    reverb_scheme: str = "http"
    db_path: Path = Path("booking.sqlite3")
    admin_email: str = DEV_ADMIN_EMAIL
    admin_password: str = field(default=DEV_ADMIN_PASSWORD, repr=False)
    console_token: str = field(default=DEV_CONSOLE_TOKEN, repr=False)
    """What `make run` hands its reverbpy as REVERB_CONSOLE_TOKEN (the console at /console)."""
    # A random key per process is fine for a demo: restarting the app only logs admins out.
    secret_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    seed_demo_bookings: bool = True
    publish_timeout: float = 3.0

    @property
    def reverb_tls(self) -> bool:
        return self.reverb_scheme == "https"


def read_env(
    environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env"
) -> dict[str, str]:
    """`environ` (default `os.environ`) over `env_file`, if that file exists.

    reverbpy's own order (real environment, then `.env`, an empty value counting as unset), so a
    shared `.env` gives the app and the server the same credentials. python-dotenv is the parser
    reverbpy's pydantic-settings uses, so both read the file alike.
    """
    from_file = dotenv_values(env_file) if env_file and Path(env_file).is_file() else {}
    real = os.environ if environ is None else environ
    return {k: v for k, v in from_file.items() if v} | {k: v for k, v in real.items() if v}


def load_config(environ: Mapping[str, str] | None = None) -> BookingConfig:
    """Build the config from `environ` (default: `read_env()`); unset names keep dev defaults."""
    env = read_env() if environ is None else environ
    secret_key = env.get("BOOKING_SECRET_KEY")
    return BookingConfig(
        app_id=env.get("REVERB_APP_ID", DEV_APP_ID),
        app_key=env.get("REVERB_APP_KEY", DEV_APP_KEY),
        app_secret=env.get("REVERB_APP_SECRET", DEV_APP_SECRET),
        reverb_host=env.get("REVERB_HOST", "127.0.0.1"),
        reverb_port=_int(env, "REVERB_PORT", 8080),
        reverb_scheme=env.get("REVERB_SCHEME", "http"),
        db_path=Path(env.get("BOOKING_DB", "booking.sqlite3")),
        admin_email=env.get("BOOKING_ADMIN_EMAIL", DEV_ADMIN_EMAIL),
        admin_password=env.get("BOOKING_ADMIN_PASSWORD", DEV_ADMIN_PASSWORD),
        console_token=env.get("REVERB_CONSOLE_TOKEN", DEV_CONSOLE_TOKEN),
        secret_key=secret_key.encode() if secret_key else secrets.token_bytes(32),
    )


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
