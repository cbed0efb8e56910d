"""The cluster envelope codec: every kind round-trips, anything else is refused whole."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from reverbpy.protocol.cluster import (
    ApiEvent,
    ClientEvent,
    Envelope,
    EnvelopeError,
    MemberAdded,
    MemberRemoved,
    Message,
    Terminate,
    UserOffline,
    UserOnline,
    decode,
    encode,
)

MESSAGES: list[Message] = [
    ApiEvent(["a", "presence-b"], "ev", {"x": [1, 2]}, None),
    ApiEvent(["a"], "ev", "text", "1.2"),
    ClientEvent("private-a", "client-typing", {"who": "me"}, "42", "7.7"),
    ClientEvent("private-a", "client-typing", None, None, "7.7"),
    MemberAdded("presence-room", "42", {"name": "Ann"}),
    MemberRemoved("presence-room", 42),
    Terminate("42"),
    UserOnline("42"),
    UserOffline("42"),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_kind_round_trips_through_json(message: Message) -> None:
    envelope = Envelope("app-1", "node-a", message)
    wire = orjson.dumps(encode(envelope))
    assert decode(orjson.loads(wire)) == envelope


def test_the_wire_form_is_the_documented_one() -> None:
    raw = encode(Envelope("1", "n", ClientEvent("c", "client-e", {"k": 1}, "u", "s")))
    assert raw == {"t": "client", "c": "c", "e": "client-e", "d": {"k": 1}, "u": "u", "x": "s",
                   "a": "1", "n": "n"}


@pytest.mark.parametrize(
    "raw",
    [
        [],
        "text",
        {"t": "event", "a": "1", "n": "n"},  # no channels
        {"t": "event", "c": "not-a-list", "e": "e", "a": "1", "n": "n"},
        {"t": "event", "c": [1], "e": "e", "a": "1", "n": "n"},
        {"t": "client", "c": "c", "e": 5, "x": "s", "a": "1", "n": "n"},
        {"t": "member_added", "c": "c", "a": "1", "n": "n"},  # no user
        {"t": "teleport", "a": "1", "n": "n"},
        {"t": "terminate", "u": "1"},  # no app, no node
    ],
)
def test_malformed_envelopes_are_refused(raw: Any) -> None:
    with pytest.raises(EnvelopeError):
        decode(raw)
