"""Differential fuzzing of the front door's request-head reader against h11.

``protocol.http1.read_head`` answers a signed ``POST .../events`` itself only when the head is
plainly valid, and hands everything else to aiohttp. The danger is a desync: a head this reader
accepts but a trusted parser reads differently (another body length, another request
boundary), which would let a client smuggle a request past the front door. So for generated
heads, valid and mutated (Content-Length with Transfer-Encoding, repeated, signed, spaced or
hexadecimal lengths, obs-fold, bare LF, NUL and control bytes, over-long heads, missing Host,
odd methods, targets and versions, pipelined requests), whatever ``read_head`` accepts must be
accepted by h11 as the same request: same method, target and Content-Length, the same body
bytes, and the next request starting at the same byte. ``read_head`` never raises.
"""

from __future__ import annotations

import os

import h11
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reverbpy.protocol.http1 import MAX_HEAD, Head, Upgrade, read_head, read_upgrade
from tests.fuzz.source import HypothesisSource, Source

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1500"))
PATH = b"/apps/1/events"
PATHS = frozenset({PATH, b"/apps/1/batch_events"})

LENGTH_VALUES = (
    ("{n}",) * 12
    + (" {n} ", "0{n}", "+{n}", "-{n}", "{n},{n}", "{n}, {n}", "0x{n}", "{n} {n}", "{n}.0", "",
       "9999999999999", "1" * 20, "{n}\x00")
)  # fmt: skip
TARGETS = (
    (b"/apps/1/events?auth_key=k&auth_signature=s",) * 6
    + (b"/apps/1/events", b"/apps/1/batch_events?a=b", b"/apps/1/events?a=b#frag",
       b"/apps/1/events?q=\xc3\xa9", b"/apps/1/events?a b", b"/apps/1/other", b"*",
       b"http://x/apps/1/events?a=1", b"/apps/1/events?a=%41")
)  # fmt: skip
EXTRA_HEADERS = (
    b"Transfer-Encoding: chunked", b"Transfer-Encoding: identity", b"Content-Encoding: gzip",
    b"Expect: 100-continue", b"Upgrade: websocket", b"Connection: close", b"Connection: keep-alive",
    b"Connection: closed", b"Connection: keep-alive, close", b"X-Fold: a\r\n b",
    b"X-Space : v", b" X-Leading: v", b"X-NoColon", b"X-Nul: a\x00b", b"X-Ctl: a\x01b",
    b"X-Obs: caf\xe9", b"Content-Type: application/json", b"Content-Type: text/plain",
    b"User-Agent: a", b"User-Agent: b", b"X-Long: " + b"v" * 9000, b"X:", b": novalue",
    b"X-Tab:\tv", b"Host: other",
)  # fmt: skip
QUERY_CHARS = b"ABCXYZabcxyz0189_=&.-"
# Generators written against ``tests.fuzz.source.Source``: Hypothesis drives them here, bytes
# in ``make fuzz``.


def build_request(src: Source) -> bytes:
    body = src.bytes(30)
    n = len(body)
    method = src.pick((b"POST",) * 16 + (b"GET", b"post", b"PUT", b"POST\t"))
    target = src.pick(TARGETS)
    version = src.pick((b"HTTP/1.1",) * 16 + (b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"http/1.1"))
    headers: list[bytes] = []
    if src.int(0, 9):
        headers.append(b"Host: 127.0.0.1")
    lengths = [src.pick(LENGTH_VALUES) for _ in range(src.int(0, 2))]
    if not lengths and src.bool():
        lengths = ["{n}"]
    for template in lengths:
        declared = src.pick((n, n, n, max(0, n - 3), n + 5))
        name = src.pick((b"Content-Length", b"content-length", b"CONTENT-LENGTH"))
        headers.append(name + b": " + template.format(n=declared).encode())
    if src.int(0, 2) == 0:  # a third of the heads carry mutations besides the length
        headers.extend(src.pick(EXTRA_HEADERS) for _ in range(src.int(1, 3)))
    headers = src.permute(headers)
    eol = src.pick((b"\r\n",) * 10 + (b"\n",))
    head = method + b" " + target + b" " + version + b"\r\n" + b"".join(h + eol for h in headers)
    data = head + b"\r\n" + body
    if src.bool():  # a second request pipelined behind the first
        data += b"GET /apps/1/channels HTTP/1.1\r\nHost: x\r\n\r\n"
    if src.int(0, 4) == 0:  # cut short, as a slow or a lying client would
        return data[: src.int(0, len(data))]
    return data


