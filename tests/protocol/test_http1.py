"""The strict request-head reader of the trigger fast path: what it takes, what it leaves."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reverbpy.protocol import http1
from reverbpy.protocol.http1 import (
    MAX_HEAD,
    NOT_OURS,
    Head,
    Upgrade,
    head_complete,
    head_end,
    read_head,
    read_upgrade,
)

PATHS = frozenset({b"/apps/1/events", b"/apps/1/batch_events"})


def request(*headers: str, target: str = "/apps/1/events?auth_key=k", line: str | None = None,
            host: bool = True) -> bytes:
    """A request head; with a ``Host`` unless it has one or ``host=False`` (each case below
    is refused for its own mutation, not for a missing Host)."""
    first = line if line is not None else f"POST {target} HTTP/1.1"
    if host and not any(h.lower().startswith("host:") for h in headers):
        headers = ("Host: x", *headers)
    return ("\r\n".join([first, *headers]) + "\r\n\r\n").encode()


def test_a_trigger_head() -> None:
    data = request("Host: x", "Content-Type: application/json", "content-length: 2") + b"{}"
    head = read_head(data, PATHS)
    assert head == Head("/apps/1/events", "auth_key=k", len(data) - 2, 2, True)


def test_connection_close_and_incomplete_heads() -> None:
    head = read_head(request("Content-Length: 0", "Connection: close"), PATHS)
    assert isinstance(head, Head) and not head.keep_alive
    whole = request("Content-Length: 0")
    for cut in (1, 4, 5, 20, len(whole) - 1):
        assert read_head(whole[:cut], PATHS) is None  # wait for more


@pytest.mark.parametrize(
    "data",
    [
        request("Content-Length: 0", line="GET /apps/1/events HTTP/1.1"),
        request("Content-Length: 0", line="POST /apps/1/events HTTP/1.0"),
        request("Content-Length: 0", target="/apps/2/events"),  # another app id: aiohttp's 404
        request("Content-Length: 0", target="/apps/1/channels"),
        request("Content-Length: 0", target="/apps/1/%65vents"),  # escapes: aiohttp decodes
        request("Content-Length: 0", target="/apps/1/events?a=\u00e9"),
        request(),  # no Content-Length
        request("Content-Length: 0", host=False),  # HTTP/1.1 requires a Host: aiohttp decides
        request("Content-Length: 2", "Content-Length: 2"),
        request("Content-Length: -1"),
        request("Content-Length: 2", "Transfer-Encoding: chunked"),
        request("Content-Length: 2", "Expect: 100-continue"),
        request("Content-Length: 2", "Upgrade: h2c"),
        request("Content-Length: 2", " folded: continuation"),
        request("Content-Length: 2", "Bad\nHeader: x"),
        request("Content-Length : 2"),
        request("Content-Length: 2", "NoColon"),
        request("Content-Length: 2", "Content-Encoding: gzip"),  # aiohttp decompresses it
        request("Content-Length: 2", "X-A: nul\x00here"),  # what llhttp refuses, we leave
        request("Content-Length: 2", "X-A: \x01"),
        request("Content-Length: 2", "X A: spaced name"),
        request("Content-Length: 2", "X@A: odd name"),
        request("Content-Length: \x0b2\x0b"),
        request("Content-Length: 2", "Host: a", "Host: b"),
        request("Content-Length: 2", "Content-Type: a", "content-type: b"),
        request("Content-Length: 2", target="/apps/1/events?a=\x01"),
        request("Content-Length: 2", "X-A: caf\u00e9"),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /apps/1/events HTTP/1.1\n\n",  # bare LF line ends
        b"POST /apps/1/events?" + b"a" * MAX_HEAD,  # an endless head
    ],
)
def test_left_to_aiohttp(data: bytes) -> None:
    assert read_head(data, PATHS) is NOT_OURS


def test_a_head_of_any_method_is_complete_only_at_its_blank_line() -> None:
    """The front door holds every head until ``head_end`` finds its end, whatever its method."""
    whole = b"GET /app/k HTTP/1.1\r\nHost: x\r\n\r\nnext"
    assert all(read_head(whole[:cut], PATHS) is None for cut in range(1, whole.index(b"\r\n\r\n")))
    scanned = 0
    for cut in range(1, len(whole) + 1):  # trickled byte by byte, each byte searched once
        end = head_end(whole[:cut], scanned)
        if end >= 0:
            break
        scanned = cut
    assert end == whole.index(b"next")
    assert head_end(b"GET / HTTP/1.1\nHost: x\n\n") == 24  # bare LF: complete, aiohttp judges


def test_a_head_ends_where_any_blank_line_first_ends() -> None:
    """Every mix of CR, LF and other bytes up to 7 long, split anywhere: ``head_end`` finds the
    end of the first ``\\r?\\n\\r?\\n``, as llhttp would."""
    blank_line = re.compile(rb"\r?\n\r?\n")
    for size in range(8):
        for combo in itertools.product(b"\r\nx", repeat=size):
            buffer = bytes(combo)
            found = blank_line.search(buffer)
            expected = -1 if found is None else found.end()
            for scanned in range(size + 1):  # the bytes before ``scanned`` held no end
                if blank_line.search(buffer[:scanned]) is None:
                    assert head_end(buffer, scanned) == expected, (buffer, scanned)
                    assert head_complete(buffer, scanned) is (expected >= 0), (buffer, scanned)


WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def upgrade(*headers: str, line: str = "GET /app/key-1?protocol=7&client=js&version=8.4.0 HTTP/1.1") -> bytes:
    base = ["Host: x", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13", f"Sec-WebSocket-Key: {WS_KEY}"]
    names = {h.split(":")[0].lower() for h in headers}
    kept = [h for h in base if h.split(":")[0].lower() not in names]
    return ("\r\n".join([line, *kept, *(h for h in headers if not h.endswith(": -"))]) + "\r\n\r\n").encode()


def test_a_plain_upgrade_is_read_for_the_front_door() -> None:
    data = upgrade("Origin: https://a.test", "Connection: keep-alive, Upgrade", "User-Agent: x") + b"\x81\x80tail"
    assert read_upgrade(data, b"") == Upgrade("key-1", "7", "https://a.test", WS_KEY, data.index(b"\x81"))
    assert read_upgrade(upgrade(line="GET /ws/app/k HTTP/1.1"), b"/ws") == Upgrade("k", None, None, WS_KEY, len(upgrade(line="GET /ws/app/k HTTP/1.1")))
    # The door's own checks (protocol version, origin, key) are the handler's: read as given.
    assert read_upgrade(upgrade(line="GET /app/nokey?protocol=x&protocol=7 HTTP/1.1"), b"") == Upgrade("nokey", "x", None, WS_KEY, len(upgrade(line="GET /app/nokey?protocol=x&protocol=7 HTTP/1.1")))


@pytest.mark.parametrize(
    "data",
    [
        upgrade("Sec-WebSocket-Version: 8"),  # aiohttp answers 426
        upgrade("Sec-WebSocket-Key: short"),
        upgrade("Sec-WebSocket-Key: -"),
        upgrade("Upgrade: h2c"),
        upgrade("Connection: keep-alive"),
        upgrade("Host: -"),
        upgrade("Origin: a", "origin: b"),
        upgrade("Content-Length: 0"),
        upgrade("Transfer-Encoding: chunked"),
        upgrade(line="GET /app/k%65y HTTP/1.1"),  # aiohttp decodes escapes
        upgrade(line="GET /app/k?protocol=7+1 HTTP/1.1"),
        upgrade(line="GET /app/.. HTTP/1.1"),
        upgrade(line="GET /app/a/b HTTP/1.1"),
        upgrade(line="GET /app/ HTTP/1.1"),
        upgrade(line="GET /other/app/k HTTP/1.1"),
        upgrade(line="POST /app/k HTTP/1.1"),
        upgrade(line="GET /app/k HTTP/1.0"),
        upgrade("X-A: nul\x00"),
        upgrade(" folded: x"),
        b"GET /app/k HTTP/1.1\nHost: x\n\n",
    ],
)
def test_any_other_upgrade_is_left_to_aiohttp(data: bytes) -> None:
    assert read_upgrade(data, b"") is NOT_OURS


def test_a_bare_cr_in_the_request_line_is_left_to_aiohttp() -> None:
    """Found by ``make fuzz`` (tests/fuzz/corpus/http1/bare-cr-in-request-target)."""
    data = b"POST /apps/1/events?a\ruth_key=k HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    assert read_head(data, PATHS) is NOT_OURS
    assert read_upgrade(upgrade(line="GET /app/key?protocol=7\rx HTTP/1.1"), b"") is NOT_OURS


# The readers' reference: a plain head's target and headers, in two passes (the readers were
# built on it, and must still take exactly the heads it takes, and read them alike).
def _plain(head: bytes, start: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]] | None:
    """The target and headers of a complete ``head`` if it is plain: ``{start}{target}
    HTTP/1.1`` (``start``: the method and a space), then ``name:value`` lines with a token
    for a name and printable ASCII or tabs for a value; else None (aiohttp's to judge). Each
    header is ``(name in lower case, value)``, in order, repeats kept."""
    lines = head.split(b"\r\n")
    # Left when printable ASCII and HTAB are taken out: the CR and LF of each line break, and
    # any other byte. Exactly two a break, then, is no other byte and no bare CR or LF.
    if len(head.translate(None, http1._LINE_BYTES)) != 2 * (len(lines) - 1):
        return None
    line = lines[0]
    target = line[len(start) : -len(http1._VERSION)]
    if (
        not line.startswith(start)
        or not line.endswith(http1._VERSION)
        or not target
        or target.find(b" ") >= 0
        or target.find(b"\t") >= 0
    ):
        return None
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        lowered = name.lower()
        if not colon or (
            lowered not in http1._KNOWN_NAMES and (not name or name.translate(None, http1._TOKEN))
        ):
            return None
        headers.append((lowered, value))
    return target, headers


def _head_through_plain(buffer: bytes, paths: frozenset[bytes]) -> Head | object | None:
    """``read_head`` as it was, on top of ``_plain``."""
    end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD)
    if end < 0:
        return NOT_OURS if len(buffer) >= MAX_HEAD or buffer.find(b"\n\n") >= 0 else None
    plain = _plain(buffer[:end], b"POST ")
    if plain is None:
        return NOT_OURS
    target, headers = plain
    path, _, query = target.partition(b"?")
    if path not in paths or not query.isascii() or query.find(b"#") >= 0:
        return NOT_OURS
    content_length, keep_alive, seen = -1, True, set()
    for name, value in headers:
        if name in http1._SINGLETONS:
            if name in seen:
                return NOT_OURS
            seen.add(name)
        if name == b"content-length":
            value = value.strip(b" \t")
            if not value.isdigit() or len(value) > 12:
                return NOT_OURS
            content_length = int(value)
        elif name == b"connection":
            keep_alive = keep_alive and value.lower().find(b"close") < 0
        elif name in http1._REFUSED_HEADERS:
            return NOT_OURS
    if content_length < 0 or b"host" not in seen:
        return NOT_OURS
    return Head(path.decode(), query.decode(), end + 4, content_length, keep_alive)


_TRIGGER_LINES = (b"POST /apps/1/events?auth_key=k&a=1 HTTP/1.1", b"POST /apps/1/events HTTP/1.1",
                  b"POST /apps/1/batch_events?x HTTP/1.1", b"POST /apps/1/events?a#b HTTP/1.1",
                  b"POST /apps/1/events?a b HTTP/1.1", b"POST /apps/1/events?a\tb HTTP/1.1", b"POST  /apps/1/events HTTP/1.1",
                  b"POST /apps/2/events HTTP/1.1", b"GET /apps/1/events HTTP/1.1", b"POST /apps/1/events HTTP/1.0",
                  b"POST /apps/1/events?\xe9 HTTP/1.1", b"POST /apps/1/events HTTP/1.1 HTTP/1.1", b"POST HTTP/1.1")
_TRIGGER_HEADER_LINES = (b"Host: x", b"Content-Length: 2", b"content-length:2 ", b"Content-Length: +2",
                         b"Content-Length: 1234567890123", b"Content-Type: application/json", b"Connection: close",
                         b"Connection: keep-alive", b"Connection: Keep-Alive, CLOSE", b"Transfer-Encoding: chunked",
                         b"Expect: 100-continue", b"Content-Encoding: gzip", b"Upgrade: h2c", b"User-Agent: x",
                         b"X-Pusher-Library: pusher-http-php 7.2", b"X-Custom: a\tb", b"X@bad: 1", b"NoColon", b": empty",
                         b"X-Nul: \x00", b"X-Latin: \xe9", b" folded", b"Bare\rCR: 1", b"Host: y")
_VALID_TRIGGER = _TRIGGER_HEADER_LINES[:2] + _TRIGGER_HEADER_LINES[5:6]


@settings(max_examples=1000)
@given(st.sampled_from(_TRIGGER_LINES), st.lists(st.sampled_from(_TRIGGER_HEADER_LINES), max_size=3),
       st.permutations(_VALID_TRIGGER), st.sampled_from((3, 3, 3, 2, 0)),
       st.sampled_from((b"{}", b"", b"{}POST /apps/1/events HTTP/1.1\r\n")))  # fmt: skip
def test_the_one_pass_trigger_reader_takes_what_the_two_pass_one_took(
    line: bytes, extra: list[bytes], valid: list[bytes], keep: int, body: bytes
) -> None:
    """A valid trigger's headers, some of them dropped, others added, in any order."""
    data = b"\r\n".join((line, *valid[:keep], *extra)) + b"\r\n\r\n" + body
    assert read_head(data, PATHS) == _head_through_plain(data, PATHS)


# What ``_plain`` was, one regex over the head: its faster checks must take exactly these heads.
_PLAIN_REGEX = re.compile(
    rb"([A-Z]+) ([\x21-\x7e]+) HTTP/1\.1((?:\r\n[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e]*)*)"
)
_LINES = (b"POST /apps/1/events?a=b HTTP/1.1", b"GET /app/k HTTP/1.1", b"POST  /x HTTP/1.1",
          b"POST /x HTTP/1.1 ", b"POST\t/x HTTP/1.1", b"POST /x\tHTTP/1.1", b"POST HTTP/1.1",
          b"post /x HTTP/1.1", b"POST /x HTTP/1.0", b"POST /\xe9 HTTP/1.1", b"PUT /x HTTP/1.1")
_PIECES = (b"\r\n", b"\r\n", b"\r\n", b"\r", b"\n", b"Host", b"HOST", b"Content-Type", b"X-A", b":", b": x", b" ", b"\t",
           b"\x00", b"\x1f", b"\x7f", b"\xe9", b"(", b"@", b"~!", b"Content-Length: 5", b"a", b"")


@given(st.sampled_from(_LINES), st.lists(st.sampled_from(_PIECES), max_size=12),
       st.sampled_from((b"POST", b"GET")))  # fmt: skip
def test_a_plain_head_is_what_one_regex_over_it_would_take(
    line: bytes, pieces: list[bytes], method: bytes
) -> None:
    head = line + b"".join(pieces)
    shape = _PLAIN_REGEX.fullmatch(head)
    expected = None
    if shape is not None and shape[1] == method:
        lines = (h.partition(b":") for h in shape[3].split(b"\r\n")[1:])
        expected = shape[2], [(name.lower(), value) for name, _, value in lines]
    assert _plain(head, method + b" ") == expected


def test_the_header_names_taken_without_a_check_are_lowercase_tokens() -> None:
    token = re.compile(rb"[!#$%&'*+.^_`|~0-9a-z-]+")
    assert all(token.fullmatch(name) for name in http1._KNOWN_NAMES)


def _upgrade_through_plain(buffer: bytes, prefix: bytes) -> Upgrade | object:
    """``read_upgrade`` as it was, on top of ``_plain`` (whose shape the test above pins):
    the one-pass reader must take exactly the heads this takes, and read them alike."""
    end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD)
    plain = None if end < 0 else _plain(buffer[:end], b"GET ")
    if plain is None or plain[0].find(b"%") >= 0:
        return NOT_OURS
    target, headers = plain
    path, _, query = target.partition(b"?")
    start = prefix + b"/app/"
    key = path[len(start) :]
    if not path.startswith(start) or not re.fullmatch(rb"[A-Za-z0-9_.~-]+", key) or key in (b".", b".."):
        return NOT_OURS
    if query.find(b"#") >= 0 or query.find(b"+") >= 0:
        return NOT_OURS
    seen: dict[bytes, bytes] = {}
    for name, value in headers:
        if name in http1._SINGLETONS or name in http1._UPGRADE_HEADERS:
            if name in seen:
                return NOT_OURS
            seen[name] = value.strip(b" \t")
        elif name == b"transfer-encoding":
            return NOT_OURS
    if (b"host" not in seen or b"content-length" in seen or seen.get(b"upgrade", b"").lower() != b"websocket"
            or seen.get(b"connection", b"").lower().find(b"upgrade") < 0 or seen.get(b"sec-websocket-version") != b"13"):
        return NOT_OURS
    ws_key = seen.get(b"sec-websocket-key", b"").decode()
    if len(ws_key) != 24 or not re.fullmatch(r"[A-Za-z0-9+/]{22}==", ws_key):
        return NOT_OURS
    protocol = next((v.decode() for n, _, v in (p.partition(b"=") for p in query.split(b"&")) if n == b"protocol"), None)
    origin = seen.get(b"origin")
    return Upgrade(key.decode(), protocol, None if origin is None else origin.decode(), ws_key, end + 4)


