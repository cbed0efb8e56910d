"""One server's HTTP API, shared by its two transports (``front`` and the aiohttp routes).

``HttpApi`` is created once per server (``server.create_app``) and handed to both: it finds
the app a request names (the one lookup, the one 404), keeps each app's ``AppRules`` (its keyed
verifier) and records every API request's status and latency, labelled by route pattern.
"""

from __future__ import annotations

import time
from functools import partial

from reverbpy.config import ServerConfig
from reverbpy.hub import Hub
from reverbpy.protocol.api import UNKNOWN_KEY, ApiError, AppRules, Route, unknown_app
from reverbpy.registry import AppState
from reverbpy.wire import WIRE

UNKNOWN = "unknown"
"""The ``app`` label of a request for an app that does not exist: clients never invent labels."""


class ServedApp(AppRules):
    """An app's rules, with its state on this node (for the hub's answers)."""

    __slots__ = ("state",)

    def __init__(self, state: AppState, hub: Hub) -> None:
        super().__init__(
            state.app,
            backend_events=state.backend_events,
            read_requests=state.read_requests,
            publish=partial(hub.trigger, state),
        )
        self.state = state


class HttpApi:
    """App lookup, per-app rules and request metrics for one server's HTTP API."""

    def __init__(self, hub: Hub, config: ServerConfig) -> None:
        self.hub = hub
        self.prefix = config.path
        self.max_request_size = config.max_request_size
        self._apps: dict[str, ServedApp] = {}

    def lookup(self, app_id: str) -> ServedApp:
        """The app of ``/apps/{app_id}/...``; ``ApiError`` 404 when there is none."""
        state = self.hub.registry.by_id(app_id)
        if state is None:
            raise unknown_app(app_id)
        served = self._apps.get(app_id)
        if served is not None and served.state is state and served.app is state.app:
            return served  # the usual case, without another call
        return self._served(state)

    def lookup_by_key(self, key: str) -> ServedApp:
        """The app whose key signs a route without ``{app_id}``; ``ApiError`` 401."""
        state = self.hub.registry.by_key(key)
        if state is None:
            raise ApiError(401, UNKNOWN_KEY)
        return self._served(state)

    def _served(self, state: AppState) -> ServedApp:
        # Checked by identity: a reload that changes an app's config (a new secret, new
        # limits) replaces ``state.app`` and its limiters, and gets new rules here.
        served = self._apps.get(state.app.id)
        if served is None or served.state is not state or served.app is not state.app:
            served = self._apps[state.app.id] = ServedApp(state, self.hub)
        return served

    def refresh(self) -> None:
        """Forget the apps a reload removed."""
        apps = self.hub.registry.apps
        self._apps = {i: s for i, s in self._apps.items() if i in apps}

    def record(self, route: Route, app_id: str, status: int, start: float) -> None:
        """Count a request to ``route`` that started at ``start`` (``time.monotonic``: the
        front door has it already, from the read that brought the request)."""
        WIRE.http(route.pattern, app_id, status, time.monotonic() - start)
