"""The command line and configuration: Laravel's .env names, precedence, clear failures."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reverbpy import __version__
from reverbpy.config import ConfigError
from reverbpy.settings import load_config
from tests.conftest import ROOT, free_port, start_server


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("REVERB_")}
    return subprocess.run([sys.executable, "-m", "reverbpy", *args], env={**base, **(env or {})}, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def test_version() -> None:
    out = run_cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"reverbpy {__version__}"


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"REVERB_SERVER_PORT": "eighty"}, "REVERB_SERVER_PORT"),
        ({"REVERB_APP_ID": "1"}, "REVERB_APP_KEY"),
        ({"REVERB_APP_ID": "1", "REVERB_APP_KEY": "k", "REVERB_APP_SECRET": "s", "REVERB_APP_ACCEPT_CLIENT_EVENTS_FROM": "everyone"}, "REVERB_APP_ACCEPT_CLIENT_EVENTS_FROM"),
        ({"REVERB_APP_ID": "1", "REVERB_APP_KEY": "k", "REVERB_APP_SECRET": "s", "REVERB_APP_MAX_MESSAGE_SIZE": "-5"}, "REVERB_APP_MAX_MESSAGE_SIZE"),
        ({"REVERB_SCALING_BUFFER_SIZE": "0"}, "REVERB_SCALING_BUFFER_SIZE"),
        ({"REVERB_SCALING_DRIVER": "kafka"}, "REVERB_SCALING_DRIVER"),
        # A hash tag of reverbpy's own would be broken by braces in the prefix.
        ({"REVERB_SCALING_ENABLED": "true", "REDIS_CLUSTER": "true", "REVERB_SCALING_PREFIX": "a{b}"}, "REVERB_SCALING_PREFIX"),
        ({"REDIS_CLUSTER": "maybe"}, "REDIS_CLUSTER"),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(env: dict[str, str], key: str) -> None:
    out = run_cli("serve", env=env)
    assert out.returncode == 2
    assert key in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_port_in_use_says_so() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = run_cli("serve", "--host", "127.0.0.1", "--port", str(port), env={"REVERB_APP_ID": "1", "REVERB_APP_KEY": "k", "REVERB_APP_SECRET": "s"})
    assert out.returncode == 1
    assert "already in use" in out.stderr and "Traceback" not in out.stderr


def test_generated_development_app(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "reverbpy", "serve", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=tmp_path, env={k: v for k, v in os.environ.items() if not k.startswith("REVERB_")} | {"PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        # Raw reads: a buffered readline would leave lines select() cannot see in its buffer.
        fd = proc.stdout.fileno()
        text = ""
        deadline = time.monotonic() + 30
        while "REVERB_APP_SECRET=" not in text and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                text += chunk.decode()
        assert "REVERB_APP_ID=" in text and "REVERB_APP_KEY=" in text and "REVERB_APP_SECRET=" in text
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_env_file_and_real_environment_precedence(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("REVERB_APP_ID=100\nREVERB_APP_KEY=from-file\nREVERB_APP_SECRET=s\nREVERB_SERVER_PORT=9000\n")
    os.environ["REVERB_APP_KEY"] = "from-env"
    try:
        config = load_config(env_file=env_file)
    finally:
        del os.environ["REVERB_APP_KEY"]
    assert config.port == 9000
    assert config.apps[0].id == "100"
    assert config.apps[0].key == "from-env"
    assert load_config(env_file=env_file, overrides={"port": 1234}).port == 1234


def test_apps_file_toml_and_json(tmp_path: Path) -> None:
    toml = tmp_path / "apps.toml"
    toml.write_text('[[apps]]\nid = "1"\nkey = "k1"\nsecret = "s1"\nallowed_origins = ["*.example.com"]\n\n'
                    '[[apps]]\napp_id = 2\nkey = "k2"\nsecret = "s2"\nmax_connections = 5\nenabled = false\n')
    config = load_config(env_file=None, apps_file=toml, environ={})
    assert [a.id for a in config.apps] == ["1", "2"]
    assert config.apps[0].allowed_origins == ("*.example.com",)
    assert config.apps[1].max_connections == 5 and not config.apps[1].enabled
    js = tmp_path / "apps.json"
    js.write_text(json.dumps({"apps": [{"id": "1", "key": "k", "secret": "s", "bogus": 1}]}))
    with pytest.raises(ConfigError, match="bogus"):
        load_config(env_file=None, apps_file=js, environ={})
    js.write_text(json.dumps({"apps": [{"id": "1", "key": "k", "secret": "s"}, {"id": "2", "key": "k", "secret": "t"}]}))
    with pytest.raises(ConfigError, match="share the key"):
        load_config(env_file=None, apps_file=js, environ={})


def test_secrets_never_in_repr() -> None:
    config = load_config(env_file=None, environ={"REVERB_APP_ID": "1", "REVERB_APP_KEY": "k", "REVERB_APP_SECRET": "topsecret"})
    assert "topsecret" not in repr(config)
    assert "topsecret" not in str(config.apps[0].secret)
    assert config.apps[0].secret.reveal() == "topsecret"


def test_secret_never_in_server_output(tmp_path: Path) -> None:
    server = start_server(tmp_path, secret="super-secret-value", args=["--debug"])
    server.stop()
    assert "super-secret-value" not in server.log()
    assert server.key in server.log()


@pytest.mark.parametrize(
    ("value", "sharded"),
    [("true", True), ("1", True), ("false", False), ("redis", False), ("predis", False), ("", False)],
)
def test_redis_cluster_accepts_laravels_values(value: str, sharded: bool) -> None:
    """Laravel's ``REDIS_CLUSTER`` names the client that clusters (``redis``, ``predis``), not
    whether to; a Laravel ``.env`` carrying it must start, on one Redis."""
    from reverbpy.settings import load_config

    environ = {"REVERB_APP_ID": "1", "REVERB_APP_KEY": "k", "REVERB_APP_SECRET": "s", "REVERB_SCALING_ENABLED": "true", "REDIS_CLUSTER": value}
    assert load_config(env_file=None, environ=environ).scaling.redis_cluster is sharded
