"""Structured fuzzing of the Pusher messages clients send, from the session down to the hub.

A generated case is a run of operations on one app (one of a few configurations: default
limits, tight limits with client events from anyone and webhooks on, client events off), with
two to four sockets: JSON and non-JSON frames (``pusher:subscribe``/``unsubscribe`` with odd
channel names, right and wrong HMAC ``auth``, every shape of ``channel_data``; client events;
``pusher:signin``; pings; unknown events; a wrong type in every field), connects, disconnects,
HTTP API publishes and clock ticks. Each frame goes through ``Session.receive`` and the actions
are carried out on a ``Hub`` (memory adapter) as ``websocket.py`` does, with recording peers:
no socket and no event loop, so thousands of cases run in seconds.

After every operation:

- nothing raised, and every frame any socket got is a well-formed Pusher message: a
  ``pusher:error`` carries a documented code (4000-4302), a close code is never 4300 or above
  (pusher-js would give up), a ``subscription_error`` has an HTTP-like status;
- the reply is the one the protocol demands where it is clear-cut (a pong for a ping, nothing
  for a pong or an unsubscribe, one 4200 for a malformed frame, ``subscription_succeeded`` for
  a well-formed subscription to a public channel or a correctly signed private one, an error
  for a duplicate or a wrong signature);
- the session's subscriptions are the registry's, within the per-socket cap, presence members are those of the
  subscribed sockets, within the member cap, and every presence subscriber's view (snapshot,
  then ``member_added``/``member_removed``) is the channel's actual member list;
- a client event reaches every other subscriber once and never comes back to its sender;
- when every socket is gone, nothing is left: no channel, user or watcher.

``make fuzz`` runs ``check_bytes`` a million times (tests/fuzz/campaign.py); the real-server
test at the end sends a few hundred generated frames over TCP and checks that the connection
stays usable (a ping after each gets a pong) unless the protocol closes it.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reverbpy.config import AppConfig, FixedApp, Secret, WebhookTarget
from reverbpy.dispatch import Outbox, Peer
from reverbpy.hub import Hub
from reverbpy.protocol import messages
from reverbpy.protocol.auth import sign
from reverbpy.protocol.errors import ErrorCode, SubscriptionError
from reverbpy.protocol.session import Close, Join, Leave, Reply, Session, SignIn, Whisper
from reverbpy.registry import Registry
from reverbpy.scaling.memory import MemoryAdapter
from tests.conftest import ServerProcess
from tests.fuzz.source import ByteSource, HypothesisSource, Source
from tests.peers import RecordingWebhooks

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1500"))
KEY, SECRET = "key", "secret"
APPS = (
    AppConfig(id="1", key=KEY, secret=Secret(SECRET)),
    AppConfig(
        id="1", key=KEY, secret=Secret(SECRET), accept_client_events_from="all",
        max_presence_members=2, client_event_rate=3, max_channel_name_length=24,
        max_event_payload=64, max_presence_member_size=48, max_user_id_length=8,
        max_event_name_length=16, max_channels_per_connection=3, subscription_count_events=True,
        webhooks=(WebhookTarget("http://127.0.0.1:9/hook"),),
    ),
    AppConfig(id="1", key=KEY, secret=Secret(SECRET), accept_client_events_from="none"),
)  # fmt: skip
ERROR_CODES = frozenset(int(c) for c in ErrorCode)

# --- the generator ------------------------------------------------------------------------------
# Small pools, so that sockets meet on the same channels and users; odd values beside them.

NAMES = ("a", "room", "chat.1", "x-y_z=@,.;")
PREFIXES = (
    "", "", "private-", "private-", "presence-", "presence-", "presence-cache-", "cache-",
    "private-encrypted-", "private-cache-", "private-encrypted-cache-", "#server-to-user-",
)  # fmt: skip
ODD_CHANNELS = (
    "", " ", "a b", "é", "private-", "presence-", "#server-to-user-", "#", "#a", "x" * 200,
    "x" * 201, "private-" + "x" * 193, "presence-" + "y" * 30, "\x00", "a/b", "ü" * 10, "a\nb",
    "#server-to-user-1 ", "private-ä", "privatefoo", "presence", "cache", "*", "a" * 10_000,
)  # fmt: skip
USER_IDS: tuple[Any, ...] = (
    "1", "2", "42", "u", 7, "x" * 8, "x" * 9, "x" * 129, "", True, None, 1.5, [1], {"a": 1}, -1,
    10**30, "é", " ",
)  # fmt: skip
USER_INFOS: tuple[Any, ...] = (
    None,
    {"name": "A"},
    {"name": "x" * 2000},
    [],
    "s",
    1,
    {"n": {"a": [1, 2, {"b": None}]}},
)
JSON_VALUES: tuple[Any, ...] = (
    None, True, 0, -1, 1.5, 10**20, "", "x", "{\"a\":1}", "not json", [], [1, "a"], {}, {"k": "v"},
    {"deep": [[[[{}]]]]}, "x" * 100, "é" * 40,
)  # fmt: skip
WRONG_TYPES: tuple[Any, ...] = (None, 1, 1.5, True, [], ["a"], {}, {"a": 1})
GARBAGE: tuple[str | bytes, ...] = (
    "", " ", "{", "null", "[]", "1", '"x"', "true", "NaN", '{"event":1}', '{"event":null}',
    '{"event":"pusher:ping"', '{"event":"\\ud800"}', "\ufeff{}", '{"event":["pusher:ping"]}',
    "[" * 2000 + "]" * 2000, '{"a":' * 600 + "1" + "}" * 600, b"\xff\xfe", b'{"event":"\xc3"}',
    '{"event":"pusher:ping","event":"pusher:subscribe"}', '{"event":"","channel":""}',
    '{"event":"pusher:subscribe","data":"{\\"channel\\":"}',
)  # fmt: skip
UNKNOWN_EVENTS = (
    "pusher:unknown", "pusher:connection_established", "pusher:error", "pusher_internal:x",
    "pusher:subscription_succeeded", "pusher:", "pusher_internal:subscription_succeeded",
)  # fmt: skip


def channel_name(src: Source) -> str:
    shape = src.int(0, 9)
    if shape <= 6:
        return src.pick(PREFIXES) + src.pick(NAMES)
    if shape == 7:
        return "#server-to-user-" + str(src.pick(USER_IDS))
    if shape == 8:
        return src.pick(ODD_CHANNELS)
    return src.pick(PREFIXES) + src.text(12)


def json_text(value: Any, src: Source) -> str:
    """``value`` as JSON, compact or spaced: signatures cover the exact string sent."""
    if src.int(0, 3) == 0:
        return json.dumps(value)
    return dumps(value).decode()


def dumps(value: Any) -> bytes:
    """JSON as a client may write it: orjson refuses integers past 64 bits, JSON does not."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":")).encode()


