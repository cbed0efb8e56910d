"""The one HTTP/1.1 request shape reverbpy answers without aiohttp: a signed ``POST`` of events.

Triggering events is what a broadcast server's HTTP API does all day, and aiohttp's per-request
machinery (a request object, a task, routing, middlewares, a response object) costs more than
the trigger itself. So the request head is read here, strictly: ``POST``, HTTP/1.1, an ASCII
target without percent-escapes, one ``Host``, one ``Content-Length``, no ``Transfer-Encoding``, ``Expect`` or
``Upgrade``, well-formed header lines. Anything else, valid or not, is left to aiohttp, whose
parser (llhttp) has the final say: this reader only ever narrows what it accepts.

``head_end`` tells when a head of any shape is complete: the front door holds every request
until then, so one head timeout and one bound on unfinished heads cover WebSocket upgrades and
queries as well as triggers (a half-sent head handed to aiohttp would wait there for its
keep-alive timeout, an hour).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from reverbpy.protocol.frames import valid_key

MAX_HEAD: Final = 8192
"""The longest head the fast path reads; longer ones are aiohttp's (if under ``HEAD_LIMIT``)."""
HEAD_LIMIT: Final = 65_536
"""The longest head held for aiohttp (browsers' cookies included); longer ones get 431."""
# The blank line ending a head, bare LF tolerated as llhttp may: a head is complete once one
# of these is in, and then aiohttp, not this module, judges whatever is not a fast-path head.
# Written ``\n\r?\n`` (the CR before it adds nothing to where it ends): a pattern starting with
# a literal byte is searched for that byte only, where ``\r?\n\r?\n`` tried a match at every
# offset of the head (3 µs of a 300-byte head, a sixth of a whole trigger's Python).
_HEAD_END: Final = re.compile(rb"\n\r?\n")
# Framing or meaning the fast path does not handle: chunked bodies, 100-continue, protocol
# switches, compressed bodies (aiohttp decompresses them before the body_md5 check).
_REFUSED_HEADERS: Final = frozenset(
    {b"transfer-encoding", b"expect", b"upgrade", b"content-encoding"}
)
# What aiohttp refuses to see twice (``http_parser.SINGLETON_HEADERS``).
_SINGLETONS: Final = frozenset(
    {b"content-length", b"content-location", b"content-range", b"content-type", b"etag",
     b"host", b"max-forwards", b"server", b"user-agent"}
)  # fmt: skip
# A plain head: printable ASCII (HTAB in values), CRLF line ends, token names, one space
# between the request line's parts. Control bytes, NUL, bare CR or LF, obs-fold and obs-text
# go to llhttp. Checked with ``bytes.translate`` (a table lookup a byte) rather than one regex
# over the head, whose character classes cost more than the rest of reading it.
_LINE_BYTES: Final = bytes(range(0x20, 0x7F)) + b"\t"
_TOKEN: Final = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_VERSION: Final = b" HTTP/1.1"
# Header names the SDKs and proxies send, all tokens: one set look-up instead of checking each
# byte (``lower`` changes no byte of a token into a byte that is not one, or back).
_KNOWN_NAMES: Final = frozenset(
    {b"host", b"content-type", b"content-length", b"user-agent", b"accept", b"accept-encoding",
     b"connection", b"x-pusher-library", b"authorization", b"x-forwarded-for",
     b"x-forwarded-proto", b"x-forwarded-host", b"x-real-ip", b"forwarded", b"via",
     b"cache-control", b"pragma", b"origin", b"cookie", b"upgrade", b"sec-websocket-key",
     b"sec-websocket-version", b"sec-websocket-extensions", b"sec-websocket-protocol",
     b"accept-language", b"transfer-encoding", b"expect", b"content-encoding"}
)  # fmt: skip
# Bytes are searched with ``find``, not ``in``: ``b"x" in data`` first tries ``b"x"`` as an
# integer, and raising and clearing that TypeError costs more than the search.
_APP_KEY: Final = re.compile(rb"[A-Za-z0-9_.~-]+")  # other keys are aiohttp's to match


