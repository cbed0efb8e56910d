"""Structured fuzzing of the HTTP API: query strings, signatures, bodies, routes.

Generated requests (``build_request``) mix every auth parameter missing, repeated, mis-cased or
wrong (timestamps stale, in the future, not integers, 400 digits long; wrong ``body_md5`` and
signatures) with correctly signed ones (signed here with the app's secret, independently of
``reverbpy.protocol.auth``, so most get past the signature and reach validation), over bodies
of every wrong shape: not JSON, not UTF-8, not objects, names, data and channels of the wrong
type or size, too many channels or batch items, encrypted channels mixed with others, odd
``socket_id`` and ``info`` values.

The sans-I/O rules (``protocol.api.handle_trigger`` and the query rules of the GET routes) are
checked at volume against a small model written from the Pusher docs: the status must be the
model's (2xx, or the 4xx it names), every refusal a JSON ``{"error": ...}``, and nothing is
published unless the request is accepted. A few hundred requests then go to a real server,
through the front door and through aiohttp (chunked bodies are aiohttp's), plus odd methods and
paths: never a 5xx, 4xx bodies are JSON, the server still answers and logs no traceback.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import yarl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import MultiDict

from reverbpy.config import AppConfig, Secret
from reverbpy.protocol.api import (
    ApiError,
    AppRules,
    Event,
    channel_query,
    channels_query,
    handle_trigger,
    users_query,
)
from reverbpy.protocol.ratelimit import PerSecond
from tests.conftest import ServerProcess
from tests.fuzz.source import ByteSource, HypothesisSource, Source

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1500"))
KEY, SECRET = "reverb-key", "reverb-secret"  # the `server` fixture's app
NOW = 1_700_000_000
APPS = (
    AppConfig(id="1", key=KEY, secret=Secret(SECRET)),
    AppConfig(
        id="1", key=KEY, secret=Secret(SECRET), max_event_payload=32, max_channels_per_event=3,
        max_batch_size=3, max_channel_name_length=24, max_event_name_length=10,
    ),
)  # fmt: skip

# --- the generator ------------------------------------------------------------------------------

CHANNELS: tuple[Any, ...] = (
    "a", "room", "presence-a", "private-a", "private-encrypted-a", "cache-a", "#server-to-user-1",
    "", " ", "a b", "é", "#", "#a", "x" * 24, "x" * 25, "x" * 200, "x" * 201, "a/b", "a\x00",
    1, None, [], {"a": 1}, True,
)  # fmt: skip
NAMES: tuple[Any, ...] = (
    "e",
    "my-event",
    "App\\Events\\X",
    "",
    "x" * 10,
    "x" * 11,
    "x" * 201,
    1,
    None,
    [],
    "é",
)
DATA: tuple[Any, ...] = (
    "",
    "{}",
    "x" * 32,
    "x" * 33,
    "é" * 16,
    "é" * 17,
    "x" * 10_241,
    1,
    None,
    {"a": 1},
    [],
)
SOCKET_IDS: tuple[Any, ...] = (
    "1.2",
    "123.456",
    "1.2.3",
    "abc",
    "",
    " 1.2",
    "1.2\n",
    "\u0661.\u0662",
    "1.",
    1.2,
    12,
    [],
)
INFOS: tuple[Any, ...] = (
    "user_count", "subscription_count", "user_count,subscription_count", ",", "", "bogus",
    "cache", "user_count,,", 1, [],
)  # fmt: skip
RAW_BODIES = (
    b"",
    b"{",
    b"null",
    b"[]",
    b"1",
    b'"x"',
    b"\xff\xfe",
    b"[" * 3000,
    b'{"name":"e"',
    b"{}",
)
PARAM_VALUES = (
    "",
    "x",
    "a&b",
    "a=b",
    "a+b",
    "é",
    "%",
    "%zz",
    "1,2",
    " ",
    "presence-",
    "user_count",
)


def event_item(src: Source, *, batch: bool) -> Any:
    if src.int(0, 15) == 0:
        return src.pick((None, 1, "x", [], [{}]))
    item: dict[str, Any] = {}
    if src.int(0, 9):
        item["name"] = src.pick(NAMES)
    if src.int(0, 9):
        item["data"] = src.pick(DATA)
    shape = src.int(0, 3)
    if (shape <= 1 and not batch) or shape == 3:
        many = [src.pick(CHANNELS) for _ in range(src.int(0, 5))]
        item["channels"] = many if src.int(0, 7) else src.pick(("a", None, {}, 1))
    if shape >= 2 or (batch and src.bool()):
        item["channel"] = src.pick(CHANNELS)
    if src.int(0, 2) == 0:
        item["socket_id"] = src.pick(SOCKET_IDS)
    if src.int(0, 2) == 0:
        item["info"] = src.pick(INFOS)
    if src.int(0, 7) == 0:
        item["extra"] = src.pick(DATA)
    return item


def build_body(src: Source, *, batch: bool) -> bytes:
    shape = src.int(0, 11)
    if shape == 0:
        return src.pick(RAW_BODIES)
    if shape == 1:
        return src.bytes(40)
    if not batch:
        return orjson.dumps(event_item(src, batch=False))
    items = [event_item(src, batch=True) for _ in range(src.int(0, 4))]
    if shape == 2:
        return orjson.dumps(src.pick(({"batch": None}, {"batch": {}}, {"batch": "x"}, items)))
    return orjson.dumps({"batch": items})


@dataclass
class Request:
    method: str
    path: str
    route: str
    pairs: list[tuple[str, str]]
    body: bytes
    signed: bool | None
    """Whether the model expects the signature checks to pass (None: no opinion)."""

    @property
    def query(self) -> str:
        return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in self.pairs)


def reference_signature(method: str, path: str, pairs: list[tuple[str, str]], secret: str) -> str:
    """Pusher's rest-api.md, written out again: lowercased names, sorted, not URL-encoded."""
    params = sorted((k.lower(), v) for k, v in pairs if k.lower() != "auth_signature")
    text = f"{method}\n{path}\n" + "&".join(f"{k}={v}" for k, v in params)
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def build_api_request(src: Source, app_id: str = "1") -> Request:
    route = src.pick(
        ("events", "events", "batch_events", "batch_events", "channels", "channel", "users")
    )
    method = "POST" if route in ("events", "batch_events") else "GET"
    body = build_body(src, batch=route == "batch_events") if method == "POST" else b""
    channel = src.pick(CHANNELS)
    path = {
        "events": f"/apps/{app_id}/events",
        "batch_events": f"/apps/{app_id}/batch_events",
        "channels": f"/apps/{app_id}/channels",
        "channel": f"/apps/{app_id}/channels/{channel}",
        "users": f"/apps/{app_id}/channels/{channel}/users",
    }[route]
    pairs: list[tuple[str, str]] = []
    ok = True
    key = src.int(0, 15)
    pairs.append(("auth_key", KEY if key else "wrong"))
    ok &= key > 0
    stamp = src.int(0, 15)
    value = (
        str(NOW) if stamp < 10 else
        src.pick((str(NOW - 601), str(NOW + 601), str(NOW - 599), "abc", "1e9", "", "9" * 400, f" {NOW}", f"{NOW}.0"))
    )  # fmt: skip
    pairs.append(("auth_timestamp", value))
    ok &= value in (str(NOW), str(NOW - 599), f" {NOW}")
    version = src.int(0, 15)
    if version:
        pairs.append(("auth_version", "1.0" if version > 1 else "2.0"))
    ok &= version > 1
    if body or src.int(0, 7) == 0:
        md5 = src.int(0, 15)
        digest = hashlib.md5(body).hexdigest()
        pairs.append(("body_md5", digest if md5 > 2 else digest.upper() if md5 == 2 else "0" * 32))
        ok &= md5 > 2 or not body
    elif body:
        ok = False
    for _ in range(src.int(0, 3)):
        name = src.pick(
            ("info", "filter_by_prefix", "x", "Info", "AUTH_KEY", "auth_timestamp", "é", "a b")
        )
        pairs.append((name, src.pick(PARAM_VALUES)))
    pairs = src.permute(pairs)
    names = [k.lower() for k, _ in pairs]
    if any(names.count(k) > 1 for k in ("auth_key", "auth_timestamp", "auth_version", "body_md5")):
        ok = False if not ok else None  # type: ignore[assignment]
    sig = src.int(0, 15)
    if sig:
        good = reference_signature(method, path, pairs, SECRET)
        pairs.append(
            ("auth_signature", good if sig > 3 else src.pick(("", "0" * 64, good.upper())))
        )
    signed = ok if sig > 3 else False
    return Request(method, path, route, pairs, body, signed)