def build_valid_request(src: Source) -> bytes:
    """Plain signed triggers in every spelling the fast path takes: these must be accepted."""
    body = src.bytes(60)
    target = src.pick((b"/apps/1/events", b"/apps/1/batch_events"))
    query = bytes(src.pick(QUERY_CHARS) for _ in range(src.int(0, 40)))
    extras = (b"Content-Type: application/json", b"User-Agent: pusher-http-python", b"Accept: */*",
              b"Connection: keep-alive", b"Connection: close", b"X-Request-Id: 42",
              b"Accept-Encoding: gzip")  # fmt: skip
    fields = [
        src.pick((b"Host", b"host", b"HOST"))
        + b":"
        + src.pick((b" ", b"", b"\t"))
        + b"127.0.0.1:8080",
        src.pick((b"Content-Length", b"content-length")) + b": " + str(len(body)).encode(),
        *dict.fromkeys(src.pick(extras) for _ in range(src.int(0, 4))),
    ]
    head = b"POST " + target + (b"?" + query if query else b"") + b" HTTP/1.1\r\n"
    data = head + b"".join(f + b"\r\n" for f in src.permute(fields)) + b"\r\n" + body
    if src.bool():
        data += b"POST /apps/1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    return data


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    return build_request(HypothesisSource(draw))


@st.composite
def valid_requests(draw: st.DrawFn) -> bytes:
    return build_valid_request(HypothesisSource(draw))


def h11_reads(data: bytes, head: Head) -> None:
    """h11 must see the very request ``read_head`` accepted, with the same body and boundary."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    request = conn.next_event()
    assert isinstance(request, h11.Request), f"h11 refused what read_head accepted: {request!r}"
    assert request.method == b"POST"
    assert request.target == (head.path + ("?" + head.query if head.query else "")).encode() or (
        request.target.endswith(b"?") and not head.query
    )
    lengths = {int(v) for k, v in request.headers if k == b"content-length"}
    assert lengths == {head.content_length}
    body = b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Data):
            body += event.data
        elif event is h11.NEED_DATA:
            break
        else:
            assert isinstance(event, h11.EndOfMessage)
            break
    expected = data[head.body_start : head.body_start + head.content_length]
    assert body == expected
    closes = any(k == b"connection" and b"close" in v.split(b",") for k, v in request.headers)
    if closes:
        assert not head.keep_alive


def check(data: bytes) -> None:
    result = read_head(data, PATHS)
    if result is None:
        assert b"\r\n\r\n" not in data[:MAX_HEAD] and len(data) < MAX_HEAD
    elif isinstance(result, Head):
        h11_reads(data, result)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_read_head_never_accepts_what_h11_reads_otherwise(data: bytes) -> None:
    check(data)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_requests())
def test_plain_triggers_are_taken_and_read_as_h11_reads_them(data: bytes) -> None:
    result = read_head(data, PATHS)
    assert isinstance(result, Head)
    h11_reads(data, result)


@settings(max_examples=EXAMPLES // 3, deadline=None)
@given(st.binary(max_size=200))
def test_read_head_survives_any_bytes(data: bytes) -> None:
    check(b"POST " + PATH + b" HTTP/1.1\r\n" + data)
    check(data)


def test_the_issue_13_heads_are_never_ours() -> None:
    """The malformed heads of the issue's probe: each one is for aiohttp (it answers 400)."""
    base = b"POST /apps/1/events HTTP/1.1\r\nHost: x\r\n"
    for extra in (
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"Content-Length: 5\r\nContent-Length: 5\r\n",
        b"Content-Length: 5\r\nX-Fold: a\r\n b\r\n",
        b"Content-Length: 5\r\nX-Nul: \x00\r\n",
        b"Content-Length: 5\r\nX-Big: " + b"a" * 100_000 + b"\r\n",
        b"Content-Length: -1\r\n",
        b"Content-Length: 5\nX-Bare-LF: 1\r\n",
    ):
        result = read_head(base + extra + b"\r\nhello", PATHS)
        assert not isinstance(result, Head), extra[:40]


# --- WebSocket upgrades: ``read_upgrade`` against h11 ------------------------------------------

