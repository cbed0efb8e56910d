"""The campaign's targets: one ``check(data: bytes)`` each, raising on a divergence or a crash.

Each decodes its bytes into a structured case with ``tests.fuzz.source.ByteSource`` (the
generators the Hypothesis tests use) or, in a raw mode picked by the first byte, passes them
straight to the parser, which is where coverage-guided mutation does best. ``seeds()`` gives
the inputs the mutational driver starts from (the Autobahn cases of the frame test, plain heads
and triggers). Every input that once failed is kept under ``tests/fuzz/corpus/<target>/`` and
replayed by ``test_corpus.py``.
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.fuzz import test_frames_differential as frames
from tests.fuzz import test_http1_differential as http1
from tests.fuzz import test_http_api_fuzz as http_api
from tests.fuzz import test_pusher_messages as pusher
from tests.fuzz.source import ByteSource

CORPUS = Path(__file__).resolve().parent / "corpus"


@dataclass(frozen=True)
class Target:
    name: str
    check: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]]


# --- RFC 6455 frames: ours against python-websockets ---------------------------------------------


def _whole_frames(wire: bytes) -> bytes | None:
    """``wire`` up to its last complete frame, or None when a header does not use the shortest
    length encoding (RFC 6455 5.2), which websockets does not check and we do.

    The unfinished frame at the end is cut off because the readers may rightly decide at
    different moments: ours fails a frame on its header (a reserved bit, say), websockets
    once the whole frame is in.
    """
    i = end = 0
    while i + 2 <= len(wire):
        masked, n = wire[i + 1] & 0x80, wire[i + 1] & 0x7F
        i += 2
        if n == 126:
            if i + 2 > len(wire):
                break
            n = struct.unpack("!H", wire[i : i + 2])[0]
            if n < 126:
                return None
            i += 2
        elif n == 127:
            if i + 8 > len(wire):
                break
            n = struct.unpack("!Q", wire[i : i + 8])[0]
            if n < 65536 or n >= 1 << 63:
                return None
            i += 8
        i += (4 if masked else 0) + n
        if i > len(wire):
            break
        end = i
    return wire[:end]


# The close codes a peer may send (RFC 6455 7.4.1 and the IANA registry), written out here
# rather than taken from the code under test.
_PEER_CLOSE_CODES = frozenset(
    (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014)
)


def _first_close_payload(wire: bytes) -> bytes | None:
    """The unmasked payload of the first close frame in ``wire`` (whole frames only)."""
    i = 0
    while i + 2 <= len(wire):
        opcode, masked, n = wire[i] & 0x0F, wire[i + 1] & 0x80, wire[i + 1] & 0x7F
        i += 2
        if n == 126:
            n, i = struct.unpack("!H", wire[i : i + 2])[0], i + 2
        elif n == 127:
            n, i = struct.unpack("!Q", wire[i : i + 8])[0], i + 8
        mask = wire[i : i + 4] if masked else b"\0\0\0\0"
        i += 4 if masked else 0
        if opcode == 0x8:
            return bytes(b ^ mask[k % 4] for k, b in enumerate(wire[i : i + n]))
        i += n
    return None


def _bad_code_and_reason(wire: bytes, ours: frames.Verdict, oracle: frames.Verdict) -> bool:
    """A close frame with both an invalid code and a reason that is not UTF-8: we fail it for
    the code (1002), websockets for the reason (1007); either is right. Only that close frame
    excuses the difference, not any 1002 against 1007."""
    if ours.messages != oracle.messages or (ours.close_code, oracle.close_code) != (1002, 1007):
        return False
    payload = _first_close_payload(wire)
    if payload is None or len(payload) < 2:
        return False
    code = int.from_bytes(payload[:2], "big")
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        return not (code in _PEER_CLOSE_CODES or 3000 <= code <= 4999)
    return False


def check_frames(data: bytes) -> None:
    mode, rest = (data[0] % 4, data[1:]) if data else (1, b"")
    if mode == 0:  # raw: two cut points, then the bytes on the wire
        wire = _whole_frames(rest[2:])
        if wire:
            chunks = frames.split(wire, list(rest[:2]))
            ours, oracle = frames.ours(chunks), frames.oracle(chunks)
            if ours != oracle and _bad_code_and_reason(wire, ours, oracle):
                return
            assert ours == oracle
        return
    frames.check(*frames.build_sequence(ByteSource(rest)))


def frame_seeds() -> list[bytes]:
    seeds = []
    for sequence in frames.AUTOBAHN:
        wire = b"".join(f.encode() for f in sequence)
        if len(wire) <= 4096:
            seeds.append(b"\x00\x03\x07" + wire)
    return seeds


# --- HTTP/1.1 heads: the front door's reader against h11 -----------------------------------------


def check_http1(data: bytes) -> None:
    mode, rest = (data[0] % 4, data[1:]) if data else (0, b"")
    if mode == 0:
        http1.check(http1.build_request(ByteSource(rest)))
    elif mode == 1:  # plain signed triggers must be taken, and read as h11 reads them
        request = http1.build_valid_request(ByteSource(rest))
        head = http1.read_head(request, http1.PATHS)
        assert isinstance(head, http1.Head), request
        http1.h11_reads(request, head)
    elif mode == 2:
        http1.check(rest)
    else:
        http1.check(b"POST " + http1.PATH + b" HTTP/1.1\r\n" + rest)


def http1_seeds() -> list[bytes]:
    return [
        b"\x02POST /apps/1/events?auth_key=k HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
        b"\x02POST /apps/1/batch_events HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"\x03Host: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    ]


# --- the Pusher protocol and the HTTP API rules ---------------------------------------------------


def _random_seeds(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(n) for n in (0, 16, 64, 128, 256, 512, 1024)]


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("frames", check_frames, frame_seeds),
        Target("http1", check_http1, http1_seeds),
        Target("pusher", pusher.check_bytes, lambda: _random_seeds(1)),
        Target("http_api", http_api.check_bytes, lambda: _random_seeds(2)),
    )
}


def save_failure(target: str, data: bytes) -> Path:
    """Keep a failing input as a regression case (named by its content)."""
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    for known in directory.iterdir():  # a known input (a renamed one too) is kept once
        if known.read_bytes() == data:
            return known
    path = directory / f"crash-{hashlib.sha1(data).hexdigest()[:16]}"
    path.write_bytes(data)
    return path
