"""How nodes share traffic: the adapter seam, chosen by name and imported lazily."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reverbpy.config import ServerConfig
    from reverbpy.scaling.base import Adapter

ADAPTERS = {
    "memory": "reverbpy.scaling.memory:MemoryAdapter",
    "redis": "reverbpy.scaling.redis:RedisAdapter",
    "nats": "reverbpy.scaling.nats:NatsAdapter",
}


def create_adapter(config: ServerConfig) -> Adapter:
    """Import the configured adapter only when chosen: redis stays an optional dependency."""
    module_name, _, cls_name = ADAPTERS[config.scaling.adapter].partition(":")
    cls = getattr(import_module(module_name), cls_name)
    adapter: Adapter = cls(config)
    return adapter