def channel_data(src: Source) -> Any:
    shape = src.int(0, 9)
    if shape <= 5:
        data: dict[str, Any] = {}
        if src.int(0, 7):
            data["user_id"] = src.pick(USER_IDS)
        if src.bool():
            data["user_info"] = src.pick(USER_INFOS)
        if src.int(0, 5) == 0:
            data["extra"] = src.pick(JSON_VALUES)
        return json_text(data, src)
    if shape == 6:
        return src.pick(("{", "not json", "", "null", "[]", "1", '"s"', '{"user_id":1,}', "{}"))
    if shape == 7:
        return src.pick(WRONG_TYPES)
    if shape == 8:
        return json_text({"user_id": "1", "user_info": {"bio": "b" * src.int(0, 3000)}}, src)
    return None


def channel_auth(src: Source, socket_id: str, channel: str, data: Any) -> Any:
    signed_data = data if isinstance(data, str) else None
    shape = src.int(0, 15)
    if shape <= 7:  # right, over exactly what is sent
        return f"{KEY}:{sign(SECRET, f'{socket_id}:{channel}' + (f':{signed_data}' if signed_data is not None else ''))}"
    if shape == 8:  # right for a private channel, channel_data left out of the signature
        return f"{KEY}:{sign(SECRET, f'{socket_id}:{channel}')}"
    if shape == 9:
        return f"{KEY}:{sign('wrong', f'{socket_id}:{channel}')}"
    if shape == 10:
        return f"other:{sign(SECRET, f'{socket_id}:{channel}')}"
    if shape == 11:
        return f"{KEY}:{sign(SECRET, f'1.1:{channel}')}"
    if shape == 12:
        return f"{KEY}:{sign(SECRET, f'{socket_id}:{channel}x')}".upper()
    if shape == 13:
        return src.pick(("", f"{KEY}:", "garbage", f"{KEY}:{'0' * 64}", " "))
    if shape == 14:
        return src.pick(WRONG_TYPES)
    return None


