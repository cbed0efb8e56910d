"""The per-connection rules, driven with no socket and no event loop."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from reverbpy.config import AppConfig, FixedApp, Secret
from reverbpy.protocol import messages
from reverbpy.protocol.auth import sign
from reverbpy.protocol.presence import Member
from reverbpy.protocol.session import Close, Join, Leave, Reply, Session, SignIn, Whisper

APP = AppConfig(id="1", key="key", secret=Secret("secret"))
SID = "123.456"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def session(app: AppConfig = APP) -> tuple[Session, Clock]:
    clock = Clock()
    return Session(FixedApp(app), SID, clock), clock


def send(s: Session, event: str, data: object = None, channel: str | None = None) -> list[object]:
    msg: dict[str, object] = {"event": event}
    if data is not None:
        msg["data"] = data
    if channel is not None:
        msg["channel"] = channel
    return list(s.receive(orjson.dumps(msg)))


def auth(channel: str, channel_data: str | None = None) -> str:
    text = f"{SID}:{channel}" + (f":{channel_data}" if channel_data is not None else "")
    return f"key:{sign('secret', text)}"


def reply(actions: list[object]) -> dict[str, object]:
    assert len(actions) >= 1 and isinstance(actions[0], Reply)
    decoded = orjson.loads(actions[0].frame)
    if isinstance(decoded.get("data"), str):
        decoded["data"] = orjson.loads(decoded["data"])
    return decoded


def test_ping_gets_pong() -> None:
    s, _ = session()
    assert send(s, "pusher:ping", {}) == [Reply(messages.PONG)]


def test_public_subscribe_and_unsubscribe() -> None:
    s, _ = session()
    assert send(s, "pusher:subscribe", {"channel": "news", "auth": ""}) == [Join("news", None)]
    assert send(s, "pusher:unsubscribe", {"channel": "news"}) == [Leave("news", None)]
    assert send(s, "pusher:unsubscribe", {"channel": "news"}) == []


def test_duplicate_subscribe_is_an_error() -> None:
    s, _ = session()
    send(s, "pusher:subscribe", {"channel": "news"})
    out = reply(send(s, "pusher:subscribe", {"channel": "news"}))
    assert out["event"] == "pusher:error"


def test_private_subscribe_needs_a_valid_signature() -> None:
    s, _ = session()
    assert send(s, "pusher:subscribe", {"channel": "private-a", "auth": auth("private-a")}) == [Join("private-a", None)]
    out = reply(send(s, "pusher:subscribe", {"channel": "private-b", "auth": auth("private-a")}))
    assert out["event"] == "pusher:subscription_error"
    assert out["channel"] == "private-b"
    assert out["data"]["status"] == 401 and out["data"]["type"] == "AuthError"
    assert "private-b" not in s.subscriptions


def test_presence_member_from_exact_channel_data() -> None:
    s, _ = session()
    data = '{"user_id":7,"user_info":{"name":"A"}}'
    actions = send(s, "pusher:subscribe", {"channel": "presence-r", "auth": auth("presence-r", data), "channel_data": data})
    assert actions == [Join("presence-r", Member(7, {"name": "A"}))]


@pytest.mark.parametrize(
    ("channel_data", "status"),
    [
        ('{"user_info":{}}', 400),
        ("not json", 400),
        ('{"user_id":""}', 400),
        ('{"user_id":"' + "x" * 129 + '"}', 400),
        ('{"user_id":"1","user_info":{"bio":"' + "x" * 1100 + '"}}', 413),
    ],
)
def test_presence_channel_data_problems(channel_data: str, status: int) -> None:
    s, _ = session()
    out = reply(send(s, "pusher:subscribe", {"channel": "presence-r", "auth": auth("presence-r", channel_data), "channel_data": channel_data}))
    assert out["event"] == "pusher:subscription_error"
    assert out["data"]["status"] == status


def test_invalid_channel_name_is_a_subscription_error() -> None:
    s, _ = session()
    out = reply(send(s, "pusher:subscribe", {"channel": "bad name"}))
    assert out["event"] == "pusher:subscription_error" and out["data"]["status"] == 400


def _joined(s: Session, channel: str, data: str | None = None) -> None:
    payload: dict[str, object] = {"channel": channel, "auth": auth(channel, data)}
    if data is not None:
        payload["channel_data"] = data
    assert isinstance(send(s, "pusher:subscribe", payload)[0], Join)


def test_client_event_rules() -> None:
    s, _ = session()
    _joined(s, "private-a")
    assert send(s, "client-typing", {"x": 1}, channel="private-a") == [Whisper("private-a", "client-typing", {"x": 1}, None)]
    # not subscribed (members mode)
    assert reply(send(s, "client-typing", {}, channel="private-b"))["data"]["code"] == 4009
    # public channels refuse client events
    send(s, "pusher:subscribe", {"channel": "news"})
    assert reply(send(s, "client-typing", {}, channel="news"))["data"]["code"] == 4009
    # not a client- event
    assert reply(send(s, "typing", {}, channel="private-a"))["data"]["code"] == 4200


def test_client_events_refused_on_encrypted_channels() -> None:
    s, _ = session()
    _joined(s, "private-encrypted-a")
    assert reply(send(s, "client-x", {}, channel="private-encrypted-a"))["data"]["code"] == 4009


def test_client_events_carry_presence_user_id() -> None:
    s, _ = session()
    _joined(s, "presence-a", '{"user_id":"u1"}')
    assert send(s, "client-x", "hi", channel="presence-a") == [Whisper("presence-a", "client-x", "hi", "u1")]


def test_client_events_mode_all_and_none() -> None:
    s, _ = session(replace(APP, accept_client_events_from="all"))
    assert isinstance(send(s, "client-x", {}, channel="private-a")[0], Whisper)
    s, _ = session(replace(APP, accept_client_events_from="none"))
    _joined(s, "private-a")
    assert reply(send(s, "client-x", {}, channel="private-a"))["data"]["code"] == 4301


def test_client_event_rate_limit_is_non_fatal_4301() -> None:
    s, clock = session()
    _joined(s, "private-a")
    results = [send(s, "client-x", {}, channel="private-a") for _ in range(11)]
    assert all(isinstance(r[0], Whisper) for r in results[:10])
    assert reply(results[10])["data"]["code"] == 4301
    assert not any(isinstance(a, Close) for a in results[10])
    clock.now += 1.0
    assert isinstance(send(s, "client-x", {}, channel="private-a")[0], Whisper)


def test_a_reload_applies_to_a_live_session_at_once() -> None:
    """The session reads its app through its source (``registry.AppState`` in the server):
    when a reload swaps the app, the next message follows the new limits, with no copy to patch."""

    class Source:
        def __init__(self, app: AppConfig) -> None:
            self.app = app

    source, clock = Source(APP), Clock()
    s = Session(source, SID, clock)
    _joined(s, "private-a")
    assert all(isinstance(send(s, "client-x", {}, channel="private-a")[0], Whisper) for _ in range(3))
    source.app = replace(APP, client_event_rate=3)
    assert reply(send(s, "client-x", {}, channel="private-a"))["data"]["code"] == 4301
    source.app = replace(APP, client_event_rate=0)  # 0: unlimited
    assert all(isinstance(send(s, "client-x", {}, channel="private-a")[0], Whisper) for _ in range(50))
    source.app = replace(APP, accept_client_events_from="none")
    assert reply(send(s, "client-x", {}, channel="private-a"))["data"]["code"] == 4301


def test_client_event_payload_limit() -> None:
    s, _ = session()
    _joined(s, "private-a")
    assert reply(send(s, "client-x", "x" * 10_300, channel="private-a"))["data"]["code"] == 4301


def test_signin_then_server_to_user_channel() -> None:
    s, _ = session()
    user_data = '{"id":"42","user_info":{"name":"A"}}'
    out = send(s, "pusher:signin", {"auth": f"key:{sign('secret', f'{SID}::user::{user_data}')}", "user_data": user_data})
    signin = out[0]
    assert isinstance(signin, SignIn)
    assert (signin.user_id, signin.user_info, signin.watchlist) == ("42", {"name": "A"}, ())
    assert orjson.loads(signin.confirmation)["event"] == "pusher:signin_success"
    assert send(s, "pusher:subscribe", {"channel": "#server-to-user-42"}) == [Join("#server-to-user-42", None)]
    assert reply(send(s, "pusher:subscribe", {"channel": "#server-to-user-43"}))["event"] == "pusher:subscription_error"


def test_bad_signin_is_fatal_4009() -> None:
    s, _ = session()
    out = send(s, "pusher:signin", {"auth": "key:00", "user_data": '{"id":"1"}'})
    assert reply(out)["data"]["code"] == 4009
    assert Close(4009, "Invalid signature for pusher:signin") in out


def test_server_to_user_needs_signin() -> None:
    s, _ = session()
    assert reply(send(s, "pusher:subscribe", {"channel": "#server-to-user-1"}))["event"] == "pusher:subscription_error"


def test_malformed_input_is_non_fatal() -> None:
    s, _ = session()
    out = s.receive("{not json")
    assert reply(list(out))["data"]["code"] == 4200
    assert not any(isinstance(a, Close) for a in out)


def test_client_event_payload_limit_counts_utf8_bytes() -> None:
    s, _ = session()
    _joined(s, "private-a")
    # 4,000 characters, 12,000 bytes: over the 10,240-byte limit although short in characters
    assert reply(send(s, "client-x", "€" * 4000, channel="private-a"))["data"]["code"] == 4301
    assert isinstance(send(s, "client-x", "€" * 3000, channel="private-a")[0], Whisper)


def test_signin_does_not_reset_the_connection_age() -> None:
    # The authorized-connections timeout counts from the connection's start, whatever the
    # client sends meanwhile (a regression: touch() once reset it).
    from reverbpy.connection import Connection

    conn = Connection.__new__(Connection)
    conn.connected_at = 5.0
    conn.last_seen = 5.0
    conn.pinged_at = None
    conn.touch(100.0)
    assert conn.connected_at == 5.0 and conn.last_seen == 100.0


def test_past_max_channels_per_connection_a_subscribe_is_refused_and_a_swap_is_fine() -> None:
    s, _ = session(replace(APP, max_channels_per_connection=3))
    for i in range(3):  # joins still in flight count: the session adds them at once
        assert send(s, "pusher:subscribe", {"channel": f"c{i}"}) == [Join(f"c{i}", None)]
    refused = reply(send(s, "pusher:subscribe", {"channel": "c3"}))
    assert refused["event"] == "pusher:subscription_error" and refused["channel"] == "c3"
    assert refused["data"] == {"type": "LimitReached", "error": "Too many channels: at most 3 per connection", "status": 403}
    assert "c3" not in s.subscriptions
    assert send(s, "pusher:unsubscribe", {"channel": "c0"}) == [Leave("c0", None)]
    assert send(s, "pusher:subscribe", {"channel": "c3"}) == [Join("c3", None)]
    unlimited, _ = session(replace(APP, max_channels_per_connection=None))
    assert all(send(unlimited, "pusher:subscribe", {"channel": f"c{i}"}) for i in range(500))
    assert len(unlimited.subscriptions) == 500
