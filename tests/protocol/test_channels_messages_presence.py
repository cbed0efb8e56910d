from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reverbpy.protocol import messages
from reverbpy.protocol.channels import ChannelType, channel_kind, channel_name_error
from reverbpy.protocol.errors import PusherError
from reverbpy.protocol.frames import text_frame
from reverbpy.protocol.presence import Member, PresenceState, snapshot


@pytest.mark.parametrize(
    ("name", "type_", "cache"),
    [
        ("news", ChannelType.PUBLIC, False),
        ("privatefoo", ChannelType.PUBLIC, False),
        ("private-a", ChannelType.PRIVATE, False),
        ("private-encrypted-a", ChannelType.ENCRYPTED, False),
        ("private-encrypted-cache-a", ChannelType.ENCRYPTED, True),
        ("private-cache-a", ChannelType.PRIVATE, True),
        ("presence-a", ChannelType.PRESENCE, False),
        ("presence-cache-a", ChannelType.PRESENCE, True),
        ("cache-a", ChannelType.PUBLIC, True),
        ("#server-to-user-7", ChannelType.SERVER_TO_USER, False),
        ("presence-cache-" + "x" * 10_000, ChannelType.PRESENCE, True),  # too long to remember
    ],
)
def test_channel_kind(name: str, type_: ChannelType, cache: bool) -> None:
    kind = channel_kind(name)
    assert (kind.type, kind.cache) == (type_, cache)
    # Pusher: private, encrypted and presence channels need a signature; client events only
    # on private and presence ones.
    private = type_ in (ChannelType.PRIVATE, ChannelType.PRESENCE)
    assert kind.needs_auth is (private or type_ is ChannelType.ENCRYPTED)
    assert kind.accepts_client_events is private
    assert channel_kind(name) is kind  # remembered, or one of the eight kinds anyway


@pytest.mark.parametrize("name", ["", "a b", "a/b", "é", "#private-x", "#server-to-user-", "x" * 201, 5])
def test_invalid_channel_names(name: object) -> None:
    assert channel_name_error(name) is not None


@pytest.mark.parametrize("name", ["a-Z_0=9@,.;", "#server-to-user-abc", "x" * 200])
def test_valid_channel_names(name: str) -> None:
    assert channel_name_error(name) is None


@given(st.integers(1, 10**9), st.integers(1, 10**9), st.integers(0, 10**6))
def test_connection_established_from_its_template_is_what_the_encoder_makes(
    high: int, low: int, activity_timeout: int
) -> None:
    socket_id = f"{high}.{low}"
    data = orjson.dumps({"socket_id": socket_id, "activity_timeout": activity_timeout}).decode()
    expected = orjson.dumps({"event": "pusher:connection_established", "data": data})
    assert messages.connection_established(socket_id, activity_timeout) == expected


def test_internal_events_are_double_encoded() -> None:
    assert messages.connection_established("1.2", 30) == (
        b'{"event":"pusher:connection_established","data":"{\\"socket_id\\":\\"1.2\\",\\"activity_timeout\\":30}"}'
    )
    assert messages.subscription_succeeded("test-channel") == (
        b'{"event":"pusher_internal:subscription_succeeded","data":"{}","channel":"test-channel"}'
    )
    assert messages.error(4009, "Connection is unauthorized") == (
        b'{"event":"pusher:error","data":"{\\"code\\":4009,\\"message\\":\\"Connection is unauthorized\\"}"}'
    )
    assert messages.PONG == b'{"event":"pusher:pong"}'


def test_channel_event_passes_data_through() -> None:
    raw = messages.channel_event("App\\Events\\X", "c", '{"foo":"bar"}')
    assert orjson.loads(raw) == {"event": "App\\Events\\X", "channel": "c", "data": '{"foo":"bar"}'}
    assert "user_id" in orjson.loads(messages.channel_event("client-x", "presence-c", {"a": 1}, user_id=3))


def test_decode_accepts_object_or_string_data() -> None:
    a = messages.decode('{"event":"pusher:subscribe","data":{"channel":"c","auth":""}}')
    b = messages.decode('{"event":"pusher:subscribe","data":"{\\"channel\\":\\"c\\",\\"auth\\":\\"\\"}"}')
    assert a == b == messages.Subscribe("c", "", None)
    assert messages.decode('{"event":"pusher:ping","data":{}}') == messages.Ping()
    assert messages.decode('{"event":"client-x","channel":"private-c","data":"hi"}') == messages.ClientEvent(
        "client-x", "private-c", "hi"
    )


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"data":{}}',
        '{"event":5}',
        '{"event":"pusher:subscribe","data":{"channel":5}}',
        '{"event":"pusher:subscribe","data":{"channel":"c","auth":5}}',
        '{"event":"pusher:subscribe","data":"{oops"}',
        '{"event":"pusher:subscribe","data":[1]}',
        '{"event":"pusher:unknown"}',
        '{"event":"client-x"}',
    ],
)
def test_decode_errors_are_non_fatal_4200(text: str) -> None:
    with pytest.raises(PusherError) as info:
        messages.decode(text)
    assert info.value.code == 4200
    assert not info.value.fatal


def test_text_frame_lengths() -> None:
    assert text_frame(b"hi") == b"\x81\x02hi"
    assert text_frame(b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert text_frame(b"x" * 70_000)[:10] == b"\x81\x7f" + (70_000).to_bytes(8, "big")


def test_presence_dedupes_users_across_sockets() -> None:
    state = PresenceState()
    alice = Member(1, {"name": "Alice"})
    assert state.add("1.1", alice) is True
    assert state.add("1.2", Member("1", {"name": "Alice"})) is False
    assert state.count == 1
    assert state.remove("1.1", alice) is False
    assert state.remove("1.2", alice) is True
    assert state.count == 0
    assert state.remove("1.2", alice) is False


def test_presence_snapshot_shape() -> None:
    state = PresenceState()
    state.add("1.1", Member(1, {"name": "A"}))
    state.add("1.2", Member("b", None))
    assert snapshot(state.members()) == {"count": 2, "ids": [1, "b"], "hash": {"1": {"name": "A"}, "b": None}}