def pusher_data(src: Source, data: dict[str, Any]) -> Any:
    """The ``data`` field of a ``pusher:*`` message: an object, a JSON string, or wrong."""
    shape = src.int(0, 9)
    if shape <= 5:
        return data
    if shape <= 7:
        return json_text(data, src)
    if shape == 8:
        return src.pick(("not json", "[]", "1", '"x"', ""))
    return src.pick(WRONG_TYPES)


@dataclass
class Message:
    frame: str | bytes
    expect: str | None = None
    """``pong``, ``silent``, ``invalid`` (one 4200), ``joined`` / ``refused`` (of ``channel``),
    ``duplicate``, or None when the outcome depends on more than the frame."""
    channel: str | None = None
    client_event: tuple[str, str] | None = None


def _envelope(src: Source, event: str, data: Any, omit_data: bool = False) -> dict[str, Any]:
    message: dict[str, Any] = {"event": event}
    if not omit_data:
        message["data"] = data
    if src.int(0, 7) == 0:
        message["channel"] = src.pick(("a", 1, None))
    return message


def build_message(src: Source, socket_id: str, subscribed: Sequence[str]) -> Message:
    kind = src.int(0, 19)
    if kind <= 7:  # subscribe
        channel: Any = channel_name(src)
        if subscribed and src.int(0, 5) == 0:
            channel = src.pick(subscribed)
        if src.int(0, 19) == 0:
            channel = src.pick(WRONG_TYPES)
        data_text = channel_data(src) if isinstance(channel, str) and src.int(0, 2) else None
        auth = (
            channel_auth(src, socket_id, channel, data_text) if isinstance(channel, str) else None
        )
        fields: dict[str, Any] = {"channel": channel}
        if auth is not None or src.bool():
            fields["auth"] = auth
        if data_text is not None:
            fields["channel_data"] = data_text
        data = pusher_data(src, fields)
        message = Message(dumps(_envelope(src, "pusher:subscribe", data)))
        if data is not fields and not (isinstance(data, str) and data.startswith("{")):
            message.expect = None if isinstance(data, dict) else "invalid"
        elif isinstance(channel, str) and (data is fields or isinstance(data, str)):
            message.channel = channel
            message.expect = _subscribe_expectation(channel, fields, socket_id, subscribed)
        return message
    if kind <= 9:  # unsubscribe
        channel = src.pick(subscribed) if subscribed and src.bool() else channel_name(src)
        if src.int(0, 9) == 0:
            channel = src.pick(WRONG_TYPES)
        fields_ = {"channel": channel}
        data = pusher_data(src, fields_)
        expect = "silent" if isinstance(channel, str) and data is fields_ else None
        return Message(dumps(_envelope(src, "pusher:unsubscribe", data)), expect)
    if kind <= 13:  # client event
        event = src.pick(("client-typing", "client-x", "client-", "client-" + "e" * 20,
                          "client-" + "e" * 250, "typing", "pusher:foo", "", "client-é"))  # fmt: skip
        channel = src.pick(subscribed) if subscribed and src.int(0, 3) else channel_name(src)
        message_data: dict[str, Any] = {"event": event, "channel": channel}
        if src.int(0, 9) == 0:
            message_data["channel"] = src.pick(WRONG_TYPES)
        if src.int(0, 5):
            message_data["data"] = src.pick((*JSON_VALUES, "d" * 20_000))
        if src.int(0, 9) == 0:
            message_data["user_id"] = "forged"
        return Message(
            dumps(message_data),
            client_event=(event, message_data["channel"])
            if isinstance(message_data["channel"], str)
            else None,
        )
    if kind <= 15:  # sign-in
        user: dict[str, Any] = {"id": src.pick(USER_IDS)}
        if src.bool():
            user["user_info"] = src.pick(USER_INFOS)
        watch = src.int(0, 5)
        if watch == 1:
            user["watchlist"] = [src.pick(USER_IDS) for _ in range(src.int(0, 4))]
        elif watch == 2:
            user["watchlist"] = [str(i) for i in range(src.pick((100, 101, 150)))]
        elif watch == 3:
            user["watchlist"] = src.pick(WRONG_TYPES)
        user_data: Any = json_text(user, src)
        if src.int(0, 9) == 0:
            user_data = src.pick(("not json", "[]", '{"id":""}', *WRONG_TYPES))
        right = f"{KEY}:{sign(SECRET, f'{socket_id}::user::{user_data}')}"
        auth = right if src.int(0, 3) else src.pick((f"{KEY}:{sign('x', 'y')}", "", *WRONG_TYPES))
        data = pusher_data(src, {"auth": auth, "user_data": user_data})
        return Message(dumps(_envelope(src, "pusher:signin", data)))
    if kind == 16:  # ping or pong
        event = src.pick(("pusher:ping", "pusher:pong"))
        data = src.pick(({}, "", "x", 5, None, []))
        frame = dumps(_envelope(src, event, data, omit_data=src.bool()))
        return Message(frame, "pong" if event == "pusher:ping" else "silent")
    if kind == 17:  # an unknown pusher event
        data = src.pick(({}, "x", None))
        return Message(dumps({"event": src.pick(UNKNOWN_EVENTS), "data": data}), "invalid")
    if kind == 18:  # not a message at all
        garbage = src.pick(GARBAGE)
        return Message(garbage, "invalid" if garbage not in _PARSEABLE_GARBAGE else None)
    return Message(src.bytes(60))