@dataclass(slots=True)  # not frozen: a frozen dataclass's ``__init__`` costs four times as much
class Head:
    path: str
    query: str
    body_start: int
    content_length: int
    keep_alive: bool


class NotOurs:
    """The request is for aiohttp (another route, another shape, or malformed)."""


NOT_OURS: Final = NotOurs()


def _plain_lines(head: bytes, method: bytes) -> tuple[bytes, list[bytes]] | None:
    """The target and the header lines of a complete ``head`` (its blank line cut off) whose
    bytes are plain and whose request line is ``{method} {target} HTTP/1.1``, one space
    apart; else None. Plain: printable ASCII, tabs and CRLF line breaks, nothing else."""
    lines = head.split(b"\r\n")
    # Left when printable ASCII and HTAB are taken out: the CR and LF of each line break, and
    # any other byte. Exactly two a break, then, is no other byte and no bare CR or LF.
    if len(head.translate(None, _LINE_BYTES)) != 2 * (len(lines) - 1):
        return None
    line = lines[0]
    target = line[len(method) + 1 : -len(_VERSION)]
    if (
        not line.startswith(method)
        or line[len(method) : len(method) + 1] != b" "
        or not line.endswith(_VERSION)
        or not target
        or target.find(b" ") >= 0
        or target.find(b"\t") >= 0
    ):
        return None
    del lines[0]
    return target, lines


def _token(name: bytes) -> bool:
    """A header name outside ``_KNOWN_NAMES`` must be a token (RFC 9110 5.1)."""
    return bool(name) and not name.translate(None, _TOKEN)


def head_end(buffer: bytes, scanned: int = 0) -> int:
    """Where the head at the start of ``buffer`` ends (its blank line included), or -1 while it
    is incomplete. ``scanned``: bytes already searched, so a trickled head costs linear time."""
    found = _HEAD_END.search(buffer, max(0, scanned - 3))
    return -1 if found is None else found.end()


def head_complete(buffer: bytes, scanned: int = 0) -> bool:
    """``head_end(buffer, scanned) >= 0``, for the usual head (CRLF lines) in one ``find``."""
    start = max(0, scanned - 3)
    return buffer.find(b"\r\n\r\n", start) >= 0 or _HEAD_END.search(buffer, start) is not None


def read_head(buffer: bytes, paths: frozenset[bytes]) -> Head | NotOurs | None:
    """The head at the start of ``buffer`` if it is a fast-path request for one of ``paths``;
    ``None`` while it is incomplete.

    A plain head: ``POST {target} HTTP/1.1``, then ``name:value`` lines with a token for a
    name and printable ASCII or tabs for a value, checked in one pass over the lines, as they
    are read (tests/protocol/test_http1.py holds it to a regex over the whole head).
    """
    end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD)
    if end < 0:
        if len(buffer) >= MAX_HEAD or buffer.find(b"\n\n") >= 0:
            return NOT_OURS
        return None
    plain = _plain_lines(buffer[:end], b"POST")
    if plain is None:
        return NOT_OURS
    target, lines = plain
    path, _, query = target.partition(b"?")
    # ``#`` ends the target for llhttp and ``%`` is decoded in the path: both are aiohttp's.
    if path not in paths or target.find(b"#") >= 0 or path.find(b"%") >= 0:
        return NOT_OURS
    content_length = -1
    keep_alive = True
    seen: set[bytes] = set()
    for line in lines:  # (the line check inlined in both readers: a call per line is dear)
        name, colon, value = line.partition(b":")
        lowered = name.lower()
        if not colon or (lowered not in _KNOWN_NAMES and not _token(name)):
            return NOT_OURS
        if lowered in _SINGLETONS:
            if lowered in seen:
                return NOT_OURS
            seen.add(lowered)
            if lowered == b"content-length":
                value = value.strip(b" \t")
                if not value.isdigit() or len(value) > 12:
                    return NOT_OURS
                content_length = int(value)
        elif lowered == b"connection":  # a list header: "close" in any of them closes
            keep_alive = keep_alive and value.lower().find(b"close") < 0
        elif lowered in _REFUSED_HEADERS:
            return NOT_OURS
    # HTTP/1.1 requires one Host (RFC 9112 3.2): without it, aiohttp decides.
    if content_length < 0 or b"host" not in seen:
        return NOT_OURS
    return Head(path.decode(), query.decode(), end + 4, content_length, keep_alive)


