"""Shared fixtures: a real reverbpy process on a free loopback port.

Functional tests talk to the server the way users do: over TCP, with real clients.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parent.parent


# Debian's Chromium, driven by Playwright in the browser tests (booking demo, console).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.asynccontextmanager
async def launch_chromium() -> AsyncIterator[Any]:
    """Debian's Chromium under Playwright, closed on the way out (a ``playwright`` Browser)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield browser
        finally:
            await browser.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """A running `reverbpy serve` with one app; `env` holds the REVERB_* variables it got."""

    port: int
    app_id: str
    key: str
    secret: str
    path: str = ""
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.path}/app/{self.key}?protocol=7&client=js&version=8.4.0&flash=false"

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(
    tmp_path: Path,
    *,
    extra_env: dict[str, str] | None = None,
    args: list[str] | None = None,
    app_id: str = "123456",
    key: str = "reverb-key",
    secret: str = "reverb-secret",
    path: str = "",
    port: int | None = None,
    wait: bool = True,
) -> ServerProcess:
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REVERB_", "REDIS_"))}
    env.update(
        REVERB_APP_ID=app_id,
        REVERB_APP_KEY=key,
        REVERB_APP_SECRET=secret,
        PYTHONUNBUFFERED="1",
    )
    if path:
        env["REVERB_SERVER_PATH"] = path
    env.update(extra_env or {})
    log_path = tmp_path / f"reverbpy-{port}.log"
    with log_path.open("wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "reverbpy", "serve", "--host", "127.0.0.1", "--port", str(port), *(args or [])],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(port, app_id, key, secret, path, env, proc, log_path)
    if wait:
        wait_until_up(server)
    return server


def wait_until_up(server: ServerProcess, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc is not None and server.proc.poll() is not None:
            raise RuntimeError(f"reverbpy exited with {server.proc.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(f"{server.http_url}/up", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"reverbpy did not come up on {server.port}:\n{server.log()}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh server per test, so state never leaks between tests."""
    s = start_server(tmp_path)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for a module whose tests use distinct channel names."""
    s = start_server(tmp_path_factory.mktemp("srv"))
    yield s
    s.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP/WebSocket client session for raw-frame and HTTP API tests."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def js() -> AsyncIterator[Any]:
    """Real pusher-js / laravel-echo clients under Node (tests/js/client.mjs)."""
    from tests.functional.jsclient import JSClients

    async with JSClients() as clients:
        yield clients


@pytest.fixture
async def auth_endpoint(server: ServerProcess) -> AsyncIterator[Any]:
    """Echo's /broadcasting/auth, signing with the official pusher SDK."""
    from tests.functional.jsclient import AuthEndpoint

    async with AuthEndpoint(server) as endpoint:
        yield endpoint