_PARSEABLE_GARBAGE = frozenset(
    g for g in GARBAGE if isinstance(g, str) and g.startswith('{"event":"') and g.endswith('"}')
)


def _subscribe_expectation(
    channel: str, fields: dict[str, Any], socket_id: str, subscribed: Sequence[str]
) -> str | None:
    """What the protocol demands of a well-formed subscription, where that is clear-cut."""
    if not _PUSHER_NAME.fullmatch(channel) or len(channel) > 24:
        return None  # the name may be refused (or not: the limit is per app)
    auth, data = fields.get("auth"), fields.get("channel_data")
    if not (auth is None or isinstance(auth, str)) or not (data is None or isinstance(data, str)):
        return "invalid"
    if channel in subscribed:
        return "duplicate"
    if channel.startswith(("presence-", "#")):
        return None
    if channel.startswith("private-"):
        right = f"{KEY}:{sign(SECRET, f'{socket_id}:{channel}')}"
        with_data = f"{KEY}:{sign(SECRET, f'{socket_id}:{channel}:{data}')}"
        return "joined" if auth in (right, with_data) else "refused"
    return "joined"


_PUSHER_NAME = re.compile(r"[-a-zA-Z0-9_=@,.;]+")


# --- the world the frames are applied to -------------------------------------------------------


class ManualOutbox(Outbox):
    """Frames stay queued on their peer until the test reads them: no event loop needed."""

    def schedule(self) -> None:  # ``mark`` and ``broadcast`` ask for a flush here
        self._dirty.clear()


