"""Signature rules, checked against the test vectors of pusher-protocol.md section 2.3."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reverbpy.protocol.auth import (
    ApiVerifier,
    RequestAuthError,
    SignedRequest,
    body_md5,
    parse_query,
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


# --- the raw query string, parsed once per API request ------------------------------------


@pytest.mark.parametrize(
    ("raw", "pairs"),
    [
        ("", []),
        ("a=1&b=2", [("a", "1"), ("b", "2")]),
        ("a=1&a=2", [("a", "1"), ("a", "2")]),  # repeated names are all kept, in order
        ("a=&b", [("a", ""), ("b", "")]),  # empty values, and a name without '='
        ("&&a=1&&", [("a", "1")]),  # empty pieces are skipped
        ("=v", [("", "v")]),
        ("a=b=c", [("a", "b=c")]),  # only the first '=' separates
        ("a=x+y&k+k=1", [("a", "x y"), ("k k", "1")]),  # '+' is a space...
        ("a=%2B", [("a", "+")]),  # ...and an encoded '+' is a plus
        ("a=%20+%20", [("a", "   ")]),
        ("a%3D=1", [("a=", "1")]),  # '=' decoded from a name stays in the name
        ("a=%e2%82%ac", [("a", "\u20ac")]),  # UTF-8
        ("a=%FF", [("a", "\ufffd")]),  # invalid UTF-8
        ("a=%zz&b=%", [("a", "%zz"), ("b", "%")]),  # malformed escapes pass through
        ("a=1;b=2", [("a", "1;b=2")]),  # ';' is not a separator
        ("info=user_count%2Csubscription_count", [("info", "user_count,subscription_count")]),
        ("A=1&a=2", [("A", "1"), ("a", "2")]),  # names keep their case here
    ],
)
def test_parse_query(raw: str, pairs: list[tuple[str, str]]) -> None:
    assert parse_query(raw) == pairs
    assert parse_query(raw) == parse_qsl(raw, keep_blank_values=True)


def _signed_query(params: dict[str, str], path: str = "/apps/3/events") -> str:
    signature = sign_request("POST", path, params, SECRET)
    return "&".join(f"{k}={v}" for k, v in {**params, "auth_signature": signature}.items())


def test_verifier_accepts_a_raw_query_and_is_reusable() -> None:
    verifier = ApiVerifier(KEY, SECRET)
    raw = _signed_query(QUERY)
    for _ in range(3):  # the keyed HMAC is copied, never consumed
        verifier.verify("POST", ["/apps/3/events"], parse_query(raw), BODY, now=1353088179)
    assert verifier.sign("POST\n/apps/3/events\n" + raw.rsplit("&auth_signature", 1)[0]) == SIGNATURE


def test_verifier_signs_decoded_values_with_lowercased_sorted_names() -> None:
    params = {"auth_version": "1.0", "AUTH_KEY": KEY, "auth_timestamp": "1353088179",
              "info": "user_count,subscription_count"}
    # Signed over the decoded, lowercased and sorted parameters; sent encoded, in any order.
    signature = sign_request("GET", "/apps/3/channels", params, SECRET)
    assert request_string_to_sign("GET", "/apps/3/channels", params).endswith(
        "auth_version=1.0&info=user_count,subscription_count"
    )
    raw = (f"info=user_count%2Csubscription_count&auth_signature={signature}&AUTH_KEY={KEY}"
           "&auth_timestamp=1353088179&auth_version=1.0")
    ApiVerifier(KEY, SECRET).verify("GET", ["/apps/3/channels"], parse_query(raw), b"", now=1353088179)


def test_verifier_refuses_a_repeated_parameter_that_was_not_signed() -> None:
    raw = _signed_query(QUERY) + "&auth_timestamp=1353088179"
    with pytest.raises(RequestAuthError, match="Invalid signature"):
        ApiVerifier(KEY, SECRET).verify("POST", ["/apps/3/events"], parse_query(raw), BODY, now=1353088179)


@pytest.mark.parametrize(
    ("drop", "why"),
    [("auth_key", "Missing auth_key"), ("auth_timestamp", "Missing auth_timestamp"),
     ("auth_version", "Missing auth_version"), ("auth_signature", "Missing auth_signature")],
)
def test_verifier_names_the_missing_parameter(drop: str, why: str) -> None:
    pairs = [(k, v) for k, v in parse_query(_signed_query(QUERY)) if k != drop]
    with pytest.raises(RequestAuthError, match=why):
        ApiVerifier(KEY, SECRET).verify("POST", ["/apps/3/events"], pairs, BODY, now=1353088179)


def test_verifier_survives_non_ascii_values() -> None:
    """compare_digest raises TypeError on non-ASCII str: values are compared as bytes."""
    for name in ("auth_key", "body_md5", "auth_signature"):
        pairs = [(k, "\u00e9" if k == name else v) for k, v in parse_query(_signed_query(QUERY))]
        with pytest.raises(RequestAuthError):
            ApiVerifier(KEY, SECRET).verify("POST", ["/apps/3/events"], pairs, BODY, now=1353088179)


def test_verifier_checks_the_body_md5_before_the_signature() -> None:
    with pytest.raises(RequestAuthError, match="body_md5 does not match"):
        ApiVerifier(KEY, SECRET).verify(
            "POST", ["/apps/3/events"], parse_query(_signed_query(QUERY)), BODY + b" ", now=1353088179
        )


QUERY_PIECES = [f"{name}={value}" for name, value in QUERY.items()]


def _outcome(check: Callable[[], dict[str, str]]) -> object:
    try:
        return check()
    except RequestAuthError as exc:
        return str(exc)


@given(st.lists(st.sampled_from([
    "auth_key=" + KEY, "AUTH_KEY=" + KEY, "auth_key=other", "auth_timestamp=1353088179",
    "auth_timestamp=1353088999", "auth_timestamp=x", "auth_version=1.0", "auth_version=2",
    "auth_signature=" + SIGNATURE, "auth_signature=bad", "body_md5=" + body_md5(BODY),
    "name=a+b", "name=%41", "", "=", "flag", "a=1=2",
]), max_size=9), st.booleans())  # fmt: skip
def test_a_raw_query_is_verified_as_its_parsed_pairs(pieces: list[str], signed: bool) -> None:
    """``verify_query``'s one pass: the same parameters, refusals and messages as
    ``verify`` of ``parse_query``'s pairs (signed: the pieces in a valid request)."""
    raw = "&".join([*QUERY_PIECES, *pieces] if signed else pieces)
    if signed:  # over every pair but the signatures, the last of which counts
        raw += "&auth_signature=" + sign_request("POST", "/apps/3/events", parse_query(raw), SECRET)
    verifier = ApiVerifier(KEY, SECRET)
    expected = _outcome(lambda: verifier.verify("POST", ["/apps/3/events"], parse_query(raw), b"", now=1353088179))
    assert _outcome(lambda: verifier.verify_query("POST", ["/apps/3/events"], raw, now=1353088179)) == expected
