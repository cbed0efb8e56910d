"""Who may listen where: this app's `routes/channels.php`, as pure functions.

Two private channels exist. `private-admin.orders` carries every order to the dashboard and is
for signed-in admins only. `private-order.{id}` carries one booking's status to its guest, who
proves ownership with the unguessable token from the booking link (admins may listen too).
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass

ADMIN_CHANNEL = "private-admin.orders"
_ORDER_CHANNEL = re.compile(r"private-order\.(\d{1,18})")


def order_channel(booking_id: int) -> str:
    return f"private-order.{booking_id}"


@dataclass(frozen=True)
class ChannelRequest:
    """What the auth endpoint knows about the caller."""

    channel_name: str
    is_admin: bool
    booking_token: str | None = None


def order_id_of(channel_name: str) -> int | None:
    """The booking id in `private-order.{id}`, or None for any other channel."""
    match = _ORDER_CHANNEL.fullmatch(channel_name)
    return int(match.group(1)) if match else None


def may_listen(request: ChannelRequest, *, booking_token: str | None) -> bool:
    """Whether the caller may subscribe; `booking_token` is the stored token of the booking named
    by the channel (None if the channel names no booking or the booking does not exist)."""
    if request.channel_name == ADMIN_CHANNEL:
        return request.is_admin
    if order_id_of(request.channel_name) is None or booking_token is None:
        return False
    if request.is_admin:
        return True
    return request.booking_token is not None and hmac.compare_digest(
        request.booking_token.encode(), booking_token.encode()
    )
