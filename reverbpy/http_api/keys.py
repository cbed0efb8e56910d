"""Typed keys for state shared between the app, the middleware and the handlers."""

from __future__ import annotations

from aiohttp import web

from reverbpy.config import ServerConfig
from reverbpy.hub import Hub
from reverbpy.registry import AppState

HUB = web.AppKey("hub", Hub)
CONFIG = web.AppKey("config", ServerConfig)
APP_STATE = web.RequestKey("app_state", AppState)
BODY = web.RequestKey("body", bytes)
