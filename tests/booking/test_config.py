"""The booking app reads the `.env` reverbpy reads, in reverbpy's order: the real environment,
then `./.env`, then the demo's defaults, an empty value counting as unset. Both sides of the
demo then agree on the app id, key and secret, whichever file or variable set them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from examples.booking_app.config import (
    DEV_ADMIN_EMAIL,
    DEV_APP_ID,
    DEV_APP_KEY,
    DEV_APP_SECRET,
    load_config,
    read_env,
)
from reverbpy.settings import load_config as load_reverb_config

ENV_FILE = """\
REVERB_APP_ID=111
REVERB_APP_KEY=file-key
REVERB_APP_SECRET="file secret"
REVERB_PORT=9001
BOOKING_ADMIN_EMAIL=
"""


def test_env_file_fills_in_what_the_environment_leaves_unset(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(ENV_FILE)
    config = load_config(read_env({"REVERB_APP_KEY": "env-key", "REVERB_APP_SECRET": ""}, env_file))
    assert config.app_id == "111"  # .env over the default
    assert config.app_key == "env-key"  # the environment over .env
    assert config.app_secret == "file secret"  # an empty variable is unset
    assert config.reverb_port == 9001
    assert config.admin_email == DEV_ADMIN_EMAIL  # empty in .env: the default


def test_without_env_file_the_defaults_hold(tmp_path: Path) -> None:
    config = load_config(read_env({}, tmp_path / "missing.env"))
    assert (config.app_id, config.app_key, config.app_secret) == (
        DEV_APP_ID,
        DEV_APP_KEY,
        DEV_APP_SECRET,
    )


def test_app_and_reverbpy_read_the_same_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Default arguments on both sides: `./.env` and `os.environ`."""
    for name in [n for n in os.environ if n.startswith(("REVERB_", "BOOKING_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("REVERB_APP_KEY", "env-key")
    monkeypatch.chdir(tmp_path)
    Path(".env").write_text(ENV_FILE)

    booking = load_config()
    [app] = load_reverb_config().apps
    assert (app.id, app.key, app.secret.reveal()) == (
        booking.app_id,
        booking.app_key,
        booking.app_secret,
    )
    assert (booking.app_id, booking.app_key) == ("111", "env-key")
