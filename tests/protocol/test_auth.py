"""Signature rules, checked against the test vectors of pusher-protocol.md section 2.3."""

from __future__ import annotations

import pytest

from reverbpy.protocol.auth import (
    RequestAuthError,
    SignedRequest,
    body_md5,
    request_string_to_sign,
    sign,
    sign_request,
    verify_channel_auth,
    verify_request,
    verify_user_auth,
)

KEY = "278d425bdf160c739803"
SECRET = "7ad3773142a6692b25b8"


def test_private_channel_vector() -> None:
    assert sign(SECRET, "1234.1234:private-foobar") == (
        "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
    )
    auth = f"{KEY}:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
    assert verify_channel_auth(
        auth, key=KEY, secret=SECRET, socket_id="1234.1234", channel="private-foobar", channel_data=None
    )


def test_presence_vector_signs_exact_channel_data() -> None:
    data = '{"user_id":10,"user_info":{"name":"Mr. Channels"}}'
    expected = "31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80"
    assert sign(SECRET, f"1234.1234:presence-foobar:{data}") == expected
    ok = dict(key=KEY, secret=SECRET, socket_id="1234.1234", channel="presence-foobar")
    assert verify_channel_auth(f"{KEY}:{expected}", channel_data=data, **ok)
    # Same JSON, other bytes: the signature no longer matches.
    respaced = '{"user_id": 10, "user_info": {"name": "Mr. Channels"}}'
    assert not verify_channel_auth(f"{KEY}:{expected}", channel_data=respaced, **ok)


def test_user_signin_vector() -> None:
    expected = "4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"
    assert verify_user_auth(
        f"{KEY}:{expected}", key=KEY, secret=SECRET, socket_id="1234.1234", user_data='{"id":"12345"}'
    )
    assert not verify_user_auth(
        f"{KEY}:{expected}", key=KEY, secret=SECRET, socket_id="1234.1235", user_data='{"id":"12345"}'
    )


@pytest.mark.parametrize(
    "auth",
    [None, 5, "", "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4",
     "wrong-key:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"],
)
def test_bad_channel_auth_is_refused(auth: object) -> None:
    assert not verify_channel_auth(
        auth, key=KEY, secret=SECRET, socket_id="1234.1234", channel="private-foobar", channel_data=None
    )


BODY = b'{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}'
QUERY = {
    "auth_key": KEY,
    "auth_timestamp": "1353088179",
    "auth_version": "1.0",
    "body_md5": "ec365a775a4cd0599faeb73354201b6f",
}
SIGNATURE = "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"


def test_http_api_vector() -> None:
    assert body_md5(BODY) == "ec365a775a4cd0599faeb73354201b6f"
    assert request_string_to_sign("POST", "/apps/3/events", QUERY) == (
        "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179"
        "&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f"
    )
    assert sign_request("POST", "/apps/3/events", QUERY, SECRET) == SIGNATURE


def _request(query: dict[str, str], body: bytes = BODY, paths: tuple[str, ...] = ("/apps/3/events",)) -> SignedRequest:
    return SignedRequest("POST", paths, query, body)


def test_verify_request_accepts_the_vector_within_the_window() -> None:
    verify_request(_request({**QUERY, "auth_signature": SIGNATURE}), key=KEY, secret=SECRET, now=1353088179 + 599)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"auth_signature": "0" * 64}, "Invalid signature"),
        ({"auth_key": "other"}, "auth_key"),
        ({"auth_version": "2.0"}, "auth_version"),
        ({"body_md5": "0" * 32}, "body_md5"),
        ({"auth_timestamp": "abc"}, "integer"),
    ],
)
def test_verify_request_refusals(change: dict[str, str], why: str) -> None:
    with pytest.raises(RequestAuthError, match=why):
        verify_request(_request({**QUERY, "auth_signature": SIGNATURE, **change}), key=KEY, secret=SECRET, now=1353088179)


def test_expired_timestamp_is_refused() -> None:
    with pytest.raises(RequestAuthError, match="Timestamp expired"):
        verify_request(_request({**QUERY, "auth_signature": SIGNATURE}), key=KEY, secret=SECRET, now=1353088179 + 601)


def test_missing_body_md5_with_body_is_refused() -> None:
    query = {k: v for k, v in QUERY.items() if k != "body_md5"}
    query["auth_signature"] = sign_request("POST", "/apps/3/events", query, SECRET)
    with pytest.raises(RequestAuthError, match="body_md5"):
        verify_request(_request(query), key=KEY, secret=SECRET, now=1353088179)


def test_path_prefix_may_or_may_not_be_signed() -> None:
    query = {**QUERY, "auth_signature": SIGNATURE}
    verify_request(_request(query, paths=("/apps/3/events", "/ws/apps/3/events")), key=KEY, secret=SECRET, now=1353088179)
    with pytest.raises(RequestAuthError):
        verify_request(_request(query, paths=("/ws/apps/3/events",)), key=KEY, secret=SECRET, now=1353088179)


def test_query_keys_are_lowercased_and_sorted() -> None:
    assert request_string_to_sign("get", "/p", {"B": "2", "a": "1", "auth_signature": "x"}) == "GET\n/p\na=1&b=2"
