"""Operations against real server processes: metrics, logs, reload, companion commands."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import ROOT, ServerProcess, free_port, start_server
from tests.functional.raw import api, connect


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("REVERB_")}
    return subprocess.run(
        [sys.executable, "-m", "reverbpy", *args],
        cwd=ROOT, env=base | (env or {}), capture_output=True, text=True, timeout=timeout,
    )


def server_env(server: ServerProcess) -> dict[str, str]:
    return {k: v for k, v in server.env.items() if k.startswith("REVERB_")}


async def scrape(session: aiohttp.ClientSession, url: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.get(url, headers=headers) as r:
        return r.status, await r.text()


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series in Prometheus text, 0 when absent."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        series, _, value = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="([^"]*)"', series))
        if series.split("{")[0] == name and all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return 0.0


async def test_metrics_move_and_trigger_command_reaches_subscriber(tmp_path: Path) -> None:
    secret = "metrics-test-secret-5f2c"
    server = start_server(tmp_path, secret=secret, args=["--debug", "--log-format", "json"])
    try:
        async with aiohttp.ClientSession() as session:
            metrics_url = f"{server.http_url}/metrics"
            client = await connect(session, server)
            reply = await client.subscribe("private-ops", secret=server.secret, key=server.key)
            assert reply["event"] == "pusher_internal:subscription_succeeded"
            signature = reply and hmac.new(
                secret.encode(), f"{client.socket_id}:private-ops".encode(), hashlib.sha256
            ).hexdigest()
            await client.subscribe("news")

            out = await asyncio.to_thread(
                cli, "trigger", "--port", str(server.port), "news", "breaking", '{"n":1}', env=server_env(server)
            )
            assert out.returncode == 0, out.stderr
            event = await client.recv_event("breaking")
            assert event["channel"] == "news" and json.loads(event["data"]) == {"n": 1}

            status, text = await scrape(session, metrics_url)
            assert status == 200
            app = server.app_id
            assert sample(text, "reverbpy_connections", app=app) == 1
            assert sample(text, "reverbpy_connections_opened_total", app=app) == 1
            assert sample(text, "reverbpy_subscriptions", app=app, type="private") == 1
            assert sample(text, "reverbpy_channels", app=app, type="public") == 1
            assert sample(text, "reverbpy_messages_received_total", app=app) >= 2
            assert sample(text, "reverbpy_messages_sent_total", app=app) >= 4
            assert sample(text, "reverbpy_sent_bytes_total", app=app) > 100
            assert sample(text, "reverbpy_http_requests_total", endpoint="/apps/{app_id}/events", app=app, status="200") == 1
            assert sample(text, "reverbpy_http_request_duration_seconds_count", endpoint="/apps/{app_id}/events") == 1
            assert sample(text, "reverbpy_broadcast_fanout_count") >= 1
            assert sample(text, "reverbpy_ready") == 1

            status, _ = await api(session, server, "POST", "/events", {"name": "x", "channel": "c", "data": "1"}, secret="wrong")
            assert status == 401
            await client.ws.close()
            await asyncio.sleep(0.3)
            _, text = await scrape(session, metrics_url)
            assert sample(text, "reverbpy_connections", app=app) == 0
            assert sample(text, "reverbpy_connections_closed_total", app=app, code="1000") == 1
            assert sample(text, "reverbpy_http_requests_total", endpoint="/apps/{app_id}/events", app=app, status="401") == 1
            assert secret not in text
    finally:
        server.stop()
    log = server.log()
    assert secret not in log
    assert signature not in log
    assert f"{server.key}:**********" in log  # the auth field, masked, in the debug frame log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    start = next(line for line in lines if "listening on" in line["message"])
    assert start["apps"] == [{"id": server.app_id, "key": server.key, "enabled": True}]
    assert start["adapter"] == "memory"
    assert any(line.get("socket_id") == client.socket_id and line["message"].startswith("in ") for line in lines)


async def test_metrics_on_own_port_with_token(tmp_path: Path) -> None:
    port = free_port()
    token = "scrape-token-81f0"
    server = start_server(tmp_path, extra_env={"REVERB_METRICS_TOKEN": token}, args=["--metrics-port", str(port)])
    try:
        async with aiohttp.ClientSession() as session:
            status, _ = await scrape(session, f"{server.http_url}/metrics")
            assert status == 404
            status, _ = await scrape(session, f"http://127.0.0.1:{port}/metrics")
            assert status == 401
            status, _ = await scrape(session, f"http://127.0.0.1:{port}/metrics", token="nope")
            assert status == 401
            status, text = await scrape(session, f"http://127.0.0.1:{port}/metrics", token=token)
            assert status == 200 and "reverbpy_connections" in text and token not in text
            async with session.get(f"http://127.0.0.1:{port}/ready") as r:
                assert r.status == 200
            async with session.get(f"{server.http_url}/ready") as r:
                assert r.status == 200 and (await r.json()) == {"ready": True}
    finally:
        server.stop()
    assert token not in server.log()


def write_apps(path: Path, apps: list[dict[str, object]]) -> None:
    path.write_text(json.dumps({"apps": apps}))


async def test_sighup_adds_and_removes_apps_with_live_sockets(tmp_path: Path) -> None:
    apps_file = tmp_path / "apps.json"
    pid_file = tmp_path / "reverbpy.pid"
    a = {"id": "1", "key": "key-a", "secret": "secret-a-123", "client_event_rate": 10}
    # the REVERB_APP_* app start_server always sets is app "0"; the apps file holds 1, 2 and 3
    b = {"id": "2", "key": "key-b", "secret": "secret-b-456"}
    c = {"id": "3", "key": "key-c", "secret": "secret-c-789"}
    write_apps(apps_file, [a, b])
    server = start_server(
        tmp_path, extra_env={"REVERB_APPS_FILE": str(apps_file)}, args=["--pid-file", str(pid_file)],
        app_id="0", key="key-0", secret="secret-0-000",
    )
    try:
        async with aiohttp.ClientSession() as session:
            ca = await connect(session, server, key="key-a")
            await ca.subscribe("stays")
            cb = await connect(session, server, key="key-b")
            refused = await connect(session, server, key="key-c", established=False)
            assert (await refused.recv())["data"]["code"] == 4001

            write_apps(apps_file, [a | {"max_connections": 5}, c])
            out = await asyncio.to_thread(cli, "reload", "--pid-file", str(pid_file))
            assert out.returncode == 0, out.stderr

            err = await cb.recv_event("pusher:error")
            assert err["data"]["code"] == 4003
            msg = await cb.ws.receive(timeout=5)
            assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 4003), (msg, cb.ws.close_code)

            cc = await connect(session, server, key="key-c")
            assert cc.socket_id
            out = await asyncio.to_thread(
                cli, "trigger", "--port", str(server.port), "--app-id", "1", "stays", "still-here", "{}",
                env={"REVERB_APPS_FILE": str(apps_file)},
            )
            assert out.returncode == 0, out.stderr
            assert (await ca.recv_event("still-here"))["channel"] == "stays"
            out = await asyncio.to_thread(
                cli, "channels", "--port", str(server.port), "--app-id", "1", "--json",
                env={"REVERB_APPS_FILE": str(apps_file)},
            )
            assert out.returncode == 0 and json.loads(out.stdout) == {"stays": {"subscription_count": 1}}
    finally:
        server.stop()
    assert "added=['3'] removed=['2'] changed=['1']" in server.log()
    assert not pid_file.exists()


def test_companion_command_exit_codes(tmp_path: Path) -> None:
    env = {"REVERB_APP_ID": "9", "REVERB_APP_KEY": "k9", "REVERB_APP_SECRET": "hidden-secret-9"}
    out = cli("check-config", env=env | {"REVERB_METRICS_TOKEN": "tok-tok-tok"})
    assert out.returncode == 0
    settings = json.loads(out.stdout)
    assert settings["apps"][0]["secret"] == "**********" and settings["metrics_token"] == "**********"
    assert "hidden-secret-9" not in out.stdout + out.stderr and "tok-tok-tok" not in out.stdout
    assert cli("check-config", env=env | {"REVERB_SERVER_PORT": "nope"}).returncode == 2
    assert cli("check-config", env=env | {"REVERB_TLS_CERT": str(tmp_path / "missing.pem")}).returncode == 2
    assert cli("check-config", env=env | {"REVERB_TRUSTED_PROXIES": "not-an-ip"}).returncode == 2
    out = cli("trigger", "--port", str(free_port()), "c", "e", "d", env=env)
    assert out.returncode == 1 and "cannot reach" in out.stderr
    assert cli("trigger", "c", "e", "d").returncode == 2  # no app configured
    assert cli("reload", "--pid-file", str(tmp_path / "none.pid")).returncode == 1
    assert cli("reload").returncode == 2
    assert cli("--version").stdout.startswith("reverbpy ")


async def test_forwarded_for_only_from_trusted_proxies(tmp_path: Path) -> None:
    for trusted, expected in (("127.0.0.1", "remote=203.0.113.9"), ("10.0.0.0/8", "remote=127.0.0.1")):
        server = start_server(tmp_path, extra_env={"REVERB_TRUSTED_PROXIES": trusted}, args=["--debug"])
        try:
            async with aiohttp.ClientSession() as session:
                client = await connect(session, server, headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.9"})
                await client.ws.close()
        finally:
            server.stop()
        assert expected in server.log(), server.log()


def test_sigterm_exits_zero_and_second_signal_exits_at_once(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(10) == 0
    assert "SIGTERM: draining" in server.log()


@pytest.mark.parametrize("grace", ["0.5"])
async def test_shutdown_grace_bounds_a_stuck_stop(tmp_path: Path, grace: str) -> None:
    server = start_server(tmp_path, extra_env={"REVERB_SHUTDOWN_GRACE": grace})
    assert server.proc is not None
    async with aiohttp.ClientSession() as session:
        client = await connect(session, server)
        server.proc.send_signal(signal.SIGTERM)
        server.proc.send_signal(signal.SIGINT)  # the second signal: exit now
        assert await asyncio.to_thread(server.proc.wait, 5) == 0
        msg = await client.ws.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
