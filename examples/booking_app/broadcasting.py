"""Publishing events to reverbpy through the official `pusher` SDK, as Laravel's broadcaster does.

The SDK's aiohttp backend (`pusher.aiohttp.AsyncIOBackend`) makes each trigger a plain awaitable
HTTP call to `POST /apps/{id}/events`. A failed publish is logged and swallowed: a booking must
not be lost because the WebSocket server is restarting; dashboards re-read the state when they
reconnect.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pusher  # type: ignore[import-untyped]
from pusher.aiohttp import AsyncIOBackend  # type: ignore[import-untyped]

from .channels import ADMIN_CHANNEL, order_channel
from .config import BookingConfig
from .db import Booking, StatusChange, stamp

log = logging.getLogger(__name__)

ORDER_CREATED = "order.created"
ORDER_STATUS_CHANGED = "order.status.changed"
_SOCKET_ID = re.compile(r"\d+\.\d+")


def order_payload(booking: Booking) -> dict[str, Any]:
    """The order fields every event carries (the token stays server-side)."""
    return {
        "id": booking.id,
        "guest_name": booking.guest_name,
        "villa_id": booking.villa_id,
        "villa_name": booking.villa_name,
        "check_in": booking.check_in.isoformat(),
        "check_out": booking.check_out.isoformat(),
        "nights": booking.nights,
        "guests": booking.guests,
        "total": booking.total,
        "total_formatted": booking.total_formatted,
        "status": booking.status.value,
        "created_at": stamp(booking.created_at),
        "updated_at": stamp(booking.updated_at),
    }


def order_created_payload(booking: Booking) -> dict[str, Any]:
    return {"order": order_payload(booking)}


def status_changed_payload(change: StatusChange) -> dict[str, Any]:
    return {
        "order": order_payload(change.booking),
        "old_status": change.old_status.value,
        "new_status": change.booking.status.value,
    }


def make_pusher(config: BookingConfig) -> pusher.Pusher:
    return pusher.Pusher(
        app_id=config.app_id,
        key=config.app_key,
        secret=config.app_secret,
        host=config.reverb_host,
        port=config.reverb_port,
        ssl=config.reverb_tls,
        timeout=config.publish_timeout,
        backend=AsyncIOBackend,
    )


class Broadcaster:
    """The app's two events; `socket_id` is Echo's `X-Socket-ID`, excluded from the fan-out."""

    def __init__(self, client: pusher.Pusher) -> None:
        self.client = client

    async def order_created(self, booking: Booking) -> bool:
        return await self._trigger([ADMIN_CHANNEL], ORDER_CREATED, order_created_payload(booking))

    async def order_status_changed(self, change: StatusChange, *, socket_id: str | None) -> bool:
        return await self._trigger(
            [ADMIN_CHANNEL, order_channel(change.booking.id)],
            ORDER_STATUS_CHANGED,
            status_changed_payload(change),
            # A malformed header must not cost everyone the event: drop it instead.
            socket_id=socket_id if socket_id and _SOCKET_ID.fullmatch(socket_id) else None,
        )

    def authorize(self, channel_name: str, socket_id: str) -> dict[str, Any]:
        """The signed `{"auth": "key:signature"}` answer; ValueError on a malformed socket id."""
        result: dict[str, Any] = self.client.authenticate(channel=channel_name, socket_id=socket_id)
        return result

    async def _trigger(
        self, channels: list[str], event: str, data: dict[str, Any], *, socket_id: str | None = None
    ) -> bool:
        try:
            await self.client.trigger(channels, event, data, socket_id=socket_id)
        except Exception:
            # The booking is already stored; a missed event is repaired by the dashboard's resync.
            log.warning("could not publish %s to %s", event, channels, exc_info=True)
            return False
        return True
