"""Whether each socket is still there, and closing sockets in bulk.

Every socket is checked, subscribed or not (Reverb #375 never reaps idle sockets): after
``ping_interval`` of silence it is pinged, and closed with 4201 if nothing comes back within
``pong_timeout``; with ``authorized_connections_timeout``, a socket that neither signed in nor
joined a private or presence channel in time is closed with 4009. The composition root runs
``sweep`` on one timer with the hub's ``tick`` (``server.sweep_interval``).
"""

from __future__ import annotations

from collections.abc import Iterable

from reverbpy.dispatch import Peer
from reverbpy.protocol import messages
from reverbpy.protocol.errors import ErrorCode
from reverbpy.registry import AppState

NOT_AUTHORIZED = "Connection not authorized within timeout."
NO_PONG = "Pong reply not received in time"


def sweep(states: Iterable[AppState], now: float) -> None:
    """Ping idle sockets, close those that did not answer in time (4201), enforce the
    authorized-connections timeout (4009)."""
    for state in states:
        app = state.app
        auth_timeout = app.authorized_connections_timeout
        for peer in list(state.connections.values()):
            if peer.closed:
                continue
            if (
                auth_timeout is not None
                and now - peer.connected_at >= auth_timeout
                and not _authorized(peer)
            ):
                peer.fail(ErrorCode.UNAUTHORIZED, NOT_AUTHORIZED)
            elif peer.pinged_at is not None:
                if now - peer.pinged_at >= app.pong_timeout:
                    peer.fail(ErrorCode.PONG_NOT_RECEIVED, NO_PONG)
            elif now - peer.last_seen >= app.ping_interval:
                peer.ping(now, messages.PING)


def close_all(states: Iterable[AppState], code: int, reason: str) -> int:
    """Fail every open socket of these apps with ``code``; returns how many.

    At shutdown 4200 (pusher-js reconnects at once, ideally to another node); at reload 4003
    for the apps that are gone."""
    count = 0
    for state in states:
        for peer in list(state.connections.values()):
            if not peer.closed:
                peer.fail(code, reason)
                count += 1
    return count


def _authorized(peer: Peer) -> bool:
    session = peer.session
    if session.user is not None:
        return True
    return any(
        m is not None or name.startswith("private-") for name, m in session.subscriptions.items()
    )
