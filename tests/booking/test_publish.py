"""The booking app against a real reverbpy process: the official pusher SDK (aiohttp backend)
publishes, raw WebSocket clients authorized by `/broadcasting/auth` receive.

No browser here; this pins the server-side half of the demo: signatures reverbpy accepts,
channel names, event names and payloads, and `toOthers()` exclusion via `X-Socket-ID`.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient

from examples.booking_app.app import create_app
from tests.booking.conftest import TODAY, ClientFactory, book, csrf_token, login, make_config
from tests.conftest import ServerProcess

Client = TestClient[web.Request, web.Application]
TIMEOUT = 5.0


class Socket:
    """A minimal Pusher protocol 7 client, enough to subscribe to private channels."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, socket_id: str) -> None:
        self.ws = ws
        self.socket_id = socket_id

    @classmethod
    async def connect(cls, session: aiohttp.ClientSession, server: ServerProcess) -> Socket:
        ws = await session.ws_connect(server.ws_url, timeout=aiohttp.ClientWSTimeout(ws_close=2))
        hello = await cls._read(ws)
        assert hello["event"] == "pusher:connection_established", hello
        return cls(ws, json.loads(hello["data"])["socket_id"])

    async def subscribe(self, app: Client, channel: str, csrf: str, **params: str) -> None:
        response = await app.post(
            "/broadcasting/auth",
            data={"socket_id": self.socket_id, "channel_name": channel, **params},
            headers={"X-CSRF-TOKEN": csrf},
        )
        assert response.status == 200, await response.text()
        auth = (await response.json())["auth"]
        await self.ws.send_str(
            json.dumps({"event": "pusher:subscribe", "data": {"channel": channel, "auth": auth}})
        )
        reply = await self.next_event()
        assert reply["event"] == "pusher_internal:subscription_succeeded", reply

    async def next_event(self) -> dict[str, Any]:
        """The next message that is not a ping, within TIMEOUT seconds."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                message = await self._read(self.ws)
                if message["event"] != "pusher:ping":
                    return message

    @staticmethod
    async def _read(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
        msg = await ws.receive(timeout=TIMEOUT)
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        data: dict[str, Any] = json.loads(msg.data)
        return data


async def booking_client(
    aiohttp_client: ClientFactory, tmp_path: Path, server: ServerProcess
) -> Client:
    config = make_config(
        tmp_path,
        app_id=server.app_id,
        app_key=server.key,
        app_secret=server.secret,
        reverb_host="127.0.0.1",
        reverb_port=server.port,
    )
    return await aiohttp_client(create_app(config, today=lambda: TODAY))


async def test_order_events_reach_authorized_subscribers(
    aiohttp_client: ClientFactory, tmp_path: Path, server: ServerProcess
) -> None:
    app = await booking_client(aiohttp_client, tmp_path, server)
    guest = await booking_client(aiohttp_client, tmp_path, server)  # a separate cookie jar
    async with aiohttp.ClientSession() as session:
        admin_csrf = await login(app)
        dashboard = await Socket.connect(session, server)
        other_dashboard = await Socket.connect(session, server)
        await dashboard.subscribe(app, "private-admin.orders", admin_csrf)
        await other_dashboard.subscribe(app, "private-admin.orders", admin_csrf)

        # A guest books: every dashboard hears order.created.
        booking_id, token = await book(guest)
        for sock in (dashboard, other_dashboard):
            event = await sock.next_event()
            assert (event["event"], event["channel"]) == ("order.created", "private-admin.orders")
            order = json.loads(event["data"])["order"]
            assert (order["id"], order["status"], order["total_formatted"]) == (
                booking_id,
                "pending",
                "Rp 4.500.000",
            )

        # The guest follows their own order with the token from the booking link.
        guest_socket = await Socket.connect(session, server)
        await guest_socket.subscribe(
            guest, f"private-order.{booking_id}", await csrf_token(guest), booking_token=token
        )

        # The first dashboard confirms; it is excluded (toOthers), everyone else hears it.
        response = await app.post(
            f"/admin/reservations/{booking_id}/status",
            json={"status": "confirmed"},
            headers={
                "X-CSRF-TOKEN": admin_csrf,
                "X-Socket-ID": dashboard.socket_id,
                "Accept": "application/json",
            },
        )
        assert response.status == 200
        for sock, channel in (
            (other_dashboard, "private-admin.orders"),
            (guest_socket, f"private-order.{booking_id}"),
        ):
            event = await sock.next_event()
            assert (event["event"], event["channel"]) == ("order.status.changed", channel)
            data = json.loads(event["data"])
            assert (data["old_status"], data["new_status"]) == ("pending", "confirmed")
            assert data["order"]["status"] == "confirmed"

        # Nothing for the sender: send a marker event after it and check that comes first.
        await book(guest, villa_id=2)
        assert (await dashboard.next_event())["event"] == "order.created"
        for sock in (dashboard, other_dashboard, guest_socket):
            await sock.ws.close()


async def test_booking_still_works_when_reverbpy_is_down(
    aiohttp_client: ClientFactory, tmp_path: Path, server: ServerProcess
) -> None:
    app = await booking_client(aiohttp_client, tmp_path, server)
    server.stop()
    booking_id, token = await book(app)  # the publish fails and is logged; the booking stands
    page = await app.get(f"/bookings/{booking_id}", params={"token": token})
    assert page.status == 200
