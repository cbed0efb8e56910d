"""Operations pieces without a server process: masking, proxies, reload, metrics, readiness."""

from __future__ import annotations

import io
import json
import logging

import pytest
from aiohttp.test_utils import TestClient, TestServer

from reverbpy.commands import effective_settings
from reverbpy.config import AppConfig, Secret, ServerConfig
from reverbpy.logs import MASK, JsonFormatter, SecretFilter, frame_payload, mask_frame
from reverbpy.protocol.frames import text_frame
from reverbpy.proxies import client_address, parse_networks
from reverbpy.registry import Registry
from reverbpy.server import NODE, create_app
from reverbpy.wire import Histogram


def app_config(id_: str, key: str, secret: str = "s3cr3t-value", **kw: object) -> AppConfig:
    return AppConfig(id=id_, key=key, secret=Secret(secret), **kw)  # type: ignore[arg-type]


def test_mask_frame_hides_signatures_and_cuts_bodies() -> None:
    frame = json.dumps(
        {
            "event": "pusher:subscribe",
            "data": {"auth": "app-key:0123456789abcdef", "channel": "private-a", "channel_data": "x" * 200},
        }
    )
    masked = mask_frame(frame)
    assert "0123456789abcdef" not in masked and f"app-key:{MASK}" in masked
    assert "x" * 40 not in masked and "[200 chars]" in masked
    assert "hunter2" not in mask_frame('{"event":"e","data":{"shared_secret":"hunter2"}}')
    assert mask_frame(b"not json") == "not json"
    payload = b'{"event":"pusher:pong"}'
    assert frame_payload(text_frame(payload)) == payload
    assert frame_payload(text_frame(b"y" * 300)) == b"y" * 300


def test_secret_filter_masks_messages_and_extras() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(SecretFilter(["very-secret", "abc"]))  # too short to mask: ignored
    log = logging.getLogger("test.ops.secret")
    log.addHandler(handler)
    log.propagate = False
    log.warning("leaked %s", "very-secret", extra={"app_id": "1", "detail": "x very-secret y"})
    doc = json.loads(stream.getvalue())
    assert "very-secret" not in stream.getvalue()
    assert doc["message"] == f"leaked {MASK}" and doc["app_id"] == "1"


def test_forwarded_for_is_believed_only_from_trusted_peers() -> None:
    nets = parse_networks(["127.0.0.1", "10.0.0.0/8"])
    assert client_address("127.0.0.1", "203.0.113.9", nets) == "203.0.113.9"
    # a client-supplied hop left of a trusted proxy is ignored: the rightmost untrusted wins
    assert client_address("127.0.0.1", "1.2.3.4, 203.0.113.9, 10.1.1.1", nets) == "203.0.113.9"
    assert client_address("192.0.2.7", "203.0.113.9", nets) == "192.0.2.7"
    assert client_address("127.0.0.1", None, nets) == "127.0.0.1"


def test_registry_reload_keeps_state_of_surviving_apps() -> None:
    a, b = app_config("1", "ka"), app_config("2", "kb")
    registry = Registry((a, b))
    state_a = registry.apps["1"]
    state_a.cache_miss_reported.add("marker")
    a2 = app_config("1", "ka2", backend_event_rate=5)
    removed = registry.reload((a2, app_config("3", "kc")))
    assert [s.app.id for s in removed] == ["2"]
    assert registry.apps["1"] is state_a and state_a.app is a2 and "marker" in state_a.cache_miss_reported
    assert state_a.backend_events.limit == 5
    assert registry.by_key("ka2") is state_a and registry.by_key("ka") is None
    assert registry.by_key("kc") is registry.apps["3"] and registry.by_id("2") is None


def test_histogram_buckets_are_cumulative() -> None:
    h = Histogram((1, 10))
    for v in (0, 1, 5, 50):
        h.observe(v)
    assert h.buckets() == [("1.0", 2), ("10.0", 3), ("+Inf", 4)]
    assert h.sum == 56


def test_effective_settings_mask_every_secret() -> None:
    config = ServerConfig(apps=(app_config("1", "k", "app-secret-1"),), metrics_token=Secret("tok-123"))
    text = json.dumps(effective_settings(config), default=str)
    assert "app-secret-1" not in text and "tok-123" not in text and '"key": "k"' in text


# The WebSocket route is a callable object, which aiohttp's route check flags as "bare".
@pytest.mark.filterwarnings("ignore:Bare functions are deprecated:DeprecationWarning")
async def test_ready_turns_503_and_refuses_new_sockets_while_draining() -> None:
    config = ServerConfig(apps=(app_config("1", "k"),))
    app = create_app(config)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/ready")
        assert resp.status == 200 and await resp.json() == {"ready": True}
        app[NODE].readiness.degraded = "redis link down"
        resp = await client.get("/ready")
        assert resp.status == 503 and (await resp.json())["reason"] == "redis link down"
        app[NODE].readiness.degraded = None
        app[NODE].readiness.add_check(lambda: None)
        assert (await client.get("/ready")).status == 200
        app[NODE].readiness.draining = True
        resp = await client.get("/ready")
        assert resp.status == 503 and (await resp.json())["reason"] == "shutting down"
        resp = await client.get(
            "/app/k?protocol=7",
            headers={"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="},
        )
        assert resp.status == 503
        assert (await client.get("/up")).status == 200
        metrics = await client.get("/metrics")
        assert metrics.status == 200 and "reverbpy_ready 0.0" in await metrics.text()
        assert app[NODE].metrics.registry is not None
