"""Request handlers: thin, they parse input, call `db`/`rules`/`broadcasting` and render.

Pages are Jinja2 templates; the dashboard's JSON endpoints (`reservations.json`, the status
change) are what its JavaScript calls. `/broadcasting/auth` is Laravel's endpoint, answered with
the pusher SDK's own `authenticate()`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from . import auth
from .broadcasting import order_payload
from .channels import ADMIN_CHANNEL, ChannelRequest, may_listen, order_channel, order_id_of
from .db import Admin, Booking
from .keys import BROADCASTER, CONFIG, DB, TODAY
from .rules import BookingError, Status, parse_status

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

AdminHandler = Callable[[web.Request, Admin], Awaitable[web.StreamResponse]]
STATUSES = [s.value for s in Status]
#: Messages the plain table shows after a redirect, by code: never text taken from the URL.
NOTICES = {"conflict": "Another booking now holds these dates; the status was not changed."}


def echo_config(request: web.Request) -> dict[str, Any]:
    """Options for `new Echo({...})` in the browser, from the same REVERB_* settings."""
    config = request.app[CONFIG]
    return {
        "broadcaster": "reverb",
        "key": config.app_key,
        "wsHost": config.reverb_host,
        "wsPort": config.reverb_port,
        "wssPort": config.reverb_port,
        "forceTLS": config.reverb_tls,
        "enabledTransports": ["ws", "wss"],
        "authEndpoint": "/broadcasting/auth",
    }


async def current_admin(request: web.Request) -> Admin | None:
    admin_id = auth.get_session(request).admin_id
    return None if admin_id is None else await request.app[DB].get_admin(admin_id)


def admin_required(handler: AdminHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Pages redirect to the login form; JSON callers get 401 instead of a redirect."""

    async def wrapper(request: web.Request) -> web.StreamResponse:
        admin = await current_admin(request)
        if admin is None:
            if _wants_json(request):
                raise web.HTTPUnauthorized(text="Sign in first.")
            raise web.HTTPFound(f"/admin/login?next={request.path}")
        return await handler(request, admin)

    return wrapper


def base_context(request: web.Request, **extra: Any) -> dict[str, Any]:
    return {
        "csrf_token": auth.get_session(request).csrf_token,
        "echo": echo_config(request),
        **extra,
    }


def stats(bookings: list[Booking]) -> dict[str, int]:
    return {
        "pending": sum(b.status is Status.PENDING for b in bookings),
        "confirmed": sum(b.status is Status.CONFIRMED for b in bookings),
        "total": len(bookings),
    }


# -- guest side ------------------------------------------------------------------------------


@routes.get("/", name="index")
async def index(request: web.Request) -> web.Response:
    villas = await request.app[DB].list_villas()
    return aiohttp_jinja2.render_template(
        "index.html", request, base_context(request, villas=villas)
    )


@routes.get("/villas/{id:\\d+}", name="villa")
async def villa_page(request: web.Request) -> web.Response:
    villa = await request.app[DB].get_villa(int(request.match_info["id"]))
    if villa is None:
        raise web.HTTPNotFound(text="No such villa.")
    today = request.app[TODAY]()
    return aiohttp_jinja2.render_template(
        "villa.html", request, base_context(request, villa=villa, form={}, errors={}, today=today)
    )


@routes.post("/villas/{id:\\d+}/bookings", name="book")
async def create_booking(request: web.Request) -> web.Response:
    db = request.app[DB]
    villa_id = int(request.match_info["id"])
    form = {k: str(v) for k, v in (await request.post()).items() if k != "_token"}
    today = request.app[TODAY]()
    try:
        booking = await db.create_booking(villa_id, form, today=today)
    except BookingError as exc:
        villa = await db.get_villa(villa_id)
        return aiohttp_jinja2.render_template(
            "villa.html",
            request,
            base_context(request, villa=villa, form=form, errors=exc.errors, today=today),
            status=422,
        )
    if booking is None:
        raise web.HTTPNotFound(text="No such villa.")
    await request.app[BROADCASTER].order_created(booking)
    raise web.HTTPSeeOther(f"/bookings/{booking.id}?token={booking.token}")


@routes.get("/bookings/{id:\\d+}", name="booking")
async def booking_page(request: web.Request) -> web.Response:
    booking = await request.app[DB].get_booking(int(request.match_info["id"]))
    token = request.query.get("token", "")
    if booking is None or not _token_ok(token, booking.token):
        # Same answer for "no such booking" and "wrong token": ids must not be probeable.
        raise web.HTTPNotFound(text="Booking not found. Use the link you received when booking.")
    return aiohttp_jinja2.render_template(
        "booking.html",
        request,
        base_context(request, booking=booking, channel=order_channel(booking.id), token=token),
    )


@routes.get("/bookings/{id:\\d+}/status.json", name="booking_status")
async def booking_status(request: web.Request) -> web.Response:
    """The guest page re-reads its status here after a reconnection (events may have been missed)."""
    booking = await request.app[DB].get_booking(int(request.match_info["id"]))
    if booking is None or not _token_ok(request.query.get("token", ""), booking.token):
        raise web.HTTPNotFound(text="Booking not found.")
    return web.json_response({"order": order_payload(booking)})


# -- admin side ------------------------------------------------------------------------------


@routes.get("/admin/login", name="login")
async def login_form(request: web.Request) -> web.Response:
    return aiohttp_jinja2.render_template(
        "login.html", request, base_context(request, error=None, email="", next=_next(request))
    )


