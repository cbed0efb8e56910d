"""Passwords, the signed session cookie and the channel policy: pure functions, no server."""

from __future__ import annotations

import pytest

from examples.booking_app.auth import hash_password, load_session, sign_session, verify_password
from examples.booking_app.channels import ADMIN_CHANNEL, ChannelRequest, may_listen, order_id_of

KEY = b"k" * 32


def test_password_hash_round_trip_and_salt() -> None:
    first, second = hash_password("password"), hash_password("password")
    assert first != second  # salted
    assert first.startswith("scrypt$") and "password" not in first
    assert verify_password("password", first)
    assert not verify_password("Password", first)
    assert not verify_password("password", "garbage")
    assert not verify_password("password", "bcrypt$1$2$3$4$5")


def test_session_round_trip() -> None:
    session = load_session(sign_session({"admin_id": 1, "csrf": "t"}, KEY, now=1000), KEY, now=1001)
    assert session.admin_id == 1 and session["csrf"] == "t" and not session.changed


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c[:-2] + ("AA" if not c.endswith("AA") else "BB"),  # signature
        lambda c: "e30" + c[3:],  # payload
        lambda c: c.replace(".", ""),
        lambda c: "",
    ],
)
def test_tampered_session_is_replaced_by_a_new_one(mutate: object) -> None:
    cookie = sign_session({"admin_id": 1}, KEY, now=1000)
    session = load_session(mutate(cookie), KEY, now=1001)  # type: ignore[operator]
    assert session.admin_id is None and session.changed


def test_session_signed_with_another_key_or_expired_is_refused() -> None:
    cookie = sign_session({"admin_id": 1}, KEY, now=1000)
    assert load_session(cookie, b"other", now=1001).admin_id is None
    assert load_session(cookie, KEY, now=1000 + 8 * 24 * 3600).admin_id is None


def test_csrf_token_is_minted_once() -> None:
    session = load_session(None, KEY)
    token = session.csrf_token
    assert len(token) >= 32 and session.csrf_token == token


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("private-order.12", 12),
        ("private-order.x", None),
        ("private-order.12.x", None),
        ("presence-order.12", None),
        (ADMIN_CHANNEL, None),
    ],
)
def test_order_channel_names(name: str, expected: int | None) -> None:
    assert order_id_of(name) == expected


def test_channel_policy() -> None:
    def allowed(channel: str, *, admin: bool, sent: str | None, stored: str | None) -> bool:
        return may_listen(ChannelRequest(channel, admin, sent), booking_token=stored)

    assert allowed(ADMIN_CHANNEL, admin=True, sent=None, stored=None)
    assert not allowed(ADMIN_CHANNEL, admin=False, sent="tok", stored="tok")
    assert allowed("private-order.1", admin=False, sent="tok", stored="tok")
    assert not allowed("private-order.1", admin=False, sent="other", stored="tok")
    assert not allowed("private-order.1", admin=False, sent=None, stored="tok")
    assert allowed("private-order.1", admin=True, sent=None, stored="tok")
    assert not allowed("private-order.1", admin=True, sent=None, stored=None)  # no such booking
    assert not allowed("private-anything", admin=True, sent=None, stored=None)
    assert not allowed("public", admin=True, sent=None, stored=None)
