"""Typed keys for what the app stores on `web.Application` (no stringly-typed app state)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from aiohttp import web

from .broadcasting import Broadcaster
from .config import BookingConfig
from .db import Database

CONFIG = web.AppKey("config", BookingConfig)
DB = web.AppKey("db", Database)
BROADCASTER = web.AppKey("broadcaster", Broadcaster)
Clock = Callable[[], date]
#: Today's date; injectable so tests can pin the calendar.
TODAY: web.AppKey[Clock] = web.AppKey("today")
