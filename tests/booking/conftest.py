"""Fixtures for the booking example: an app per test with its own SQLite file and clock.

`recorder` swaps the pusher SDK's HTTP backend for one that records each request the SDK builds,
so functional tests see exactly what would reach reverbpy's HTTP API without a server.
"""

from __future__ import annotations

import json
import re
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
