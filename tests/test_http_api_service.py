"""``HttpApi``, the HTTP API state one server shares between its two transports."""

from __future__ import annotations

import time

import pytest

from reverbpy.config import AppConfig, Secret, ServerConfig
from reverbpy.http_api.service import HttpApi
from reverbpy.protocol import api
from reverbpy.protocol.api import ApiError
from reverbpy.protocol.auth import sign_request
from reverbpy.server import NODE, create_app
from reverbpy.wire import WIRE


def http_api(*apps: AppConfig) -> HttpApi:
    return create_app(ServerConfig(apps=apps))[NODE].triggers.api


def app(app_id: str = "1", secret: str = "s", **kw: object) -> AppConfig:
    return AppConfig(id=app_id, key=f"key-{app_id}", secret=Secret(secret), **kw)  # type: ignore[arg-type]


def test_one_lookup_one_404() -> None:
    service = http_api(app())
    assert service.lookup("1").app.id == "1"
    assert service.lookup_by_key("key-1") is service.lookup("1")  # the same rules, kept
    with pytest.raises(ApiError) as unknown:
        service.lookup("9")
    assert unknown.value.answer() == api.unknown_app("9").answer()
    with pytest.raises(ApiError) as wrong_key:
        service.lookup_by_key("nope")
    assert (wrong_key.value.status, wrong_key.value.message) == (401, "Unknown auth_key")


def test_a_reload_that_changes_the_secret_changes_the_rules() -> None:
    service = http_api(app(secret="old"))
    before = service.lookup("1")
    service.hub.registry.reload((app(secret="new", backend_event_rate=5),))
    after = service.lookup("1")
    assert after is not before and after.app.backend_event_rate == 5
    assert after.backend_events is service.hub.registry.apps["1"].backend_events

    def signed(secret: str) -> str:
        params = {"auth_key": "key-1", "auth_timestamp": str(int(time.time())), "auth_version": "1.0"}
        return "&".join(f"{k}={v}" for k, v in params.items()) + "&auth_signature=" + sign_request("GET", "/apps/1/channels", params, secret)

    after.authenticate("GET", ("/apps/1/channels",), signed("new"), time.time())
    with pytest.raises(ApiError, match="Invalid signature"):
        after.authenticate("GET", ("/apps/1/channels",), signed("old"), time.time())


def test_refresh_forgets_removed_apps() -> None:
    triggers = create_app(ServerConfig(apps=(app("1"), app("2"))))[NODE].triggers
    service = triggers.api
    service.lookup("1"), service.lookup("2")
    service.hub.registry.reload((app("2"),))
    triggers.refresh()
    assert triggers.paths == {b"/apps/2/events", b"/apps/2/batch_events"}
    with pytest.raises(ApiError):
        service.lookup("1")
    assert list(service._apps) == ["2"]


def test_requests_are_recorded_by_route_pattern() -> None:
    service = http_api(app())
    before = WIRE.http_requests["/apps/{app_id}/channels/{channel}", "1", "429"], WIRE.rate_limited["1", "http_api"]
    service.record(api.CHANNEL, "1", 429, time.monotonic())
    after = WIRE.http_requests["/apps/{app_id}/channels/{channel}", "1", "429"], WIRE.rate_limited["1", "http_api"]
    assert after == (before[0] + 1, before[1] + 1)
    assert WIRE.http_latency["/apps/{app_id}/channels/{channel}"].sum > 0