# --- the model and the check --------------------------------------------------------------------

_NAME = re.compile(r"#?[-a-zA-Z0-9_=@,.;]+", re.ASCII)
_SOCKET_ID = re.compile(r"[0-9]+\.[0-9]+", re.ASCII)


def channel_ok(name: Any, app: AppConfig) -> bool:
    if (
        not isinstance(name, str)
        or not _NAME.fullmatch(name)
        or len(name) > app.max_channel_name_length
    ):
        return False
    return not name.startswith("#") or (name.startswith("#server-to-user-") and len(name) > 16)


def model_event(item: Any, app: AppConfig, *, batch: bool) -> set[int]:
    """The statuses Pusher's rules allow for one event: {200}, or the refusals it has."""
    if not isinstance(item, dict):
        return {400}
    problems: set[int] = set()
    name, data = item.get("name"), item.get("data")
    if not isinstance(name, str) or not 1 <= len(name) <= app.max_event_name_length:
        problems.add(400)
    if not isinstance(data, str):
        problems.add(400)
    elif len(data.encode("utf-8", "surrogatepass")) > app.max_event_payload:
        problems.add(413)
    if "channels" in item and not batch:
        channels = item["channels"]
        if not isinstance(channels, list) or not channels:
            return problems | {400}
    elif "channel" in item:
        channels = [item["channel"]]
    else:
        return problems | {400}
    if (
        len(channels) > app.max_channels_per_event
        or not all(channel_ok(c, app) for c in channels)
        or (len(channels) > 1 and any(c.startswith("private-encrypted-") for c in channels))
    ):
        problems.add(400)
    socket_id = item.get("socket_id")
    if socket_id is not None and not (
        isinstance(socket_id, str) and _SOCKET_ID.fullmatch(socket_id)
    ):
        problems.add(400)
    info = item.get("info")
    if info is not None and not (
        isinstance(info, str)
        and {a for a in info.split(",") if a} <= {"user_count", "subscription_count"}
    ):
        problems.add(400)
    return problems or {200}


