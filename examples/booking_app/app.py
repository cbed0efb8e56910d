"""`create_app(config)`: the booking site as one aiohttp application.

Everything the handlers need is injected through typed `AppKey`s, so tests build the app with
their own database file, their own clock and a pusher client pointed at their own reverbpy.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import date, datetime
from pathlib import Path

import aiohttp_jinja2
import jinja2
import pusher  # type: ignore[import-untyped]
from aiohttp import web

from . import auth, views
from .broadcasting import Broadcaster, make_pusher
from .config import BookingConfig
from .db import Database
from .keys import BROADCASTER, CONFIG, DB, TODAY
from .rules import format_idr

HERE = Path(__file__).resolve().parent
VENDOR_FILES = ("pusher.min.js", "echo.iife.js")


def create_app(
    config: BookingConfig,
    *,
    today: Callable[[], date] = date.today,
    pusher_client: pusher.Pusher | None = None,
) -> web.Application:
    app = web.Application(
        middlewares=[auth.session_middleware(config.secret_key), auth.csrf_middleware]
    )
    app[CONFIG] = config
    app[DB] = Database(config.db_path)
    app[BROADCASTER] = Broadcaster(pusher_client or make_pusher(config))
    app[TODAY] = today

    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )
    env.filters["idr"] = format_idr
    env.filters["day"] = lambda d: d.strftime("%a %d %b %Y") if isinstance(d, date) else d
    env.filters["stamp"] = lambda t: t.strftime("%d %b %H:%M UTC") if isinstance(t, datetime) else t

    app.add_routes(views.routes)
    app.router.add_static("/static", HERE / "static", name="static")
    app.cleanup_ctx.append(_database)
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    """Create and seed the database before the first request."""
    config = app[CONFIG]
    password_hash = await asyncio.to_thread(auth.hash_password, config.admin_password)
    await app[DB].setup(
        admin_email=config.admin_email,
        admin_password_hash=password_hash,
        seed_demo_bookings=config.seed_demo_bookings,
        today=app[TODAY](),
    )
    yield


def vendor_missing() -> list[str]:
    """Browser builds not yet copied into static/vendor (run `make run` or `node vendor.mjs`)."""
    vendor = HERE / "static" / "vendor"
    return [name for name in VENDOR_FILES if not (vendor / name).is_file()]
