"""A real Redis for the cluster tests: ``REDIS_URL`` when set, else our own redis-server."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import ServerProcess, free_port, start_server


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server) and REDIS_URL is not set")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    client.close()
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def cluster_env(redis_url: str) -> dict[str, str]:
    """Scaling on, with a prefix of its own so tests never see each other's keys."""
    return {"REVERB_SCALING_ENABLED": "true", "REDIS_URL": redis_url, "REVERB_SCALING_PREFIX": f"test-{secrets.token_hex(4)}"}


@pytest.fixture
def cluster(tmp_path: Path, cluster_env: dict[str, str]) -> Iterator[list[ServerProcess]]:
    """Three nodes sharing one Redis: clients on the first two, the HTTP API on the third."""
    nodes = [start_server(tmp_path, extra_env=cluster_env) for _ in range(3)]
    yield nodes
    for node in nodes:
        node.stop()