class FuzzPeer(Peer):
    __slots__ = ("close_code", "view")

    def __init__(self, socket_id: str, source: FixedApp, outbox: Outbox, clock: Clock) -> None:
        super().__init__(socket_id, source, Session(source, socket_id, clock), outbox, 0.0)
        self.close_code: int | None = None
        self.view: dict[str, set[str]] = {}
        """Presence members of each presence channel, as this socket was told."""

    def take(self) -> list[bytes]:
        frames, self._pending = self._pending, []
        return [_payload(f) for f in frames]

    def flush(self) -> int:
        return 0

    def close(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code = code
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def _payload(frame: bytes) -> bytes:
    assert frame[0] == 0x81, frame[:2]  # FIN + text, unmasked
    n = frame[1] & 0x7F
    start = 2 if n < 126 else 4 if n == 126 else 10
    return frame[start:]


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a hub coroutine that never waits (the memory adapter answers at once)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise AssertionError("a hub call waited on the memory adapter")


@dataclass
class World:
    app: AppConfig
    clock: Clock = field(default_factory=Clock)
    peers: list[FuzzPeer] = field(default_factory=list)
    serial: int = 0

    def __post_init__(self) -> None:
        self.source = FixedApp(self.app)
        self.hub = Hub(Registry((self.app,)), RecordingWebhooks(), MemoryAdapter())
        state = self.hub.registry.by_id(self.app.id)
        assert state is not None
        self.state = state
        self.outbox = ManualOutbox(max_write_buffer=1 << 30)

    def connect(self) -> FuzzPeer:
        self.serial += 1
        peer = FuzzPeer(f"{self.serial}.{1000 + self.serial}", self.source, self.outbox, self.clock)
        self.hub.connect(self.state, peer)
        self.peers.append(peer)
        return peer

    def disconnect(self, peer: FuzzPeer) -> None:
        peer.closed = True
        self.peers.remove(peer)
        run(self.hub.disconnect(self.state, peer))
        self.observe()

    def receive(
        self, peer: FuzzPeer, frame: str | bytes
    ) -> tuple[dict[FuzzPeer, list[dict[str, Any]]], bool]:
        """Apply one frame as ``websocket.py`` does; what each socket got and whether the
        sender was closed."""
        actions = peer.session.receive(frame)
        hub, state = self.hub, self.state
        closed = False
        for action in actions:
            match action:
                case Reply(payload):
                    peer.send(payload)
                case Whisper(channel, event, data, user_id):
                    hub.whisper(state, peer, channel, event, data, user_id)
                case Join(channel, member):
                    try:
                        run(hub.join(state, peer, channel, member))
                    except SubscriptionError as exc:
                        peer.session.subscription_refused(channel)
                        peer.send(
                            messages.subscription_error(channel, exc.kind, exc.message, exc.status)
                        )
                case Leave(channel, member):
                    peer.view.pop(channel, None)
                    run(hub.leave(state, peer, channel, member))
                case SignIn(user_id, _info, watchlist, confirmation):
                    run(hub.sign_in(state, peer, user_id, watchlist, confirmation))
                case Close(code, _reason):
                    assert 4000 <= code < 4300, f"close code {code} would stop pusher-js"
                    peer.close(code, _reason)
                    closed = True
        replies = self.observe()
        if closed or peer.closed:
            self.disconnect(peer)
            closed = True
        return replies, closed

    def observe(self) -> dict[FuzzPeer, list[dict[str, Any]]]:
        """Read and check what every socket got; a socket the app closed is disconnected."""
        got: dict[FuzzPeer, list[dict[str, Any]]] = {}
        for peer in list(self.peers):
            got[peer] = [well_formed(payload) for payload in peer.take()]
            for message in got[peer]:
                track_presence(peer, message)
        return got

    def check_invariants(self) -> None:
        state = self.state
        assert set(state.connections) == {p.socket_id for p in self.peers}
        for peer in self.peers:
            here = {n for n, c in state.channels.items() if peer.socket_id in c.subscribers}
            assert set(peer.session.subscriptions) == here, (peer.session.subscriptions, here)
            cap = self.app.max_channels_per_connection
            assert cap is None or len(here) <= cap, (len(here), cap)
            user = peer.session.user
            if user is not None:
                assert peer in state.users.get(user.id, ())
        for name, channel in state.channels.items():
            assert channel.subscribers, f"empty channel {name} kept"
            if channel.presence is None:
                continue
            members = {p.session.subscriptions[name].key for p in channel.subscribers.values()}
            assert {m.key for m in channel.presence.members()} == members
            assert channel.presence.count <= self.app.max_presence_members
            for peer in self.peers:
                if name in peer.session.subscriptions:
                    assert peer.view.get(name) == members, (name, peer.view.get(name), members)
        for user_id, sockets in state.users.items():
            assert sockets and all(p.session.user and p.session.user.id == user_id for p in sockets)

    def close_all(self) -> None:
        for peer in list(self.peers):
            self.disconnect(peer)
        state = self.state
        assert not state.channels and not state.connections and not state.users
        assert not state.watchers, state.watchers


def well_formed(payload: bytes) -> dict[str, Any]:
    """A Pusher message as the server may send it; its ``pusher*`` data decoded."""
    message = orjson.loads(payload)
    assert isinstance(message, dict) and isinstance(message.get("event"), str), message
    event: str = message["event"]
    if event == "pusher:pong":
        assert payload == messages.PONG
        return message
    if event.startswith(("pusher:", "pusher_internal:")) and "data" in message:
        assert isinstance(message["data"], str), message
        message["data"] = orjson.loads(message["data"])
    data = message.get("data")
    channel = message.get("channel")
    match event:
        case "pusher:error":
            assert data["code"] in ERROR_CODES and isinstance(data["message"], str), data
            assert channel is None
        case "pusher:subscription_error":
            assert isinstance(channel, str)
            assert isinstance(data["type"], str) and isinstance(data["error"], str)
            assert data["status"] in (400, 401, 403, 413), data
        case "pusher_internal:subscription_succeeded":
            assert isinstance(channel, str) and isinstance(data, dict)
            if channel.startswith("presence-"):
                presence = data["presence"]
                assert presence["count"] == len(presence["ids"]) == len(presence["hash"])
                assert [str(i) for i in presence["ids"]] == list(presence["hash"])
            else:
                assert data == {}
        case "pusher_internal:member_added" | "pusher_internal:member_removed":
            assert isinstance(channel, str) and channel.startswith("presence-")
            assert isinstance(data["user_id"], str | int) and not isinstance(data["user_id"], bool)
        case "pusher:signin_success":
            assert isinstance(data["user_data"], str)
        case "pusher_internal:watchlist_events":
            for item in data["events"]:
                assert item["name"] in ("online", "offline") and item["user_ids"]
        case "pusher_internal:subscription_count":
            assert isinstance(channel, str) and data["subscription_count"] >= 1
        case "pusher:cache_miss":
            assert isinstance(channel, str) and "data" not in message
        case _:
            assert not event.startswith(("pusher:", "pusher_internal:")), message
            assert isinstance(channel, str), message
    return message


def track_presence(peer: FuzzPeer, message: dict[str, Any]) -> None:
    channel = message.get("channel")
    match message["event"]:
        case "pusher_internal:subscription_succeeded" if "presence" in message["data"]:
            peer.view[channel] = set(message["data"]["presence"]["hash"])
        case "pusher_internal:member_added":
            view = peer.view[channel]
            key = str(message["data"]["user_id"])
            assert key not in view, f"member_added for {key}, already a member"
            view.add(key)
        case "pusher_internal:member_removed":
            view = peer.view[channel]
            key = str(message["data"]["user_id"])
            assert key in view, f"member_removed for {key}, not a member"
            view.discard(key)


def check_reply(
    message: Message, replies: list[dict[str, Any]], closed: bool, *, at_cap: bool = False
) -> None:
    events = [r["event"] for r in replies]
    if (
        at_cap
        and message.expect in ("joined", "refused")
        and events == ["pusher:subscription_error"]
    ):
        # A socket at its channel cap is refused first, whatever the signature.
        assert replies[0]["data"]["type"] == "LimitReached" and replies[0]["data"]["status"] == 403
        return
    match message.expect:
        case "pong":
            assert events == ["pusher:pong"], replies
        case "silent":
            assert events == [], replies
        case "invalid":
            assert events == ["pusher:error"] and replies[0]["data"]["code"] == 4200, replies
            assert not closed
        case "duplicate":
            assert events == ["pusher:error"], replies
        case "joined":
            assert events[:1] == ["pusher_internal:subscription_succeeded"], replies
            assert replies[0]["channel"] == message.channel
        case "refused":
            assert events == ["pusher:subscription_error"], replies
            assert replies[0]["channel"] == message.channel
            assert replies[0]["data"]["status"] == 401


def run_case(src: Source) -> None:
    """One generated session; raises on any broken rule."""
    world = World(src.pick(APPS))
    for _ in range(src.int(2, 4)):
        world.connect()
    for _ in range(src.int(1, 24)):
        op = src.int(0, 19)
        if not world.peers or op == 0:
            world.connect()
        elif op == 1:
            world.disconnect(src.pick(world.peers))
        elif op == 2:
            world.clock.now += src.pick((0.1, 1.0, 6.0, 4000.0))
            world.hub.tick(world.clock.now)
            world.observe()
        elif op == 3:  # an HTTP API publish, maybe leaving a socket out
            names = [channel_name(src) for _ in range(src.int(1, 3))]
            excluded = src.pick(world.peers).socket_id if src.bool() else None
            data = src.pick(tuple(v for v in JSON_VALUES if isinstance(v, str)))  # as validated
            world.hub.trigger(world.state, names, "api-event", data, excluded)
            world.observe()
        elif op == 4:  # the HTTP API terminates a user's connections
            world.hub.terminate_user(world.state, str(src.pick(USER_IDS)))
            world.observe()
            for peer in [p for p in world.peers if p.closed]:
                assert peer.close_code == 4009
                world.disconnect(peer)
        else:
            peer = src.pick(world.peers)
            message = build_message(src, peer.socket_id, list(peer.session.subscriptions))
            frame = message.frame
            if isinstance(frame, bytes) and src.int(0, 3) == 0:
                frame = frame.decode(errors="replace")
            others = {p: set(p.session.subscriptions) for p in world.peers if p is not peer}
            cap = world.app.max_channels_per_connection
            at_cap = cap is not None and len(peer.session.subscriptions) >= cap
            got, closed = world.receive(peer, frame)
            check_reply(message, got.get(peer, []), closed, at_cap=at_cap)
            if message.client_event is not None:
                check_client_event(message.client_event, peer, got, others)
        world.check_invariants()
    world.close_all()


def check_client_event(
    sent: tuple[str, str],
    sender: FuzzPeer,
    got: dict[FuzzPeer, list[dict[str, Any]]],
    others: dict[FuzzPeer, set[str]],
) -> None:
    """Relayed to every other subscriber once, or to none; never back to the sender."""
    event, channel = sent
    counts = {
        p: sum(1 for m in messages if m["event"] == event and m.get("channel") == channel)
        for p, messages in got.items()
    }
    assert not counts.get(sender), f"client event {event} echoed to its sender"
    receivers = {p for p, n in counts.items() if n}
    if receivers:
        assert all(counts[p] == 1 for p in receivers)
        assert receivers == {p for p, subs in others.items() if channel in subs}
        errors = [m for m in got.get(sender, []) if m["event"] == "pusher:error"]
        assert not errors, errors


def check_bytes(data: bytes) -> None:
    """The campaign's entry point (tests/fuzz/campaign.py): one case from bytes."""
    run_case(ByteSource(data))


# --- the tests ----------------------------------------------------------------------------------


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_generated_sessions_keep_every_rule(data: st.DataObject) -> None:
    run_case(HypothesisSource(data.draw))


def test_random_bytes_decode_to_sessions_that_keep_every_rule() -> None:
    rng = random.Random(1)
    for _ in range(EXAMPLES // 3):
        check_bytes(rng.randbytes(rng.randrange(0, 400)))


async def test_frames_over_a_real_connection_leave_it_usable(server: ServerProcess) -> None:
    """A few hundred generated frames over TCP: after each, a ping still gets its pong."""
    from tests.functional.raw import Client, connect

    rng = random.Random(7)
    async with aiohttp.ClientSession() as session:
        client: Client = await connect(session, server)
        subscribed: list[str] = []
        for _ in range(300):
            src = ByteSource(rng.randbytes(300))
            message = build_message(src, client.socket_id, subscribed)
            frame = message.frame
            if isinstance(frame, bytes):
                try:
                    await client.ws.send_str(frame.decode())
                except UnicodeDecodeError:  # not text: a binary frame, refused with 4200
                    await client.ws.send_bytes(frame)
            else:
                await client.ws.send_str(frame)
            await client.send("pusher:ping", {})
            while True:
                msg = await client.ws.receive(timeout=5)
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    # Only a fatal error closes (a 4xxx code pusher-js retries or gives up
                    # on as it should), or a frame over max_message_size (1009).
                    code = client.ws.close_code
                    too_big = len(frame) > 10_000
                    assert code == 1009 if too_big else code is not None and 4000 <= code < 4300
                    await client.ws.close()
                    client = await connect(session, server)
                    subscribed = []
                    break
                assert msg.type == aiohttp.WSMsgType.TEXT, msg
                reply = well_formed(msg.data.encode())
                if reply["event"] == "pusher_internal:subscription_succeeded":
                    subscribed.append(reply["channel"])
                if reply["event"] == "pusher:pong":
                    break
        await client.ws.close()
    log = server.log()
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]


def test_signing_in_again_as_the_same_user_leaks_no_watcher() -> None:
    """Found by the campaign: a second ``pusher:signin`` (same user, another watchlist) left
    the socket registered as a watcher of the first watchlist after it disconnected."""
    world = World(APPS[0])
    peer = world.connect()
    for watchlist in (["a"], ["b"]):
        user_data = orjson.dumps({"id": "u", "watchlist": watchlist}).decode()
        auth = f"{KEY}:{sign(SECRET, f'{peer.socket_id}::user::{user_data}')}"
        frame = orjson.dumps(
            {"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}}
        )
        got, closed = world.receive(peer, frame)
        assert [m["event"] for m in got[peer]] == ["pusher:signin_success"] and not closed
    assert peer.session.watchlist == ("a", "b")
    assert set(world.state.watchers) == {"a", "b"}
    world.close_all()  # asserts that no watcher is left