def model_trigger(body: bytes, app: AppConfig, *, batch: bool) -> set[int]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {400}
    if not batch:
        return model_event(payload, app, batch=False)
    items = payload.get("batch") if isinstance(payload, dict) else None
    if not isinstance(items, list) or not items or len(items) > app.max_batch_size:
        return {400}
    statuses = set().union(*(model_event(i, app, batch=True) for i in items))
    return statuses - {200} or {200}


def model_query(request: Request, app: AppConfig) -> set[int]:
    query = MultiDict(request.pairs)  # as aiohttp's request.query: the first of a repeated name
    info = {a for a in query.get("info", "").split(",") if a}
    if request.route == "channels":
        if not info <= {"user_count", "subscription_count"}:
            return {400}
        return (
            {400}
            if "user_count" in info
            and not query.get("filter_by_prefix", "").startswith("presence-")
            else {200}
        )
    name = request.path.split("/")[4]
    if request.route == "users":
        return {200} if name.startswith("presence-") else {400}
    if not channel_ok(name, app) or not info <= {"user_count", "subscription_count", "cache"}:
        return {400}
    if "user_count" in info and not name.startswith("presence-"):
        return {400}
    if (
        "cache" in info
        and not name.split("-encrypted")[-1].lstrip("-").startswith(("cache-", "private-cache-"))
        and "cache-" not in name[:25]
    ):
        return {400}
    return {200}


def check_api_case(src: Source) -> None:
    app = src.pick(APPS)
    published: list[tuple[list[str], str, str, str | None]] = []
    rules = AppRules(
        app,
        backend_events=PerSecond(None),
        read_requests=PerSecond(None),
        publish=lambda *event: published.append(event),
    )
    request = build_api_request(src)
    if request.method == "GET":
        check_query(request, app)
        return
    result = handle_trigger(
        rules, batch=request.route == "batch_events", paths=(request.path,), query=request.query,
        body=request.body, now=NOW, tick=1.0,
    )  # fmt: skip
    if isinstance(result, list):
        assert result and all(isinstance(e, Event) for e in result)
        status, answer = 200, None
    else:
        status, raw = result
        answer = orjson.loads(raw)
        assert isinstance(answer, dict)
    if status == 200:
        assert answer in (None, {}), answer
        assert len(published) == (
            1 if request.route == "events" else len(orjson.loads(request.body)["batch"])
        )
    else:
        assert set(answer) == {"error"} and isinstance(answer["error"], str), answer  # type: ignore[arg-type]
        assert not published
    if request.signed is False:
        assert status == 401, (status, answer, request)
    elif request.signed:
        expected = model_trigger(request.body, app, batch=request.route == "batch_events")
        assert status in expected, (status, expected, answer, request)


