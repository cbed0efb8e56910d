"""Typed keys for the state the composition root (``server``, ``lifecycle``) shares."""

from __future__ import annotations

from aiohttp import web

from reverbpy.config import ServerConfig
from reverbpy.hub import Hub

HUB = web.AppKey("hub", Hub)
CONFIG = web.AppKey("config", ServerConfig)
