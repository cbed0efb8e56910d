"""The console on aiohttp: sign-in, pages, JSON, the live stream and the event creator.

Routes, under ``{path}/console`` (``Console.routes``):

- ``GET /console``: the page, or the sign-in form; ``POST /console/login`` with the token sets a
  session cookie (signed, HttpOnly, SameSite=Strict: ``Sessions``); ``POST /console/logout``.
- ``GET /console/api/apps``, ``/api/overview?app=``, ``/api/channels?app=&prefix=``,
  ``/api/channel?app=&name=``: JSON, for a signed-in session.
- ``GET /console/stream?app=&channel=&event=&socket_id=``: Server-Sent Events, ``lines`` (the
  log, with the count the rate bound skipped) and ``sample`` (a point of the charts). Each
  stream ends after ``STREAM_SECONDS`` (no request outlives ``front.REQUEST_TIMEOUT``); the
  browser reconnects by itself with ``Last-Event-ID``, and the stream's tap, kept for
  ``RESUME_GRACE`` seconds, carries on with what it queued meanwhile.
- ``POST /console/api/events``: the event creator, with the session's CSRF token in
  ``X-CSRF-Token``. The event goes through ``protocol.api.handle_trigger``, signed here with the
  app's secret, exactly as a signed ``POST /apps/{id}/events`` does: same validation, limits,
  metrics and answer. The secret never leaves the server.

Access: off (no route at all) unless ``REVERB_CONSOLE_TOKEN`` is set, or the server listens on
loopback only with a generated development app (then no sign-in is asked). Tokens and CSRF
tokens are compared in constant time. No response carries an app secret or the token.

While no stream is open, the hub, the WebSocket handler and the webhooks hold no observer
(``Feed.on_change``): the console costs the hot path one attribute test.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import html
import ipaddress
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

import orjson
from aiohttp import web

from reverbpy.config import ServerConfig
from reverbpy.console.feed import MAX_LINES_PER_SECOND, Feed, Filter, Tap
from reverbpy.console.series import Series, Totals
from reverbpy.http_api.events import info_answer
from reverbpy.http_api.responses import json
from reverbpy.http_api.service import HttpApi
from reverbpy.hub import Hub
from reverbpy.protocol import api
from reverbpy.protocol.auth import body_md5, sign_request
from reverbpy.protocol.channels import ChannelType, channel_kind
from reverbpy.registry import AppState
from reverbpy.webhooks import Webhooks
from reverbpy.wire import WIRE, Wire

log = logging.getLogger("reverbpy.console")

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
PAGES = HERE / "pages"
VENDOR_FILES = ("uPlot.iife.min.js", "uPlot.min.css", "pusher.min.js")
"""Built from npm at build time (``make reverbpy/console/static/vendor/.installed``)."""

COOKIE = "reverbpy_console"
SESSION_SECONDS = 12 * 3600.0
MAX_SESSIONS = 1000
STREAM_SECONDS = 30.0
RESUME_GRACE = 10.0
WRITE_EVERY = 0.1
"""A stream writes at most this often: lines that arrive together leave in one write."""
KEEPALIVE = 10.0
MAX_CHANNELS_LISTED = 1000
MAX_FAILURES = 20
FAILURE_WINDOW = 60.0
"""Past ``MAX_FAILURES`` wrong tokens in ``FAILURE_WINDOW`` seconds, sign-in answers 429."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

Access = Literal["token", "open"]

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make a browser send "Origin: null"
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:;"
        " connect-src 'self' ws: wss:; frame-ancestors 'none'; form-action 'self'"
    ),
}


def access(config: ServerConfig) -> Access | None:
    """``token`` when a token is set; ``open`` on loopback with a generated development app;
    otherwise None (the console is off)."""
    if config.console_token is not None:
        return "token"
    if config.generated_app and is_loopback(config.host):
        return "open"
    return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def vendor_missing() -> list[str]:
    return [name for name in VENDOR_FILES if not (STATIC / "vendor" / name).is_file()]


