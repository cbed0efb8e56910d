"""``reverbpy serve --workers N``: one port, N processes, one server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import ROOT, start_server
from tests.functional.raw import api, connect

pytestmark = pytest.mark.redis


def test_workers_without_redis_is_a_start_up_error() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REVERB_", "REDIS_"))}
    env.update(REVERB_APP_ID="1", REVERB_APP_KEY="k", REVERB_APP_SECRET="s")
    out = subprocess.run([sys.executable, "-m", "reverbpy", "serve", "--workers", "2"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 2
    assert "needs Redis" in out.stderr


async def test_two_workers_share_one_port(http: aiohttp.ClientSession, tmp_path: Path, cluster_env: dict[str, str]) -> None:
    pid_file = tmp_path / "reverbpy.pid"
    server = start_server(tmp_path, extra_env=cluster_env, args=["--workers", "2", "--pid-file", str(pid_file)])
    try:
        assert server.proc is not None
        assert pid_file.read_text().strip() == str(server.proc.pid)  # the supervisor: it forwards SIGHUP
        clients = [await connect(http, server) for _ in range(12)]
        for c in clients:
            await c.subscribe("fan")
        status, body = await api(http, server, "GET", "/channels/fan", params={"info": "subscription_count"})
        assert (status, body) == (200, {"occupied": True, "subscription_count": 12})
        await api(http, server, "POST", "/events", {"name": "n", "channel": "fan", "data": "all"})
        for c in clients:
            assert (await c.recv())["data"] == "all"
        assert "supervising 2 workers" in server.log()
    finally:
        server.stop()
    assert server.proc is not None and server.proc.returncode == 0


def test_worker_arguments() -> None:
    from reverbpy.workers import worker_argv

    argv = ["serve", "--port", "8080", "--workers", "2", "--pid-file", "/run/r.pid", "--workers=3", "--debug"]
    assert worker_argv(argv) == ["serve", "--port", "8080", "--debug"]
