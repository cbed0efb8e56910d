"""Fixtures for the booking example: an app per test with its own SQLite file and clock.

`recorder` swaps the pusher SDK's HTTP backend for one that records each request the SDK builds,
so functional tests see exactly what would reach reverbpy's HTTP API without a server.
`start_launcher` runs `make run`'s entry point for real, for the tests that stop reverbpy under it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

import pusher  # type: ignore[import-untyped]
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from examples.booking_app.app import create_app
from examples.booking_app.config import BookingConfig
from tests.conftest import ROOT, free_port

TODAY = date(2030, 1, 10)
APP_ID, APP_KEY, APP_SECRET = "123456", "reverb-key", "reverb-secret"
ADMIN_EMAIL, ADMIN_PASSWORD = "admin@example.com", "password"

ClientFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@dataclass
class Published:
    channels: list[str]
    name: str
    data: dict[str, Any]
    socket_id: str | None


@dataclass
class RecordingBackend:
    """A pusher SDK backend that records triggers instead of sending them."""

    client: Any
    published: list[Published] = field(default_factory=list)

    async def send_request(self, request: Any) -> dict[str, Any]:
        body = json.loads(request.body)
        self.published.append(
            Published(
                body["channels"], body["name"], json.loads(body["data"]), body.get("socket_id")
            )
        )
        return {}


def make_config(tmp_path: Path, **overrides: Any) -> BookingConfig:
    config = BookingConfig(
        app_id=APP_ID,
        app_key=APP_KEY,
        app_secret=APP_SECRET,
        db_path=tmp_path / "booking.sqlite3",
        admin_email=ADMIN_EMAIL,
        admin_password=ADMIN_PASSWORD,
        secret_key=b"test-secret-key",
        seed_demo_bookings=False,
    )
    return replace(config, **overrides)


@pytest.fixture
def config(tmp_path: Path) -> BookingConfig:
    return make_config(tmp_path)


@pytest.fixture
def pusher_client(config: BookingConfig) -> pusher.Pusher:
    return pusher.Pusher(
        app_id=config.app_id, key=config.app_key, secret=config.app_secret, backend=RecordingBackend
    )


@pytest.fixture
def recorder(pusher_client: pusher.Pusher) -> RecordingBackend:
    backend = pusher_client._pusher_client.http
    assert isinstance(backend, RecordingBackend)
    return backend


@pytest.fixture
async def client(
    aiohttp_client: ClientFactory, config: BookingConfig, pusher_client: pusher.Pusher
) -> TestClient[web.Request, web.Application]:
    return await aiohttp_client(
        create_app(config, today=lambda: TODAY, pusher_client=pusher_client)
    )


CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


async def csrf_token(client: TestClient[web.Request, web.Application], path: str = "/") -> str:
    """The session's CSRF token, as the page's `<meta name="csrf-token">` carries it."""
    response = await client.get(path)
    match = CSRF_META.search(await response.text())
    assert match, f"no csrf meta on {path}"
    return match.group(1)


async def login(client: TestClient[web.Request, web.Application]) -> str:
    """Sign in as the seeded admin; returns the new CSRF token."""
    token = await csrf_token(client, "/admin/login")
    response = await client.post(
        "/admin/login",
        data={"_token": token, "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    return await csrf_token(client, "/admin/reservations")


def booking_form(**overrides: str) -> dict[str, str]:
    form = {
        "guest_name": "Budi Santoso",
        "guest_email": "budi@example.com",
        "check_in": "2030-02-01",
        "check_out": "2030-02-04",
        "guests": "2",
    }
    form.update(overrides)
    return form


async def book(
    client: TestClient[web.Request, web.Application], villa_id: int = 1, **overrides: str
) -> tuple[int, str]:
    """Create a booking through the form; returns (booking id, token)."""
    token = await csrf_token(client, f"/villas/{villa_id}")
    response = await client.post(
        f"/villas/{villa_id}/bookings",
        data={"_token": token, **booking_form(**overrides)},
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    match = re.fullmatch(r"/bookings/(\d+)\?token=([\w-]+)", response.headers["Location"])
    assert match, response.headers["Location"]
    return int(match.group(1)), match.group(2)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


BANNER_PID = re.compile(r"^  reverbpy +ws://\S+ +\(pid (\d+)\)$", re.M)
RESTART = re.compile(
    r"^reverbpy stopped \((?P<status>[^)]*)\); the booking app keeps serving\. "
    r"Start reverbpy again with: (?P<first>.+?)(?: \(or (?P<direct>.+)\))?$",
    re.M,
)


@dataclass
class Launcher:
    """`python -m examples.booking_app.run` as `make run` starts it, in a session of its own so
    a signal to its group is the terminal's Ctrl-C; `env` is its environment, for commands the
    user would type in the same shell."""

    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    cwd: Path
    app_url: str
    reverb_port: int
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text()

    def reverb_pid(self) -> int:
        match = BANNER_PID.search(self.output())
        assert match, self.output()
        return int(match.group(1))

    def restart_lines(self) -> list[re.Match[str]]:
        return list(RESTART.finditer(self.output()))

    def close(self) -> None:
        """Ctrl-C, as a user stops it; then make sure its reverbpy is gone too."""
        pid = self.reverb_pid() if BANNER_PID.search(self.output()) else None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if pid is not None and is_reverbpy(pid, self.reverb_port):
            os.kill(pid, signal.SIGKILL)


def is_reverbpy(pid: int, port: int) -> bool:
    """Whether `pid` is still a reverbpy on `port`: a pid that died may be in use again."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"reverbpy" in argv and str(port).encode() in argv


