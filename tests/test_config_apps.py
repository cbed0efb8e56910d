"""Every per-app option means the same from the apps file and from `REVERB_APP_*`.

Both paths go through one validation (`reverbpy.settings._app_from_mapping`); these tests hold
that promise option by option, so an option added to `AppConfig` without a line here fails
`test_every_option_is_covered`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from reverbpy.config import AppConfig, ConfigError, ServerConfig, WebhookTarget
from reverbpy.settings import load_config

BASE = {"id": "7", "key": "app-key", "secret": "app-secret"}
HOOK = {"url": "https://example.com/hook", "event_types": ["channel_occupied"]}

# option: (value as written in a TOML/JSON file, the same as an environment variable, expected).
OPTIONS: dict[str, tuple[Any, str, Any]] = {
    "enabled": (False, "false", False),
    "ping_interval": (12.5, "12.5", 12.5),
    "activity_timeout": (45, "45", 45),
    "pong_timeout": (7, "7", 7.0),
    "max_connections": (250, "250", 250),
    "max_message_size": (20_000, "20000", 20_000),
    "accept_client_events_from": ("all", "all", "all"),
    "allowed_origins": (["a.example.com", "*.b.example.com"], "a.example.com, *.b.example.com",
                        ("a.example.com", "*.b.example.com")),
    "max_event_payload": (4_096, "4096", 4_096),
    "max_channels_per_event": (5, "5", 5),
    "max_channels_per_connection": (500, "500", 500),
    "max_batch_size": (3, "3", 3),
    "max_channel_name_length": (64, "64", 64),
    "max_event_name_length": (32, "32", 32),
    "max_presence_members": (50, "50", 50),
    "max_presence_member_size": (512, "512", 512),
    "max_user_id_length": (16, "16", 16),
    "client_event_rate": (20, "20", 20),
    "backend_event_rate": (100, "100", 100),
    "read_request_rate": (30, "30", 30),
    "cache_ttl": (60, "60", 60.0),
    "subscription_count_events": (True, "true", True),
    "authorized_connections_timeout": (2.5, "2.5", 2.5),
    "webhooks": ([HOOK], json.dumps([HOOK]),
                 (WebhookTarget(url=HOOK["url"], event_types=frozenset(HOOK["event_types"])),)),
    "webhook_batch_ms": (250, "250", 250),
}

# option: bad values, as a file would hold them (the environment gets their str()).
BAD: dict[str, list[Any]] = {
    "ping_interval": [-1, 0, "soon"],
    "activity_timeout": [0, -30, "x"],
    "pong_timeout": [0, -1],
    "max_connections": [-1, "many"],
    "max_message_size": ["big", 0, -5],
    "accept_client_events_from": ["everyone"],
    "max_event_payload": [0, "1kb"],
    "max_channels_per_event": [0],
    "max_channels_per_connection": [-1, "lots"],
    "max_batch_size": [0],
    "max_channel_name_length": [-1],
    "max_event_name_length": [0],
    "max_presence_members": [0],
    "max_presence_member_size": [0],
    "max_user_id_length": [0],
    "client_event_rate": [-1, "fast"],
    "backend_event_rate": [-10],
    "read_request_rate": [-1],
    "cache_ttl": [0, -60],
    "authorized_connections_timeout": [0, -1],
    "webhook_batch_ms": [-1],
    "enabled": ["perhaps"],
    "webhooks": [[{"url": "ftp://x"}]],
}

ZERO_MEANS_UNLIMITED = ("max_connections", "max_channels_per_connection", "client_event_rate", "backend_event_rate", "read_request_rate")


def env_name(option: str) -> str:
    return f"REVERB_APP_{option.upper()}"


def from_file(tmp_path: Path, options: dict[str, Any]) -> ServerConfig:
    path = tmp_path / "apps.json"
    path.write_text(json.dumps({"apps": [{**BASE, **options}]}))
    return load_config(env_file=None, apps_file=path, environ={})


def from_env(options: dict[str, str]) -> ServerConfig:
    environ = {env_name(k): v for k, v in BASE.items()}
    environ.update({env_name(k): v for k, v in options.items()})
    return load_config(env_file=None, environ=environ)


def test_every_option_is_covered() -> None:
    names = {f.name for f in fields(AppConfig)} - {"id", "key", "secret"}
    assert set(OPTIONS) == names
    assert set(BAD) <= names


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_option_means_the_same_from_file_and_environment(tmp_path: Path, option: str) -> None:
    file_value, env_value, expected = OPTIONS[option]
    app_from_file = from_file(tmp_path, {option: file_value}).apps[0]
    app_from_env = from_env({option: env_value}).apps[0]
    assert getattr(app_from_file, option) == expected
    assert getattr(app_from_env, option) == expected
    assert getattr(AppConfig(id="1", key="k", secret=BASE["secret"]), option) != expected  # type: ignore[arg-type]
    assert app_from_file == app_from_env


@pytest.mark.parametrize(("option", "bad"), [(o, v) for o, values in sorted(BAD.items()) for v in values])
def test_bad_value_is_refused_by_both_paths(tmp_path: Path, option: str, bad: Any) -> None:
    with pytest.raises(ConfigError) as in_file:
        from_file(tmp_path, {option: bad})
    assert option in str(in_file.value) and "'7'" in str(in_file.value)
    env_value = bad if isinstance(bad, str) else json.dumps(bad)
    with pytest.raises(ConfigError) as in_env:
        from_env({option: env_value})
    assert env_name(option) in str(in_env.value)


@pytest.mark.parametrize("option", ZERO_MEANS_UNLIMITED)
def test_zero_means_unlimited_in_both_paths(tmp_path: Path, option: str) -> None:
    assert getattr(from_file(tmp_path, {option: 0}).apps[0], option) is None
    assert getattr(from_env({option: "0"}).apps[0], option) is None


def test_unknown_option_in_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown option 'max_conections'"):
        from_file(tmp_path, {"max_conections": 5})


def test_env_file_app_options_are_read(tmp_path: Path) -> None:
    """`REVERB_APP_*` options in `.env` count the same as in the real environment."""
    env_file = tmp_path / ".env"
    env_file.write_text("REVERB_APP_ID=7\nREVERB_APP_KEY=k\nREVERB_APP_SECRET=s\n"
                        "REVERB_APP_CLIENT_EVENT_RATE=0\nREVERB_APP_MAX_BATCH_SIZE=4\n")
    app = load_config(env_file=env_file, environ={}).apps[0]
    assert app.client_event_rate is None and app.max_batch_size == 4


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("ping_interval = -1", ["apps[0]", "'7'", "ping_interval", "greater than 0"]),
        ('max_message_size = "big"', ["apps[0]", "'7'", "max_message_size", "integer"]),
    ],
)
def test_bad_apps_file_is_one_line_and_exit_2(tmp_path: Path, body: str, words: list[str]) -> None:
    path = tmp_path / "apps.toml"
    path.write_text(f'[[apps]]\nid = "7"\nkey = "k"\nsecret = "s"\n{body}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("REVERB_")}
    out = subprocess.run([sys.executable, "-m", "reverbpy", "check-config", "--config", str(path)],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2, out
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    for word in words:
        assert word in out.stderr
