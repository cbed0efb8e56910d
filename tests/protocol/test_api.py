"""The HTTP API's pure rules (``protocol.api``): no loop, no socket, a recording publisher."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from reverbpy.config import AppConfig, Secret
from reverbpy.protocol import api
from reverbpy.protocol.api import ApiError, AppRules, Event, handle_trigger
from reverbpy.protocol.auth import sign_request
from reverbpy.protocol.ratelimit import PerSecond

NOW = 1_700_000_000
PATH = "/apps/1/events"


class Published:
    """Records what the rules publish."""

    def __init__(self) -> None:
        self.events: list[tuple[list[str], str, str, str | None]] = []

    def __call__(self, channels: list[str], name: str, data: str, socket_id: str | None) -> None:
        self.events.append((channels, name, data, socket_id))


def rules(*, events_per_second: int | None = None, reads_per_second: int | None = None) -> tuple[AppRules, Published]:
    published = Published()
    app = AppConfig(id="1", key="k", secret=Secret("s"), backend_event_rate=events_per_second, read_request_rate=reads_per_second)
    limits = {"backend_events": PerSecond(app.backend_event_rate), "read_requests": PerSecond(app.read_request_rate)}
    return AppRules(app, **limits, publish=published), published


def signed_query(body: bytes = b"", *, path: str = PATH, method: str = "POST", secret: str = "s", **extra: str) -> str:
    params = {"auth_key": "k", "auth_timestamp": str(NOW), "auth_version": "1.0", **extra}
    if body:
        params["body_md5"] = hashlib.md5(body).hexdigest()
    signature = sign_request(method, path, params, secret)
    return "&".join(f"{k}={v}" for k, v in {**params, "auth_signature": signature}.items())


def trigger(app: AppRules, body: bytes, query: str | None = None, *, batch: bool = False) -> api.Answer | list[Event]:
    return handle_trigger(app, batch=batch, paths=(PATH,), query=signed_query(body) if query is None else query, body=body, now=NOW, tick=0.0)


def refusal(answer: object) -> tuple[int, str]:
    assert isinstance(answer, tuple)
    status, body = answer
    return status, orjson.loads(body)["error"]


EVENT = b'{"name":"e","channel":"c","data":"d"}'


# --- the route table ------------------------------------------------------------------------


def test_the_front_door_paths_come_from_the_route_table() -> None:
    paths = api.fast_paths("/ws", frozenset({"1", "2"}))
    assert paths == {
        "/ws/apps/1/events": (api.EVENTS, "1"),
        "/ws/apps/2/events": (api.EVENTS, "2"),
        "/ws/apps/1/batch_events": (api.BATCH_EVENTS, "1"),
        "/ws/apps/2/batch_events": (api.BATCH_EVENTS, "2"),
    }
    assert {r for r in api.ROUTES if r.fast} == {api.EVENTS, api.BATCH_EVENTS}


def test_route_names_and_patterns_are_unique() -> None:
    assert len({r.name for r in api.ROUTES}) == len({r.pattern for r in api.ROUTES}) == len(api.ROUTES)
    assert [r for r in api.ROUTES if r.auth is None] == [api.HEALTH]


def test_a_signature_may_cover_the_path_with_or_without_the_prefix() -> None:
    assert api.signed_paths("/ws", "/ws/apps/1/events") == ("/apps/1/events", "/ws/apps/1/events")
    assert api.signed_paths("", "/apps/1/events") == ("/apps/1/events",)
    assert api.signed_paths("/ws", "/apps/1/events") == ("/apps/1/events",)


# --- a whole trigger ------------------------------------------------------------------------


def test_a_signed_trigger_is_published_and_answered_with_an_empty_object() -> None:
    app, published = rules()
    assert trigger(app, EVENT) == (200, b"{}")
    assert published.events == [(["c"], "e", "d", None)]


def test_a_trigger_that_asks_for_info_returns_its_events_to_the_caller() -> None:
    app, published = rules()
    body = b'{"name":"e","channels":["a","b"],"data":"d","info":"subscription_count"}'
    events = trigger(app, body)
    assert isinstance(events, list) and [e.channels for e in events] == [["a", "b"]]
    assert events[0].info == {"subscription_count"}
    assert len(published.events) == 1


def test_a_batch_is_all_or_nothing() -> None:
    app, published = rules()
    body = b'{"batch":[{"name":"e","channel":"a","data":"1"},{"name":"e","channel":"bad name","data":"2"}]}'
    assert refusal(trigger(app, body, batch=True))[0] == 400
    assert published.events == []


@pytest.mark.parametrize(
    ("query", "body", "status", "message"),
    [
        ("", EVENT, 401, "Missing auth_key"),
        (signed_query(EVENT, secret="wrong"), EVENT, 401, "Invalid signature"),
        (signed_query(EVENT), EVENT + b" ", 401, "body_md5 does not match"),
        (signed_query(b""), EVENT, 401, "Missing body_md5"),
        (signed_query(b"{not json"), b"{not json", 400, "not valid JSON"),
        (signed_query(b""), b"", 400, "must be a JSON object"),
    ],
)
def test_refusals(query: str, body: bytes, status: int, message: str) -> None:
    app, published = rules()
    got_status, got_message = refusal(trigger(app, body, query))
    assert got_status == status and message in got_message
    assert published.events == []


def test_the_signature_is_checked_before_the_body() -> None:
    """A wrong signature is refused as such, whatever the body: the body was not looked at."""
    app, _ = rules()
    assert refusal(trigger(app, b"\xff not json", signed_query(EVENT, secret="wrong"))) == (
        401, "Invalid signature: you should have sent HmacSHA256Hex(secret, METHOD\\nPATH\\nQUERY)")  # fmt: skip


def test_the_last_body_md5_counts_like_every_repeated_parameter() -> None:
    app, _ = rules()
    right, wrong = hashlib.md5(EVENT).hexdigest(), "0" * 32
    for first, last in ((wrong, right), (right, wrong)):
        pairs = [("auth_key", "k"), ("auth_timestamp", str(NOW)), ("auth_version", "1.0"),
                 ("body_md5", first), ("BODY_MD5", last)]  # fmt: skip
        signature = sign_request("POST", PATH, pairs, "s")
        query = "&".join(f"{k}={v}" for k, v in pairs) + "&auth_signature=" + signature
        checked = app.authenticate("POST", (PATH,), query, NOW)
        if last == right:
            app.check_body(checked, EVENT)
            continue
        with pytest.raises(ApiError, match="body_md5 does not match"):
            app.check_body(checked, EVENT)


def test_the_event_rate_limit_refuses_before_publishing() -> None:
    app, published = rules(events_per_second=2)
    batch = orjson.dumps({"batch": [{"name": "e", "channel": "c", "data": "d"}] * 3})
    status, message = refusal(trigger(app, batch, batch=True))
    assert status == 429 and "2 events per second" in message
    assert published.events == []
    assert trigger(app, EVENT) == api.OK


def test_the_read_rate_limit() -> None:
    app, _ = rules(reads_per_second=1)
    app.allow_read(0.0)
    with pytest.raises(ApiError, match="1 read requests per second") as refused:
        app.allow_read(0.5)
    assert refused.value.status == 429
    app.allow_read(1.0)


def test_rules_show_no_secret() -> None:
    app, _ = rules()
    assert "'s'" not in repr(app) and not hasattr(app, "__dict__")


# --- queries and rendering ------------------------------------------------------------------


def test_query_rules() -> None:
    app = AppConfig(id="1", key="k", secret=Secret("s"))
    assert api.channels_query({"filter_by_prefix": "presence-", "info": "user_count"}) == ("presence-", {"user_count"})
    with pytest.raises(ApiError, match="requires filter_by_prefix=presence-"):
        api.channels_query({"info": "user_count"})
    with pytest.raises(ApiError, match="Unsupported info attribute: bogus"):
        api.channels_query({"info": "bogus,user_count"})
    assert api.channel_query(app, "cache-x", {"info": "cache,subscription_count"}) == {"cache", "subscription_count"}
    with pytest.raises(ApiError, match="only available for presence"):
        api.channel_query(app, "x", {"info": "user_count"})
    with pytest.raises(ApiError, match="only available for cache"):
        api.channel_query(app, "x", {"info": "cache"})
    with pytest.raises(ApiError, match="invalid characters"):
        api.channel_query(app, "bad name", {})
    api.users_query("presence-x")
    with pytest.raises(ApiError, match="presence channels"):
        api.users_query("private-x")


def test_every_refusal_renders_as_one_json_object() -> None:
    assert api.unknown_app("9").answer() == (404, b'{"error":"No matching application for ID [9]."}')
    assert api.too_large(1000).answer() == (413, b'{"error":"Request body larger than 1000 bytes"}')
    assert api.unreadable_body().answer()[0] == 400
    assert api.INTERNAL_ERROR == (500, b'{"error":"Internal Server Error"}')
    assert api.error_body('say "hi"') == b'{"error":"say \\"hi\\""}'