def launcher_env(tmp_path: Path, reverb_port: int, app_port: int) -> dict[str, str]:
    """A shell's environment with nothing of the developer's REVERB_/BOOKING_/make settings."""
    drop = ("REVERB_", "BOOKING_", "REDIS_")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(drop) and k not in {"PORT", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"}
    }
    env.update(
        REVERB_HOST="127.0.0.1",
        REVERB_PORT=str(reverb_port),
        BOOKING_HOST="127.0.0.1",
        BOOKING_PORT=str(app_port),
        BOOKING_DB=str(tmp_path / "run.sqlite3"),
        PYTHONUNBUFFERED="1",
    )
    return env


def start_launcher(
    tmp_path: Path, *, cwd: Path = ROOT, extra_env: dict[str, str] | None = None
) -> Launcher:
    """Start the launcher on free ports and wait for its banner."""
    reverb_port, app_port = free_port(), free_port()
    env = launcher_env(tmp_path, reverb_port, app_port)
    if cwd != ROOT:
        env["PYTHONPATH"] = str(ROOT)
    env.update(extra_env or {})
    log_path = tmp_path / "run.log"
    with log_path.open("wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "examples.booking_app.run"],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    launcher = Launcher(proc, env, cwd, f"http://127.0.0.1:{app_port}", reverb_port, log_path)
    try:
        wait_for(
            lambda: "Press Ctrl-C" in launcher.output() or proc.poll() is not None, 30, "the banner"
        )
        assert proc.poll() is None, launcher.output()
    except BaseException:
        launcher.close()
        raise
    return launcher


def restart_command(line: re.Match[str], env: dict[str, str]) -> str:
    """The printed `make serve`, unless make would first install the venv, which a test must not
    do (it may need the network; under `make test-oldest` another venv is the one under test):
    then the direct form printed beside it."""
    if line["direct"] is None:
        return line["first"]
    installed = subprocess.run(
        ["make", "-q", ".venv/.installed"], cwd=ROOT, env=env, capture_output=True
    )
    if installed.returncode == 0 and Path(sys.prefix) == ROOT / ".venv":
        return line["first"]
    return line["direct"]


def run_in_shell(command: str, launcher: Launcher, log_path: Path) -> subprocess.Popen[bytes]:
    """`command` as the user types it in the launcher's shell, in a process group of its own."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command,
            shell=True,
            cwd=launcher.cwd,
            env=launcher.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the whole group (make, and the reverbpy it runs), SIGKILL to what lingers:
    make may exit before its reverbpy does."""
    signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader, or the group never looks empty
        if not signal_group(proc.pid, 0):
            break
        time.sleep(0.1)
    signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


def signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True
