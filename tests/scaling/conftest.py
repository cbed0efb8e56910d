"""A real Redis for the cluster tests: ``REDIS_URL`` when set, else our own redis-server."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.conftest import ServerProcess, free_port, start_server
from tests.soak.harness import RedisClusterServers


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


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis Cluster of 3 primaries with a replica each: ``REDIS_CLUSTER_URL`` when set (one
    node's URL), else our own, on loopback ports."""
    if os.environ.get("REDIS_CLUSTER_URL"):
        yield os.environ["REDIS_CLUSTER_URL"]
        return
    servers = RedisClusterServers(tmp_path_factory.mktemp("redis-cluster"))
    try:
        servers.start()
        yield servers.url
    finally:
        servers.stop()


@dataclass(frozen=True)
class RedisBackend:
    url: str
    sharded: bool  # a Redis Cluster: REDIS_CLUSTER=true


@pytest.fixture(params=["one-redis", "redis-cluster"])
def redis_backend(request: pytest.FixtureRequest) -> RedisBackend:
    """Every cluster test runs on one Redis and on a 3-shard Redis Cluster."""
    if request.param == "one-redis":
        return RedisBackend(request.getfixturevalue("redis_url"), sharded=False)
    return RedisBackend(request.getfixturevalue("redis_cluster_url"), sharded=True)


def scaling_env(url: str, sharded: bool = False) -> dict[str, str]:
    """Scaling on, with a prefix of its own so tests never see each other's keys."""
    env = {"REVERB_SCALING_ENABLED": "true", "REDIS_URL": url, "REVERB_SCALING_PREFIX": f"test-{secrets.token_hex(4)}"}
    if sharded:
        env["REDIS_CLUSTER"] = "true"
    return env


@pytest.fixture
def cluster_env(redis_backend: RedisBackend) -> dict[str, str]:
    return scaling_env(redis_backend.url, redis_backend.sharded)


@pytest.fixture
def one_redis_env(redis_url: str) -> dict[str, str]:
    """For the tests that bring a Redis of their own to stop, freeze or restart."""
    return scaling_env(redis_url)


@pytest.fixture
def cluster(tmp_path: Path, cluster_env: dict[str, str]) -> Iterator[list[ServerProcess]]:
    """Three nodes sharing one Redis: clients on the first two, the HTTP API on the third."""
    nodes = [start_server(tmp_path, extra_env=cluster_env) for _ in range(3)]
    yield nodes
    for node in nodes:
        node.stop()