UPGRADE_TARGETS = (
    (b"/app/key-1?protocol=7&client=js&version=8.4.0&flash=false",) * 6
    + (b"/app/key-1", b"/app/key-1?protocol=7&protocol=5", b"/app/k%65y", b"/app/key?a b",
       b"/app/key?q=\xc3\xa9", b"/app/a/b", b"/app/..", b"/app/", b"/apps/1/events", b"*",
       b"http://x/app/key", b"/app/key?p=1#f", b"/app/key\t")
)  # fmt: skip
UPGRADE_HEADERS = (
    b"Upgrade: websocket", b"Upgrade: WebSocket", b"Upgrade: h2c", b"Upgrade: websocket, h2c",
    b"Connection: Upgrade", b"Connection: keep-alive, Upgrade", b"Connection: close",
    b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8", b"Sec-WebSocket-Version: 13, 8",
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", b"Sec-WebSocket-Key: short",
    b"Origin: https://a.test", b"Origin: https://b.test", b"Host: x", b"Host: y",
    b"Content-Length: 0", b"Content-Length: 5", b"Transfer-Encoding: chunked",
    b"Sec-WebSocket-Extensions: permessage-deflate", b"User-Agent: a", b"X-Fold: a\r\n b",
    b"X-Nul: a\x00b", b"X-Obs: caf\xe9", b"X-Space : v", b"X-Tab:\tv", b"Cookie: " + b"c" * 9000,
)  # fmt: skip


def build_upgrade(src: Source) -> bytes:
    method = src.pick((b"GET",) * 12 + (b"get", b"POST", b"GET\t"))
    version = src.pick((b"HTTP/1.1",) * 12 + (b"HTTP/1.0", b"HTTP/2.0"))
    line = method + b" " + src.pick(UPGRADE_TARGETS) + b" " + version
    base = [b"Host: x", b"Upgrade: websocket", b"Connection: Upgrade", b"Sec-WebSocket-Version: 13",
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]  # fmt: skip
    fields = [f for f in base if src.int(0, 9)]  # each one dropped now and then
    fields.extend(src.pick(UPGRADE_HEADERS) for _ in range(src.int(0, 4)))
    end = src.pick((b"\r\n\r\n",) * 8 + (b"\n\n", b"\r\n\n"))
    tail = src.pick((b"", b"\x81\x80\0\0\0\0", b"GET / HTTP/1.1\r\n\r\n"))
    return line + b"\r\n" + b"\r\n".join(src.permute(fields)) + end + tail


def check_upgrade(data: bytes) -> None:
    """What ``read_upgrade`` takes, h11 reads as the same WebSocket upgrade: a GET of the same
    target with one Host, the same key, version 13, no body; the frames start where h11 stops."""
    upgrade = read_upgrade(data, b"")
    if not isinstance(upgrade, Upgrade):
        return
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    request = conn.next_event()
    assert isinstance(request, h11.Request), f"h11 refused what read_upgrade took: {request!r}"
    assert request.method == b"GET" and request.http_version == b"1.1"
    path, _, query = request.target.partition(b"?")
    assert path == b"/app/" + upgrade.key.encode()
    headers: dict[bytes, list[bytes]] = {}
    for name, value in request.headers:
        headers.setdefault(name, []).append(value)
    assert len(headers[b"host"]) == 1
    assert headers[b"upgrade"] == [b"websocket"] or headers[b"upgrade"][0].lower() == b"websocket"
    assert headers[b"sec-websocket-key"] == [upgrade.ws_key.encode()]
    assert headers[b"sec-websocket-version"] == [b"13"]
    assert b"content-length" not in headers and b"transfer-encoding" not in headers
    assert headers.get(b"origin", [None])[0] == (upgrade.origin.encode() if upgrade.origin else None)
    protocols = [v for k, _, v in (p.partition(b"=") for p in query.split(b"&")) if k == b"protocol"]
    assert upgrade.protocol == (protocols[0].decode() if protocols else None)
    # h11 stops at an upgrade: what it has not consumed is exactly what follows the head.
    assert conn.trailing_data[0] == data[upgrade.head_size :]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.composite(lambda draw: build_upgrade(HypothesisSource(draw)))())
def test_read_upgrade_never_takes_what_h11_reads_otherwise(data: bytes) -> None:
    check_upgrade(data)


def test_plain_upgrades_are_taken_and_read_as_h11_reads_them() -> None:
    for tail in (b"", b"\x81\x80\0\0\0\0"):
        data = (
            b"GET /app/key-1?protocol=7&client=js HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: https://a.test\r\n\r\n" + tail
        )
        assert isinstance(read_upgrade(data, b""), Upgrade)
        check_upgrade(data)