@dataclass(slots=True)  # not frozen, as ``Head``
class Upgrade:
    """A WebSocket upgrade to ``{path}/app/{key}`` whose head is in plain, unambiguous shape."""

    key: str
    protocol: str | None
    """The ``protocol`` query parameter (Pusher's protocol version), the first if repeated."""
    origin: str | None
    ws_key: str
    head_size: int


# Headers an upgrade reads, and those it must not see twice (a repeat is aiohttp's to judge).
_UPGRADE_HEADERS: Final = frozenset(
    {b"upgrade", b"connection", b"sec-websocket-version", b"sec-websocket-key", b"origin"}
)
_UPGRADE_ONCE: Final = _SINGLETONS | _UPGRADE_HEADERS
# Bytes of a target that aiohttp would decode (``%``), cut (``#``) or read as a space in the
# query (``+``): any of them, anywhere in the target, leaves the upgrade to aiohttp.
_TARGET_REFUSED: Final = b"%#+"


def read_upgrade(buffer: bytes, prefix: bytes) -> Upgrade | NotOurs:
    """The complete head at the start of ``buffer`` if it is a well-formed WebSocket upgrade
    for ``{prefix}/app/{key}``: ``GET``, HTTP/1.1, one ``Host``, ``Upgrade: websocket``,
    ``Connection`` naming ``upgrade``, version 13, a valid key, no body, no percent-escapes.

    Anything else, including every handshake error aiohttp answers (400, 426), is left to it,
    so this reader only narrows what aiohttp accepts, as ``read_head`` does for triggers.
    A plain head, as for ``read_head``, checked in one pass over the lines: every socket's
    first request comes through here, and in a reconnect storm its cost is the server's.
    """
    end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD)
    if end < 0:
        return NOT_OURS
    plain = _plain_lines(buffer[:end], b"GET")
    if plain is None:
        return NOT_OURS
    target, lines = plain
    if len(target.translate(None, _TARGET_REFUSED)) != len(target):
        return NOT_OURS
    path, _, query = target.partition(b"?")
    start = prefix + b"/app/"
    if not path.startswith(start):
        return NOT_OURS
    key = path[len(start) :]
    if not _APP_KEY.fullmatch(key) or key == b"." or key == b"..":
        return NOT_OURS
    seen: dict[bytes, bytes] = {}
    for line in lines:  # (the line check inlined in both readers: a call per line is dear)
        name, colon, value = line.partition(b":")
        lowered = name.lower()
        if not colon or (lowered not in _KNOWN_NAMES and not _token(name)):
            return NOT_OURS
        if lowered in _UPGRADE_ONCE:
            if lowered in seen:
                return NOT_OURS
            seen[lowered] = value.strip(b" \t")
        elif lowered == b"transfer-encoding":
            return NOT_OURS
    if (
        b"host" not in seen
        or b"content-length" in seen
        or seen.get(b"upgrade", b"").lower() != b"websocket"
        or seen.get(b"connection", b"").lower().find(b"upgrade") < 0
        or seen.get(b"sec-websocket-version") != b"13"
    ):
        return NOT_OURS
    ws_key = seen.get(b"sec-websocket-key", b"")
    if not valid_key(ws_key):
        return NOT_OURS
    protocol = None
    if query:
        for pair in query.split(b"&"):
            name, _, value = pair.partition(b"=")
            if name == b"protocol":
                protocol = value.decode()
                break
    origin = seen.get(b"origin")
    return Upgrade(
        key.decode(), protocol, None if origin is None else origin.decode(), ws_key.decode(),
        end + 4,
    )  # fmt: skip