@dataclass(slots=True)
class Session:
    csrf: str
    expires: float


class Sessions:
    """Signed-in browsers, as signed cookies: ``nonce.expiry.mac``.

    The MAC key is derived from the console token, so every process that has the token accepts
    the cookie (``--workers``, a restart), and a new token signs everyone out. Without a token
    (loopback, development app) the key is random per process. The CSRF token is derived from
    the nonce with the same key. Sign-out revokes the nonce in this process (kept until it
    would have expired anyway, at most ``MAX_SESSIONS``).
    """

    def __init__(self, token: bytes | None) -> None:
        seed = token if token is not None else secrets.token_bytes(32)
        self._key = hmac.new(seed, b"reverbpy console session", hashlib.sha256).digest()
        self._revoked: dict[str, float] = {}

    def _mac(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def new(self, now: float) -> tuple[str, Session]:
        nonce = secrets.token_urlsafe(24)
        expires = int(now + SESSION_SECONDS)
        cookie = f"{nonce}.{expires}.{self._mac(f'{nonce}.{expires}')}"
        return cookie, Session(self._mac(f"csrf.{nonce}"), expires)

    def get(self, cookie: str | None, now: float) -> Session | None:
        if not cookie or cookie.count(".") != 2:
            return None
        nonce, expires, mac = cookie.split(".")
        if not hmac.compare_digest(mac.encode(), self._mac(f"{nonce}.{expires}").encode()):
            return None
        if not expires.isdigit() or int(expires) <= now or nonce in self._revoked:
            return None
        return Session(self._mac(f"csrf.{nonce}"), int(expires))

    def end(self, cookie: str | None, now: float) -> None:
        session = self.get(cookie, now)
        if session is None or cookie is None:
            return
        self._revoked = {n: t for n, t in self._revoked.items() if t > now}
        while len(self._revoked) >= MAX_SESSIONS:
            del self._revoked[next(iter(self._revoked))]
        self._revoked[cookie.split(".")[0]] = session.expires


@dataclass(slots=True, eq=False)
class _Stream:
    """One console's tap, kept across the browser's reconnections."""

    id: str
    session: str
    tap: Tap
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    last_sample: float = 0.0
    parked: asyncio.TimerHandle | None = None


def _json(data: Any, status: int = 200) -> web.Response:
    return json(data, status, SECURITY_HEADERS)


class Console:
    """The console of one server; ``server.create_app`` builds it when ``access`` allows."""

    def __init__(
        self,
        *,
        hub: Hub,
        webhooks: Webhooks,
        http_api: HttpApi,
        config: ServerConfig,
        wire: Wire = WIRE,
    ) -> None:
        mode = access(config)
        assert mode is not None, "the console is off: see console.web.access"
        self.mode: Access = mode
        self.hub = hub
        self.webhooks = webhooks
        self.http_api = http_api
        self.config = config
        self.wire = wire
        self.prefix = f"{config.path}/console"
        self._token = config.console_token.reveal().encode() if config.console_token else None
        self.feed = Feed(on_change=self._observe)
        self.sessions = Sessions(self._token)
        self.series: dict[str, Series] = {}
        self.interval = config.console_sample_interval
        self._streams: dict[str, _Stream] = {}
        self.resume_grace = RESUME_GRACE
        self._failures: deque[float] = deque()
        self._closing = False
        self.cluster = config.scaling.adapter != "memory"

    def _observe(self, feed: Feed | None) -> None:
        """The one switch: the parts report to the feed only while a stream is open."""
        self.hub.observer = feed
        self.webhooks.observer = feed

    # --- routes --------------------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        p = self.prefix
        table = [
            web.get(p, self.page, name="console"),
            web.get(p + "/", self.page),
            web.post(p + "/login", self.login),
            web.post(p + "/logout", self.logout),
            web.get(p + "/api/apps", self.apps),
            web.get(p + "/api/overview", self.overview),
            web.get(p + "/api/channels", self.channels),
            web.get(p + "/api/channel", self.channel),
            web.post(p + "/api/events", self.create_event),
            web.get(p + "/stream", self.stream),
            web.get(p + "/static/{name}", self.static),
            web.get(p + "/static/vendor/{name}", self.vendor),
        ]
        if self.mode == "token":
            return table
        return [web.route(r.method, r.path, self._loopback_only(r.handler)) for r in table]

    @staticmethod
    def _loopback_only(handler: Handler) -> Handler:
        """Without a token, only this machine's own browsers: never a client a proxy (even a
        local one) forwards."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            forwarded = "X-Forwarded-For" in request.headers or "Forwarded" in request.headers
            if forwarded or not is_loopback(request.remote or ""):
                return _json({"error": "the console without a token is for loopback only"}, 403)
            return await handler(request)

        return guarded

    # --- sessions ------------------------------------------------------------------------------

    def _session(self, request: web.Request) -> tuple[str, Session] | None:
        sid = request.cookies.get(COOKIE)
        session = self.sessions.get(sid, time.time())
        return None if session is None or sid is None else (sid, session)

    def _set_cookie(self, response: web.StreamResponse, sid: str) -> None:
        response.set_cookie(
            COOKIE,
            sid,
            path=self.prefix,
            httponly=True,
            samesite="Strict",
            secure=self.config.tls_cert is not None,
            max_age=int(SESSION_SECONDS),
        )

    def _same_origin(self, request: web.Request) -> bool:
        """A browser's POST names where it comes from; it must be this server."""
        origin = request.headers.get("Origin")
        if origin is None or origin == "null":
            return origin is None
        return urlsplit(origin).netloc == request.host

    # --- pages ---------------------------------------------------------------------------------

    def _render(self, name: str, **values: str) -> str:
        text = (PAGES / name).read_text(encoding="utf-8")
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", html.escape(value, quote=True))
        return text

    def _page(self, body: str, status: int = 200) -> web.Response:
        return web.Response(
            text=body, status=status, content_type="text/html", headers=SECURITY_HEADERS
        )

    async def page(self, request: web.Request) -> web.StreamResponse:
        found = self._session(request)
        if found is None and self.mode == "open":
            sid, session = self.sessions.new(time.time())
            found = (sid, session)
            response = self._console_page(session)
            self._set_cookie(response, sid)
            return response
        if found is None:
            return self._page(self._render("login.html", base=self.prefix, error=""))
        return self._console_page(found[1])

    def _console_page(self, session: Session) -> web.Response:
        missing = vendor_missing()
        notice = (
            "Chart and client assets are missing from this installation ("
            + ", ".join(missing)
            + "): build them with `make reverbpy/console/static/vendor/.installed`."
            if missing
            else ""
        )
        return self._page(
            self._render(
                "console.html",
                base=self.prefix,
                csrf=session.csrf,
                notice=notice,
                max_lines=str(MAX_LINES_PER_SECOND),
            )
        )

    async def login(self, request: web.Request) -> web.StreamResponse:
        if self._token is None:  # open mode: nothing to sign in with
            return self._see_other()
        now = time.monotonic()
        while self._failures and self._failures[0] < now - FAILURE_WINDOW:
            self._failures.popleft()
        if len(self._failures) >= MAX_FAILURES:
            page = self._render("login.html", base=self.prefix, error="Too many attempts: wait.")
            return self._page(page, status=429)
        form = await request.post()
        given = form.get("token")
        ok = isinstance(given, str) and hmac.compare_digest(given.encode(), self._token)
        if not ok or not self._same_origin(request):
            self._failures.append(now)
            await asyncio.sleep(0.2)  # a guesser gets a few tries a second per connection
            page = self._render("login.html", base=self.prefix, error="Wrong token.")
            return self._page(page, status=401)
        sid, _ = self.sessions.new(time.time())
        response = self._see_other()
        self._set_cookie(response, sid)
        return response

    def _see_other(self) -> web.Response:
        return web.Response(status=303, headers={**SECURITY_HEADERS, "Location": self.prefix})

    async def logout(self, request: web.Request) -> web.StreamResponse:
        found = self._session(request)
        if found is not None and self._same_origin(request):
            self.sessions.end(found[0], time.time())
        response = self._see_other()
        response.del_cookie(COOKIE, path=self.prefix)
        return response

    async def static(self, request: web.Request) -> web.StreamResponse:
        return self._file(STATIC, request.match_info["name"], ("console.js", "console.css"))

    async def vendor(self, request: web.Request) -> web.StreamResponse:
        return self._file(STATIC / "vendor", request.match_info["name"], VENDOR_FILES)

    def _file(self, folder: Path, name: str, allowed: tuple[str, ...]) -> web.StreamResponse:
        path = folder / name
        if name not in allowed:
            raise web.HTTPNotFound()
        if not path.is_file():
            return _json({"error": f"{name} is missing: {vendor_hint()}"}, 404)
        kind = "text/css" if name.endswith(".css") else "text/javascript"
        return web.Response(
            body=path.read_bytes(),
            content_type=kind,
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    # --- JSON ----------------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> Session:
        found = self._session(request)
        if found is None:
            raise web.HTTPUnauthorized(
                body=orjson.dumps({"error": "sign in to the console"}),
                content_type="application/json",
            )
        return found[1]

    def _app(self, request: web.Request) -> AppState:
        app_id = request.query.get("app", "")
        state = self.hub.registry.by_id(app_id)
        if state is None:
            raise web.HTTPNotFound(
                body=orjson.dumps({"error": f"no app {app_id!r}"}),
                content_type="application/json",
            )
        return state

    async def apps(self, request: web.Request) -> web.Response:
        self._authorized(request)
        apps = [
            {"id": s.app.id, "key": s.app.key, "enabled": s.app.enabled}
            for s in self.hub.registry.apps.values()
        ]
        return _json(
            {
                "apps": apps,
                "adapter": self.config.scaling.adapter,
                "max_lines_per_second": MAX_LINES_PER_SECOND,
                "sample_interval": self.interval,
                "assets_missing": vendor_missing(),
            }
        )

    def _scope(self) -> dict[str, str]:
        cluster = "cluster" if self.cluster else "node"
        return {
            "connections": cluster,
            "channels": cluster,
            "users": "node",
            "messages_in": "node",
            "messages_out": "node",
            "api_requests": "node",
            "webhooks_queued": "node, all apps",
            "webhooks_failed": "node, all apps",
        }

    async def overview(self, request: web.Request) -> web.Response:
        self._authorized(request)
        state = self._app(request)
        totals = await self._totals(state)
        series = self.series.get(state.app.id)
        return _json(
            {
                "app": state.app.id,
                "now": {
                    "connections": totals.connections,
                    "channels": totals.channels,
                    "users": totals.users,
                    "webhooks_queued": totals.webhooks_queued,
                    "webhooks_failed": totals.webhooks_failed,
                    "messages_in": totals.messages_in,
                    "messages_out": totals.messages_out,
                    "api_requests": totals.api_requests,
                },
                "history": series.history() if series is not None else [],
                "scope": self._scope(),
                "interval": self.interval,
            }
        )

    async def channels(self, request: web.Request) -> web.Response:
        self._authorized(request)
        state = self._app(request)
        prefix = request.query.get("prefix", "")
        counts = await self.hub.channel_counts(state)
        names = sorted(n for n in counts if n.startswith(prefix))
        listed = [
            {"name": n, "type": channel_kind(n).type.value, "subscription_count": counts[n]}
            for n in names[:MAX_CHANNELS_LISTED]
        ]
        return _json(
            {
                "channels": listed,
                "total": len(names),
                "truncated": len(names) > MAX_CHANNELS_LISTED,
                "scope": "cluster" if self.cluster else "node",
            }
        )

    async def channel(self, request: web.Request) -> web.Response:
        self._authorized(request)
        state = self._app(request)
        name = request.query.get("name", "")
        kind = channel_kind(name)
        counts = await self.hub.channel_counts(state)
        answer: dict[str, Any] = {
            "name": name,
            "type": kind.type.value,
            "subscription_count": counts.get(name, 0),
        }
        if kind.type is ChannelType.PRESENCE:
            members = await self.hub.presence_members(state, name)
            answer["members"] = [{"id": m.user_id, "info": m.user_info} for m in members]
        if kind.cache:
            cached = state.cached(name, time.monotonic())
            if cached is not None:
                answer["cached"] = {"event": cached.event, "data": cached.data}
            else:
                shared = await self.hub.adapter.cache_get(state, name)
                answer["cached"] = (
                    None if shared is None else {"event": shared[0], "data": shared[1]}
                )
        return _json(answer)

    # --- the event creator ---------------------------------------------------------------------

    def _csrf_ok(self, request: web.Request, session: Session) -> bool:
        given = request.headers.get("X-CSRF-Token", "")
        return self._same_origin(request) and hmac.compare_digest(
            given.encode(), session.csrf.encode()
        )

    async def create_event(self, request: web.Request) -> web.Response:
        session = self._authorized(request)
        if not self._csrf_ok(request, session):
            return _json({"error": "missing or wrong CSRF token"}, 403)
        try:
            form = orjson.loads(await request.read())
            app_id, channels, name, data = (
                form["app"], form["channels"], form["name"], form["data"]
            )  # fmt: skip
            if not isinstance(data, str):
                raise TypeError
            orjson.loads(data)
        except (ValueError, KeyError, TypeError):
            return _json(
                {"error": "expected {app, channels, name, data}, with data a JSON text"}, 400
            )
        body: dict[str, Any] = {"name": name, "channels": channels, "data": data}
        socket_id = form.get("socket_id")
        if socket_id:
            body["socket_id"] = socket_id
        status, answer = await self.send_signed(str(app_id), orjson.dumps(body))
        return _json({"status": status, "answer": answer})

    async def send_signed(self, app_id: str, body: bytes) -> tuple[int, Any]:
        """``POST /apps/{app_id}/events`` with ``body``, signed here with the app's secret and
        answered by the HTTP API's own rules (``protocol.api.handle_trigger``), counted in its
        metrics like any other call."""
        start = time.perf_counter()
        try:
            served = self.http_api.lookup(app_id)
        except api.ApiError as exc:
            return exc.status, {"error": exc.message}
        path = api.EVENTS.pattern.replace("{app_id}", app_id)
        query = {
            "auth_key": served.app.key,
            "auth_timestamp": str(int(time.time())),
            "auth_version": "1.0",
            "body_md5": body_md5(body),
        }
        query["auth_signature"] = sign_request("POST", path, query, served.app.secret.reveal())
        result = api.handle_trigger(
            served,
            batch=False,
            paths=(path,),
            query=urlencode(query),
            body=body,
            now=time.time(),
            tick=time.monotonic(),
        )
        if isinstance(result, tuple):
            status, answer = result[0], orjson.loads(result[1])
        else:
            status, answer = 200, await info_answer(self.hub, served.state, result, batch=False)
        self.http_api.record(api.EVENTS, app_id, status, start)
        return status, answer

    # --- the live stream -----------------------------------------------------------------------

    def _open_stream(self, request: web.Request, sid: str, flt: Filter) -> _Stream:
        resumed = self._streams.get(request.headers.get("Last-Event-ID", ""))
        if resumed is not None and resumed.session == sid and resumed.tap.filter == flt:
            if resumed.parked is not None:
                resumed.parked.cancel()
                resumed.parked = None
            return resumed
        stream = _Stream(secrets.token_urlsafe(16), sid, Tap(flt))
        stream.tap.wake = stream.wake.set
        self._streams[stream.id] = stream
        self.feed.open(stream.tap)
        return stream

    def _drop_stream(self, stream: _Stream) -> None:
        self._streams.pop(stream.id, None)
        self.feed.close(stream.tap)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        self._authorized(request)
        found = self._session(request)
        assert found is not None
        state = self._app(request)
        q = request.query
        flt = Filter(
            state.app.id,
            channel=q.get("channel", "")[:200],
            event=q.get("event", "")[:200],
            socket_id=q.get("socket_id", "")[:50],
        )
        stream = self._open_stream(request, found[0], flt)
        response = web.StreamResponse(
            headers={
                **SECURITY_HEADERS,
                "Content-Type": "text/event-stream",
                "X-Accel-Buffering": "no",
            }
        )
        loop = asyncio.get_running_loop()
        try:
            await response.prepare(request)
            await response.write(
                f"retry: 500\nid: {stream.id}\nevent: hello\ndata: {{}}\n\n".encode()
            )
            deadline = loop.time() + STREAM_SECONDS
            while not self._closing and loop.time() < deadline:
                stream.wake.clear()
                chunk = self._pending(stream, state.app.id)
                if chunk:
                    await response.write(chunk)
                    await asyncio.sleep(WRITE_EVERY)
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(KEEPALIVE, max(0.0, deadline - loop.time()))):
                        await stream.wake.wait()
                        continue
                await response.write(b": keep-alive\n\n")
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            if self._closing:
                self._drop_stream(stream)
            else:
                stream.parked = loop.call_later(self.resume_grace, self._drop_stream, stream)
        return response

    def _pending(self, stream: _Stream, app_id: str) -> bytes:
        out = b""
        lines, skipped = stream.tap.take()
        if lines or skipped:
            payload = {"lines": [x.to_json() for x in lines], "skipped": skipped}
            out += b"id: " + stream.id.encode() + b"\nevent: lines\ndata: " + orjson.dumps(payload)
            out += b"\n\n"
        series = self.series.get(app_id)
        if series is not None and series.samples:
            sample = series.samples[-1]
            if sample["time"] > stream.last_sample:
                stream.last_sample = sample["time"]
                out += b"event: sample\ndata: " + orjson.dumps(sample) + b"\n\n"
        return out

    async def shutdown(self, app: web.Application) -> None:
        """End every stream at once (``on_shutdown``): a console must not hold the stop."""
        self._closing = True
        for stream in list(self._streams.values()):
            stream.wake.set()

    # --- charts --------------------------------------------------------------------------------

    async def _totals(self, state: AppState) -> Totals:
        app_id = state.app.id
        wire = self.wire
        return Totals(
            time=time.time(),
            connections=await self.hub.connection_count(state),
            channels=len(await self.hub.channel_counts(state)),
            users=len(state.users),
            webhooks_queued=self.webhooks.queued,
            messages_in=wire.messages_in.get(app_id, 0),
            messages_out=wire.messages_out.get(app_id, 0),
            api_requests=sum(n for (_, a, _), n in list(wire.http_requests.items()) if a == app_id),
            webhooks_failed=self.webhooks.failed,
        )

    async def sample(self) -> None:
        """One point for every app's charts; wakes the open streams to send it."""
        for app_id, state in list(self.hub.registry.apps.items()):
            series = self.series.get(app_id)
            if series is None:
                series = self.series[app_id] = Series(self.interval)
            series.add(await self._totals(state))
        for app_id in [a for a in self.series if a not in self.hub.registry.apps]:
            del self.series[app_id]
        for stream in self._streams.values():
            stream.wake.set()

    async def sampler(self, app: web.Application) -> AsyncIterator[None]:
        """``cleanup_ctx``: sample every ``interval`` seconds while the server runs."""

        async def loop() -> None:
            while True:
                try:
                    await self.sample()
                except Exception:  # a failed gather must not stop the charts for good
                    log.exception("console sample failed")
                await asyncio.sleep(self.interval)

        missing = vendor_missing()
        if missing:
            log.warning("console assets missing (%s): %s", ", ".join(missing), vendor_hint())
        task = asyncio.create_task(loop())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for stream in list(self._streams.values()):
            if stream.parked is not None:
                stream.parked.cancel()
            self._drop_stream(stream)


def vendor_hint() -> str:
    return "run `make reverbpy/console/static/vendor/.installed` in a source checkout"