_UPGRADE_LINES = (b"GET /app/k HTTP/1.1", b"GET /app/k HTTP/1.1", b"GET /ws/app/k?protocol=7 HTTP/1.1", b"GET /app/key-1?protocol=7&client=js HTTP/1.1", b"GET /ws/app/k HTTP/1.1",
                  b"GET /app/k?protocol=7#x HTTP/1.1", b"GET /app/k?a=1+2 HTTP/1.1", b"GET /app/k%2e HTTP/1.1",
                  b"GET /app/.. HTTP/1.1", b"GET /app/a/b HTTP/1.1", b"GET /app/k\t HTTP/1.1", b"GET  /app/k HTTP/1.1",
                  b"POST /app/k HTTP/1.1", b"GET /app/k HTTP/1.0", b"GET /app/k?protocol=&protocol=7 HTTP/1.1")
_UPGRADE_HEADER_LINES = (b"Host: x", b"Upgrade: websocket", b"upgrade: WebSocket ", b"Upgrade: h2c",
                         b"Connection: keep-alive, Upgrade", b"Connection: close", b"Sec-WebSocket-Version: 13",
                         b"Sec-WebSocket-Version:13", b"Sec-WebSocket-Version: 8", f"Sec-WebSocket-Key: {WS_KEY}".encode(),
                         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=", b"Sec-WebSocket-Key: !GhlIHNhbXBsZSBub25jZQ==",
                         b"Origin: https://a.test", b"Content-Length: 0", b"Transfer-Encoding: chunked", b"User-Agent: x",
                         b"X-Custom: a\tb", b"X@bad: 1", b"NoColon", b": empty", b"X-Nul: \x00", b"X-Latin: \xe9",
                         b" folded", b"Bare\rCR: 1", b"Host: y")


