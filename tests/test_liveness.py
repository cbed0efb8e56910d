"""Liveness: pings after silence, 4201 without an answer, 4009 without authorization in time."""

from __future__ import annotations

from reverbpy import liveness
from reverbpy.config import AppConfig, Secret
from reverbpy.dispatch import Outbox
from reverbpy.protocol.presence import Member
from reverbpy.registry import AppState
from tests.peers import RecordingPeer

APP = AppConfig(id="1", key="k", secret=Secret("s"), ping_interval=10, pong_timeout=5,
                authorized_connections_timeout=30)


def setup(*socket_ids: str) -> tuple[AppState, list[RecordingPeer]]:
    state = AppState(APP)
    outbox = Outbox(1 << 20)
    peers = [RecordingPeer(s, outbox, APP) for s in socket_ids]
    for peer in peers:
        state.connections[peer.socket_id] = peer
    return state, peers


async def test_idle_socket_is_pinged_then_closed_with_4201() -> None:
    state, (peer,) = setup("1.1")
    liveness.sweep([state], 9.9)
    assert peer.events() == []
    liveness.sweep([state], 10.0)
    assert peer.events() == ["pusher:ping"] and peer.pinged_at == 10.0
    liveness.sweep([state], 14.9)
    assert peer.closed_with is None
    liveness.sweep([state], 15.0)
    assert peer.closed_with == (4201, liveness.NO_PONG)
    assert peer.received()[-1]["event"] == "pusher:error"


async def test_an_answer_resets_the_clock() -> None:
    state, (peer,) = setup("1.1")
    liveness.sweep([state], 10.0)
    peer.last_seen, peer.pinged_at = 12.0, None  # what Connection.touch does on any frame
    liveness.sweep([state], 21.9)
    assert peer.closed_with is None and peer.events() == ["pusher:ping"]


async def test_unauthorized_sockets_close_with_4009_and_authorized_ones_stay() -> None:
    state, (anonymous, member, private) = setup("1.1", "1.2", "1.3")
    member.session.subscriptions["presence-room"] = Member("ann")
    private.session.subscriptions["private-x"] = None
    for peer in (anonymous, member, private):
        peer.last_seen = 29.0  # not idle
    liveness.sweep([state], 30.0)
    assert anonymous.closed_with == (4009, liveness.NOT_AUTHORIZED)
    assert member.closed_with is None and private.closed_with is None


async def test_close_all_fails_open_sockets_only() -> None:
    state, (a, b) = setup("1.1", "1.2")
    b.closed = True
    assert liveness.close_all([state], 4200, "bye") == 1
    assert a.closed_with == (4200, "bye") and b.closed_with is None