def check_query(request: Request, app: AppConfig) -> None:
    query = MultiDict(request.pairs)
    name = request.path.split("/")[4] if request.route != "channels" else ""
    try:
        if request.route == "channels":
            channels_query(query)
        elif request.route == "channel":
            channel_query(app, name, query)
        else:
            users_query(name)
        status = 200
    except ApiError as exc:
        status = exc.status
        assert isinstance(exc.message, str)
    assert status in model_query(request, app), (status, request)


def check_bytes(data: bytes) -> None:
    """The campaign's entry point (tests/fuzz/campaign.py): one request from bytes."""
    check_api_case(ByteSource(data))


# --- the tests ----------------------------------------------------------------------------------


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_api_rules_answer_as_the_pusher_docs_say(data: st.DataObject) -> None:
    check_api_case(HypothesisSource(data.draw))


def test_api_rules_on_random_bytes() -> None:
    rng = random.Random(2)
    for _ in range(EXAMPLES):
        check_bytes(rng.randbytes(rng.randrange(0, 300)))


async def test_a_real_server_answers_every_request_with_2xx_or_a_json_4xx(
    server: ServerProcess,
) -> None:
    rng = random.Random(3)
    seen: dict[str, int] = {}
    async with aiohttp.ClientSession() as session:
        for i in range(300):
            request = build_api_request(ByteSource(rng.randbytes(200)), server.app_id)
            stamp = str(int(time.time()))
            pairs = [
                (k, stamp if v == str(NOW) and k.lower() == "auth_timestamp" else v)
                for k, v in request.pairs
                if k != "auth_signature"
            ]
            if any(k == "auth_signature" for k, _ in request.pairs):
                pairs.append(
                    (
                        "auth_signature",
                        reference_signature(request.method, request.path, pairs, server.secret),
                    )
                )
            request.pairs = pairs
            method, path = request.method, request.path
            if i % 10 == 9:  # odd methods and paths, for aiohttp's own 404 and 405
                method = rng.choice(("PUT", "DELETE", "PATCH", "GET", "POST"))
                path = rng.choice(
                    (
                        path,
                        path + "/x",
                        "/apps/999/events",
                        "/apps//events",
                        "/apps/1/events/../channels",
                    )
                )
            url = yarl.URL(f"{server.http_url}{quote(path)}?{request.query}", encoded=True)
            chunked = (
                bool(request.body) and i % 3 == 0
            )  # a chunked body is aiohttp's, not the front door's
            async with session.request(
                method, url, data=request.body or None, chunked=chunked or None,
                headers={"Content-Type": "application/json"},
            ) as response:  # fmt: skip
                raw = await response.read()
                assert response.status < 500, (response.status, raw, method, url)
                if response.status >= 400:
                    assert isinstance(orjson.loads(raw), dict), raw
                seen[str(response.status)] = seen.get(str(response.status), 0) + 1
        async with session.get(f"{server.http_url}/up") as response:
            assert response.status == 200
    assert seen.get("200") and seen.get("400") and seen.get("401"), seen
    log = server.log()
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]


def test_socket_id_takes_ascii_digits_only() -> None:
    """Found by the model: ``\\d`` let Arabic-Indic digits (``"\\u0661.\\u0662"``) pass as a socket_id."""
    item = {"name": "e", "data": "", "channel": "a", "socket_id": "\u0661.\u0662"}
    try:
        Event(item, APPS[0], single_channel=False)
    except ApiError as exc:
        assert exc.status == 400
    else:
        raise AssertionError("socket_id with non-ASCII digits accepted")
    assert Event({**item, "socket_id": "1.2"}, APPS[0], single_channel=False).socket_id == "1.2"