_VALID_UPGRADE = _UPGRADE_HEADER_LINES[0:2] + _UPGRADE_HEADER_LINES[4:5] + _UPGRADE_HEADER_LINES[6:7] + _UPGRADE_HEADER_LINES[9:10]


@settings(max_examples=1000)
@given(st.sampled_from(_UPGRADE_LINES), st.lists(st.sampled_from(_UPGRADE_HEADER_LINES), max_size=3),
       st.permutations(_VALID_UPGRADE), st.sampled_from((5, 5, 5, 4, 0)), st.sampled_from((b"", b"/ws")),
       st.sampled_from((b"", b"\x81\x80tail")))  # fmt: skip
def test_the_one_pass_upgrade_reader_takes_what_the_two_pass_one_took(
    line: bytes, extra: list[bytes], valid: list[bytes], keep: int, prefix: bytes, tail: bytes
) -> None:
    """A valid upgrade's headers, some of them dropped, others added, in any order."""
    headers = [*valid[:keep], *extra]
    data = b"\r\n".join((line, *headers)) + b"\r\n\r\n" + tail
    assert read_upgrade(data, prefix) == _upgrade_through_plain(data, prefix)


@pytest.mark.parametrize("prefix", [b"/a?b", b"/a b", b"/a%20b", b"/a\tb", b"/a#b"])
def test_an_odd_server_path_never_takes_the_fast_path(prefix: bytes) -> None:
    """What llhttp refuses or reads otherwise in a request line stays aiohttp's, wherever it is
    in the target, the configured path included."""
    line = b"GET " + prefix + b"/app/k?protocol=7 HTTP/1.1"
    assert read_upgrade(upgrade(line=line.decode()), prefix) is NOT_OURS
    head = b"POST " + prefix + b"/apps/1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    assert read_head(head, frozenset({prefix + b"/apps/1/events"})) is NOT_OURS