@routes.post("/admin/login")
async def login(request: web.Request) -> web.Response:
    data = await request.post()
    email, password = str(data.get("email", "")).strip(), str(data.get("password", ""))
    admin = await request.app[DB].find_admin(email)
    # Hash even for unknown emails so response time does not reveal which emails exist.
    stored = admin.password_hash if admin else auth.dummy_hash()
    ok = await asyncio.to_thread(auth.verify_password, password, stored)
    if admin is None or not ok:
        return aiohttp_jinja2.render_template(
            "login.html",
            request,
            base_context(
                request,
                error="These credentials do not match our records.",
                email=email,
                next=_next(request),
            ),
            status=422,
        )
    session = auth.get_session(request)
    session.clear()  # new CSRF token on sign-in: no token fixation across the privilege change
    session["admin_id"] = admin.id
    raise web.HTTPSeeOther(_next(request, str(data.get("next", ""))))


@routes.post("/admin/logout", name="logout")
async def logout(request: web.Request) -> web.Response:
    auth.get_session(request).clear()
    raise web.HTTPSeeOther("/admin/login")


@routes.get("/admin", name="admin")
async def admin_home(request: web.Request) -> web.Response:
    raise web.HTTPFound("/admin/reservations/realtime")


@routes.get("/admin/reservations", name="reservations")
@admin_required
async def reservations(request: web.Request, admin: Admin) -> web.Response:
    bookings = await request.app[DB].list_bookings()
    return aiohttp_jinja2.render_template(
        "reservations.html",
        request,
        base_context(
            request,
            admin=admin,
            bookings=bookings,
            stats=stats(bookings),
            statuses=STATUSES,
            notice=NOTICES.get(request.query.get("notice", "")),
        ),
    )


@routes.get("/admin/reservations/realtime", name="realtime")
@admin_required
async def realtime(request: web.Request, admin: Admin) -> web.Response:
    bookings = await request.app[DB].list_bookings()
    return aiohttp_jinja2.render_template(
        "realtime.html",
        request,
        base_context(
            request,
            admin=admin,
            bookings=bookings,
            stats=stats(bookings),
            channel=ADMIN_CHANNEL,
            state={"orders": [order_payload(b) for b in bookings], "statuses": STATUSES},
        ),
    )


@routes.get("/admin/reservations.json", name="reservations_json")
@admin_required
async def reservations_json(request: web.Request, admin: Admin) -> web.Response:
    """The full state, which the dashboard re-reads after every (re)connection."""
    bookings = await request.app[DB].list_bookings()
    return web.json_response(
        {"orders": [order_payload(b) for b in bookings], "stats": stats(bookings)}
    )


@routes.post("/admin/reservations/{id:\\d+}/status", name="change_status")
@admin_required
async def change_status(request: web.Request, admin: Admin) -> web.Response:
    """Apply a status change; JSON for the dashboard's fetch, a redirect for the plain form.

    The broadcast excludes the caller's socket (`X-Socket-ID`), Laravel's `toOthers()`: the
    dashboard that made the change updates itself from this response instead.
    """
    wants_json = _wants_json(request)
    if request.content_type == "application/json":
        body = await request.json()
        raw_status = str(body.get("status", "")) if isinstance(body, dict) else ""
    else:
        raw_status = str((await request.post()).get("status", ""))
    booking_id = int(request.match_info["id"])
    try:
        change = await request.app[DB].change_status(booking_id, parse_status(raw_status))
    except BookingError as exc:
        if wants_json:
            return web.json_response({"errors": exc.errors}, status=422)
        raise web.HTTPSeeOther("/admin/reservations?notice=conflict") from None
    if change is None:
        raise web.HTTPNotFound(text="No such booking.")
    if change.changed:
        await request.app[BROADCASTER].order_status_changed(
            change, socket_id=request.headers.get("X-Socket-ID")
        )
    if wants_json:
        return web.json_response(
            {"order": order_payload(change.booking), "old_status": change.old_status.value}
        )
    raise web.HTTPSeeOther("/admin/reservations")


# -- broadcasting ----------------------------------------------------------------------------


@routes.post("/broadcasting/auth", name="broadcasting_auth")
async def broadcasting_auth(request: web.Request) -> web.Response:
    """Laravel's channel authorization endpoint: form fields `socket_id` and `channel_name`
    (plus `booking_token`, sent by the guest page through Echo's `auth.params`)."""
    data = await request.post()
    socket_id = str(data.get("socket_id", ""))
    channel_name = str(data.get("channel_name", ""))
    token = data.get("booking_token")
    admin = await current_admin(request)
    order_id = order_id_of(channel_name)
    booking = await request.app[DB].get_booking(order_id) if order_id is not None else None
    allowed = may_listen(
        ChannelRequest(channel_name, admin is not None, str(token) if token else None),
        booking_token=booking.token if booking else None,
    )
    if not allowed:
        raise web.HTTPForbidden(text="Not allowed to listen on this channel.")
    try:
        return web.json_response(request.app[BROADCASTER].authorize(channel_name, socket_id))
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None


def _wants_json(request: web.Request) -> bool:
    return (
        "application/json" in request.headers.get("Accept", "")
        or request.content_type == "application/json"
    )


def _token_ok(given: str, stored: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), stored.encode())


def _next(request: web.Request, candidate: str | None = None) -> str:
    """Where to go after login: a local admin path only (no open redirect)."""
    target = candidate if candidate is not None else request.query.get("next", "")
    if target.startswith("/admin/") and not target.startswith("//"):
        return target
    return "/admin/reservations/realtime"
