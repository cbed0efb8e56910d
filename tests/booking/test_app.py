"""Functional tests through aiohttp's test client: pages, forms, CSRF, admin actions, the
broadcasts the pusher SDK would send, and Laravel's `/broadcasting/auth` endpoint."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from tests.booking.conftest import (
    ADMIN_EMAIL,
    APP_KEY,
    APP_SECRET,
    RecordingBackend,
    book,
    booking_form,
    csrf_token,
    login,
)

Client = TestClient[web.Request, web.Application]
SOCKET_ID = "1234.5678"


def expected_auth(socket_id: str, channel: str) -> str:
    """Recompute the channel signature independently of the app and the SDK (protocol §2.1)."""
    signature = hmac.new(APP_SECRET.encode(), f"{socket_id}:{channel}".encode(), hashlib.sha256)
    return f"{APP_KEY}:{signature.hexdigest()}"


async def auth(client: Client, channel: str, token: str, **extra: str) -> ClientResponse:
    return await client.post(
        "/broadcasting/auth",
        data={"socket_id": SOCKET_ID, "channel_name": channel, **extra},
        headers={"X-CSRF-TOKEN": token},
    )


# -- guest pages and booking ------------------------------------------------------------------


async def test_home_lists_the_seeded_villas(client: Client) -> None:
    response = await client.get("/")
    text = await response.text()
    assert response.status == 200
    assert text.count('class="card villa"') == 5
    assert "Rp 1.500.000" in text


async def test_unknown_villa_is_404(client: Client) -> None:
    assert (await client.get("/villas/999")).status == 404


async def test_booking_creates_a_pending_order_and_broadcasts_it(
    client: Client, recorder: RecordingBackend
) -> None:
    booking_id, token = await book(client, villa_id=1)
    page = await client.get(f"/bookings/{booking_id}", params={"token": token})
    text = await page.text()
    assert page.status == 200
    assert 'data-testid="booking-status" data-status="pending"' in text
    assert "Rp 4.500.000" in text  # 3 nights x Rp 1.500.000

    [event] = recorder.published
    assert event.channels == ["private-admin.orders"]
    assert event.name == "order.created"
    assert event.socket_id is None
    order = event.data["order"]
    assert order["id"] == booking_id
    assert order["guest_name"] == "Budi Santoso"
    assert order["villa_name"] == "Villa Kembang"
    assert (order["check_in"], order["check_out"]) == ("2030-02-01", "2030-02-04")
    assert (order["total"], order["total_formatted"]) == (4_500_000, "Rp 4.500.000")
    assert order["status"] == "pending"
    assert order["created_at"].startswith("20")
    assert "token" not in order and "guest_email" not in order


async def test_invalid_booking_shows_form_errors_and_publishes_nothing(
    client: Client, recorder: RecordingBackend
) -> None:
    token = await csrf_token(client, "/villas/1")
    response = await client.post(
        "/villas/1/bookings",
        data={"_token": token, **booking_form(check_in="2030-01-01", guests="5")},
    )
    text = await response.text()
    assert response.status == 422
    assert "Check-in cannot be in the past." in text
    assert "Villa Kembang sleeps at most 2 guests." in text
    assert 'value="Budi Santoso"' in text  # the form keeps what was typed
    assert recorder.published == []


async def test_overlapping_booking_is_refused(client: Client) -> None:
    await book(client, villa_id=2, check_in="2030-03-01", check_out="2030-03-05")
    token = await csrf_token(client, "/villas/2")
    response = await client.post(
        "/villas/2/bookings",
        data={"_token": token, **booking_form(check_in="2030-03-04", check_out="2030-03-06")},
    )
    assert response.status == 422
    assert "already booked for some of these dates" in await response.text()
    # Back-to-back is fine, and so is the same dates at another villa.
    await book(client, villa_id=2, check_in="2030-03-05", check_out="2030-03-06")
    await book(client, villa_id=3, check_in="2030-03-01", check_out="2030-03-05")


async def test_booking_page_needs_the_token(client: Client) -> None:
    booking_id, token = await book(client)
    assert (await client.get(f"/bookings/{booking_id}")).status == 404
    assert (
        await client.get(f"/bookings/{booking_id}", params={"token": "x" + token})
    ).status == 404
    status = await client.get(f"/bookings/{booking_id}/status.json", params={"token": token})
    assert (await status.json())["order"]["status"] == "pending"
    assert (await client.get(f"/bookings/{booking_id}/status.json")).status == 404


@pytest.mark.parametrize("headers", [{}, {"X-CSRF-TOKEN": "forged"}])
async def test_forms_without_the_csrf_token_are_refused(
    client: Client, headers: dict[str, str]
) -> None:
    await csrf_token(client)  # a session exists, but the token is not sent
    response = await client.post("/villas/1/bookings", data=booking_form(), headers=headers)
    assert response.status == 403


# -- admin ------------------------------------------------------------------------------------


async def test_admin_pages_need_a_login(client: Client) -> None:
    response = await client.get("/admin/reservations/realtime", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == "/admin/login?next=/admin/reservations/realtime"
    json_response = await client.get(
        "/admin/reservations.json", headers={"Accept": "application/json"}
    )
    assert json_response.status == 401


async def test_wrong_password_is_refused(client: Client) -> None:
    token = await csrf_token(client, "/admin/login")
    for email, password in [(ADMIN_EMAIL, "nope"), ("who@example.com", "password")]:
        response = await client.post(
            "/admin/login", data={"_token": token, "email": email, "password": password}
        )
        assert response.status == 422
        assert "These credentials do not match" in await response.text()
    assert (await client.get("/admin/reservations", allow_redirects=False)).status == 302


async def test_login_rotates_the_csrf_token_and_opens_the_dashboard(client: Client) -> None:
    before = await csrf_token(client, "/admin/login")
    after = await login(client)
    assert after != before
    page = await client.get("/admin/reservations/realtime")
    text = await page.text()
    assert page.status == 200
    for hook in (
        "connection-status",
        "stat-pending",
        "stat-confirmed",
        "stat-total",
        "orders-feed",
        "orders-table",
    ):
        assert f'data-testid="{hook}"' in text
    assert '"broadcaster": "reverb"' in text and '"authEndpoint": "/broadcasting/auth"' in text


async def test_logout(client: Client) -> None:
    token = await login(client)
    response = await client.post("/admin/logout", data={"_token": token}, allow_redirects=False)
    assert response.status == 303
    assert (await client.get("/admin/reservations", allow_redirects=False)).status == 302


async def test_status_change_broadcasts_to_others_on_both_channels(
    client: Client, recorder: RecordingBackend
) -> None:
    booking_id, _ = await book(client)
    token = await login(client)
    recorder.published.clear()
    response = await client.post(
        f"/admin/reservations/{booking_id}/status",
        json={"status": "confirmed"},
        headers={"X-CSRF-TOKEN": token, "X-Socket-ID": SOCKET_ID, "Accept": "application/json"},
    )
    assert response.status == 200
    body = await response.json()
    assert (body["order"]["status"], body["old_status"]) == ("confirmed", "pending")

    [event] = recorder.published
    assert event.name == "order.status.changed"
    assert event.channels == ["private-admin.orders", f"private-order.{booking_id}"]
    assert event.socket_id == SOCKET_ID  # toOthers(): the caller's socket is excluded
    assert (event.data["old_status"], event.data["new_status"]) == ("pending", "confirmed")
    assert event.data["order"]["id"] == booking_id

    state = await (await client.get("/admin/reservations.json")).json()
    assert state["stats"] == {"pending": 0, "confirmed": 1, "total": 1}


async def test_status_change_edge_cases(client: Client, recorder: RecordingBackend) -> None:
    booking_id, _ = await book(client)
    token = await login(client)
    recorder.published.clear()
    headers = {"X-CSRF-TOKEN": token, "Accept": "application/json", "X-Socket-ID": "bogus"}
    url = f"/admin/reservations/{booking_id}/status"

    same = await client.post(url, json={"status": "pending"}, headers=headers)
    assert same.status == 200 and recorder.published == []  # nothing changed, nothing sent

    unknown = await client.post(url, json={"status": "paid"}, headers=headers)
    assert unknown.status == 422

    missing = await client.post(
        "/admin/reservations/999/status", json={"status": "confirmed"}, headers=headers
    )
    assert missing.status == 404

    cancel = await client.post(url, json={"status": "cancelled"}, headers=headers)
    assert cancel.status == 200
    assert recorder.published[-1].socket_id is None  # a malformed X-Socket-ID is dropped, not fatal

    # The dates are free again: someone else books them; reviving the first must then fail.
    await book(client)
    revive = await client.post(url, json={"status": "pending"}, headers=headers)
    assert revive.status == 422
    assert "Another booking now holds these dates." in (await revive.json())["errors"]["status"]


async def test_plain_table_form_changes_status(client: Client, recorder: RecordingBackend) -> None:
    booking_id, _ = await book(client)
    token = await login(client)
    response = await client.post(
        f"/admin/reservations/{booking_id}/status",
        data={"_token": token, "status": "completed"},
        allow_redirects=False,
    )
    assert response.status == 303
    table = await (await client.get("/admin/reservations")).text()
    assert f'<tr data-order-id="{booking_id}">' in table
    assert '<option value="completed" selected>' in table
    assert recorder.published[-1].data["new_status"] == "completed"


async def test_status_change_needs_admin_and_csrf(client: Client) -> None:
    booking_id, _ = await book(client)
    token = await csrf_token(client)
    url = f"/admin/reservations/{booking_id}/status"
    as_guest = await client.post(
        url,
        json={"status": "confirmed"},
        headers={"X-CSRF-TOKEN": token, "Accept": "application/json"},
    )
    assert as_guest.status == 401
    await login(client)
    no_csrf = await client.post(
        url, json={"status": "confirmed"}, headers={"Accept": "application/json"}
    )
    assert no_csrf.status == 403


# -- /broadcasting/auth -----------------------------------------------------------------------


async def test_admin_is_authorized_for_the_admin_channel(client: Client) -> None:
    token = await login(client)
    response = await auth(client, "private-admin.orders", token)
    assert response.status == 200
    assert await response.json() == {"auth": expected_auth(SOCKET_ID, "private-admin.orders")}


async def test_admin_is_authorized_for_any_existing_order(client: Client) -> None:
    booking_id, _ = await book(client)
    token = await login(client)
    response = await auth(client, f"private-order.{booking_id}", token)
    assert response.status == 200
    assert (await response.json())["auth"] == expected_auth(
        SOCKET_ID, f"private-order.{booking_id}"
    )
    assert (await auth(client, "private-order.999", token)).status == 403


async def test_guest_with_the_token_is_authorized_for_their_own_order_only(client: Client) -> None:
    mine, my_token = await book(client, villa_id=1)
    other, other_token = await book(client, villa_id=2)
    csrf = await csrf_token(client)

    response = await auth(client, f"private-order.{mine}", csrf, booking_token=my_token)
    assert response.status == 200
    assert (await response.json())["auth"] == expected_auth(SOCKET_ID, f"private-order.{mine}")

    assert (
        await auth(client, f"private-order.{other}", csrf, booking_token=my_token)
    ).status == 403
    assert (
        await auth(client, f"private-order.{mine}", csrf, booking_token=other_token)
    ).status == 403
    assert (await auth(client, f"private-order.{mine}", csrf)).status == 403
    assert (await auth(client, "private-admin.orders", csrf, booking_token=my_token)).status == 403


@pytest.mark.parametrize(
    "channel",
    [
        "private-admin.orders",
        "private-order.1",
        "private-anything",
        "presence-admin.orders",
        "public",
    ],
)
async def test_anonymous_callers_are_refused(client: Client, channel: str) -> None:
    await book(client)
    assert (await auth(client, channel, await csrf_token(client))).status == 403


async def test_auth_endpoint_checks_csrf_and_socket_id(client: Client) -> None:
    token = await login(client)
    no_csrf = await client.post(
        "/broadcasting/auth", data={"socket_id": SOCKET_ID, "channel_name": "private-admin.orders"}
    )
    assert no_csrf.status == 403
    bad_socket = await client.post(
        "/broadcasting/auth",
        data={"socket_id": "nope", "channel_name": "private-admin.orders"},
        headers={"X-CSRF-TOKEN": token},
    )
    assert bad_socket.status == 400
