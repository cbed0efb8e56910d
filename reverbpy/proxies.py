"""``X-Forwarded-For``, believed only when the peer is a configured trusted proxy.

The client address then replaces ``request.remote`` for everything after the middleware (log
lines). The chain is read from the right, skipping trusted hops, so a client cannot pose as
someone else by sending its own ``X-Forwarded-For``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from aiohttp.typedefs import Middleware

from reverbpy.config import ConfigError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    try:
        return tuple(ipaddress.ip_network(v, strict=False) for v in values)
    except ValueError as exc:
        raise ConfigError(f"REVERB_TRUSTED_PROXIES: {exc}") from None


def _trusted(address: str | None, networks: tuple[Network, ...]) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(
    remote: str | None, forwarded_for: str | None, networks: tuple[Network, ...]
) -> str | None:
    """The first untrusted address from the right of ``peer, X-Forwarded-For...``."""
    if not forwarded_for or not _trusted(remote, networks):
        return remote
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            return hop
    return hops[0] if hops else remote


def forwarded_for(trusted: Sequence[str]) -> Middleware:
    networks = parse_networks(trusted)

    @web.middleware
    def middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        # Returns the handler's awaitable instead of awaiting it: no frame of this function
        # stays alive for the hours a WebSocket lasts.
        header = request.headers.get("X-Forwarded-For")
        if header:
            client = client_address(request.remote, header, networks)
            if client is not None and client != request.remote:
                request = request.clone(remote=client)
        return handler(request)

    return middleware
