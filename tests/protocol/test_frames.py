"""RFC 6455 framing without a socket: the handshake answer, server frames, the client reader."""

from __future__ import annotations

import os

import pytest

from reverbpy.protocol.frames import (
    FRAME_COST,
    FrameError,
    FrameReader,
    Opcode,
    accept_key,
    close_frame,
    parse_close,
    text_frame,
    unmask,
    valid_key,
)


def client_frame(
    opcode: int, payload: bytes, *, fin: bool = True, mask: bytes | None = None, rsv: int = 0
) -> bytes:
    """A frame as a browser sends it: masked, with the shortest length encoding."""
    key = os.urandom(4) if mask is None else mask
    first = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    if n < 126:
        header = bytes((first, 0x80 | n))
    elif n < 65_536:
        header = bytes((first, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((first, 0x80 | 127)) + n.to_bytes(8, "big")
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return header + key + masked


def test_accept_key_rfc_example() -> None:
    # RFC 6455 section 1.3
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_valid_key() -> None:
    assert valid_key("dGhlIHNhbXBsZSBub25jZQ==")
    assert not valid_key(None)
    assert not valid_key("")
    assert not valid_key("short")
    assert not valid_key("!!!!!!!!!!!!!!!!!!!!!!==")  # not base64
    assert not valid_key("dGhlIHNhbXBsZSBub25jZQ")  # 24 chars needed


def test_unmask_round_trips_every_length() -> None:
    key = b"\x01\x82\x43\xf4"
    for n in range(0, 40):
        data = os.urandom(n)
        masked = bytes(b ^ key[i % 4] for i, b in enumerate(data))
        assert unmask(key, masked) == data


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65_535, 65_536])
def test_text_frame_lengths_read_back(size: int) -> None:
    payload = b"x" * size
    frame = text_frame(payload)
    assert frame[0] == 0x81
    # Server frames are unmasked: the payload follows the header as is.
    length = frame[1]
    header = 2 if length < 126 else 4 if length == 126 else 10
    assert frame[header:] == payload


def test_reader_small_messages_in_one_chunk() -> None:
    reader = FrameReader(max_size=1000)
    data = client_frame(Opcode.TEXT, b'{"event":"a"}') + client_frame(Opcode.TEXT, b"{}")
    assert reader.feed(data) == [(Opcode.TEXT, b'{"event":"a"}'), (Opcode.TEXT, b"{}")]


def test_reader_byte_by_byte_and_extended_lengths() -> None:
    reader = FrameReader(max_size=100_000)
    big, medium = os.urandom(70_000), ("é" * 150).encode()
    data = client_frame(Opcode.BINARY, big) + client_frame(Opcode.TEXT, medium)
    out: list[tuple[int, bytes]] = []
    for i in range(0, len(data), 7):
        out += reader.feed(data[i : i + 7])
    assert out == [(Opcode.BINARY, big), (Opcode.TEXT, medium)]


def test_reader_reassembles_fragments_with_control_frames_between() -> None:
    reader = FrameReader(max_size=1000)
    data = (
        client_frame(Opcode.TEXT, b'{"ev', fin=False)
        + client_frame(Opcode.PING, b"hi")
        + client_frame(Opcode.CONTINUATION, b'ent":', fin=False)
        + client_frame(Opcode.CONTINUATION, b'"x"}')
    )
    assert reader.feed(data) == [(Opcode.PING, b"hi"), (Opcode.TEXT, b'{"event":"x"}')]


def test_reader_size_limit_counts_fragments_and_refuses_before_buffering() -> None:
    reader = FrameReader(max_size=10)
    assert reader.feed(client_frame(Opcode.TEXT, b"123456", fin=False)) == []
    assert reader.feed(client_frame(Opcode.CONTINUATION, b"12345")) == []
    assert reader.error is not None
    assert (reader.error.code, reader.error.reason) == (1009, "Maximum message size exceeded")
    # Only the header of an oversized frame is needed to refuse it.
    header_only = FrameReader(max_size=10)
    header_only.feed(client_frame(Opcode.TEXT, b"x" * 500)[:4])
    assert header_only.error is not None and header_only.error.code == 1009


def test_reader_checks_that_text_is_utf8() -> None:
    reader = FrameReader(max_size=1000)
    data = client_frame(Opcode.TEXT, "déjà".encode()) + client_frame(Opcode.BINARY, b"\xff")
    assert reader.feed(data) == [(Opcode.TEXT, "déjà".encode()), (Opcode.BINARY, b"\xff")]
    data = client_frame(Opcode.TEXT, b"ok") + client_frame(Opcode.TEXT, b"\xff")
    assert reader.feed(data + client_frame(Opcode.TEXT, b"x")) == [(Opcode.TEXT, b"ok")]
    assert reader.error is not None
    assert (reader.error.code, reader.error.reason) == (1007, "Invalid UTF-8")
    # A reassembled message is checked whole: a character may be split between fragments.
    reader = FrameReader(max_size=1000)
    split = client_frame(Opcode.TEXT, b"\xc3", fin=False)
    split += client_frame(Opcode.CONTINUATION, b"\xa9")
    assert reader.feed(split) == [(Opcode.TEXT, "é".encode())]
    cut = client_frame(Opcode.TEXT, b"a\xc3", fin=False) + client_frame(Opcode.CONTINUATION, b"b")
    assert reader.feed(cut) == []
    assert reader.error is not None and reader.error.code == 1007


def test_reader_bounds_the_number_of_fragments() -> None:
    # Empty continuation frames add no payload, but each costs FRAME_COST bytes: a client
    # cannot make the server hold (and re-scan) an endless list of fragments.
    reader = FrameReader(max_size=10_000)
    flood = client_frame(Opcode.TEXT, b"", fin=False) + client_frame(Opcode.CONTINUATION, b"", fin=False) * 10_000
    assert reader.feed(flood) == []
    assert reader.error is not None and reader.error.code == 1009
    # A message in a few fragments is still fine.
    reader = FrameReader(max_size=10_000)
    parts = [b"a" * 1000] * 5
    data = client_frame(Opcode.TEXT, parts[0], fin=False)
    data += b"".join(client_frame(Opcode.CONTINUATION, p, fin=False) for p in parts[1:-1])
    data += client_frame(Opcode.CONTINUATION, parts[-1])
    assert reader.feed(data) == [(Opcode.TEXT, b"a" * 5000)]


def test_the_size_limit_is_the_payloads_however_it_is_fragmented() -> None:
    # 10,000 bytes pass as one frame, as two, or as max_size // FRAME_COST fragments; a byte
    # more fails every way; one fragment more than that fails however small the payload.
    message = b"a" * 10_000
    for count in (1, 2, 10_000 // FRAME_COST):
        size = -(-len(message) // count)
        parts = [message[i : i + size] for i in range(0, len(message), size)]
        reader = FrameReader(max_size=10_000)
        assert reader.feed(fragmented(parts)) == [(Opcode.TEXT, message)], count
        reader = FrameReader(max_size=10_000)
        assert reader.feed(fragmented([*parts, b"a"])) == [] and reader.error is not None
        assert reader.error.reason == "Maximum message size exceeded"
    reader = FrameReader(max_size=10_000)
    assert reader.feed(fragmented([b""] * (10_000 // FRAME_COST + 1))) == []
    assert reader.error is not None and (reader.error.code, reader.error.reason) == (1009, "Too many fragments")


def fragmented(parts: list[bytes]) -> bytes:
    if len(parts) == 1:
        return client_frame(Opcode.TEXT, parts[0])
    data = client_frame(Opcode.TEXT, parts[0], fin=False)
    data += b"".join(client_frame(Opcode.CONTINUATION, p, fin=False) for p in parts[1:-1])
    return data + client_frame(Opcode.CONTINUATION, parts[-1])


def test_reader_returns_what_was_whole_before_a_broken_frame() -> None:
    reader = FrameReader(max_size=1000)
    data = client_frame(Opcode.TEXT, b"ok") + client_frame(Opcode.TEXT, b"x", rsv=0x20)
    assert reader.feed(data) == [(Opcode.TEXT, b"ok")]
    assert reader.error is not None and reader.error.code == 1002
    assert reader.feed(client_frame(Opcode.TEXT, b"later")) == []  # broken for good


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (client_frame(Opcode.TEXT, b"x", rsv=0x40), "Reserved bits set"),
        (bytes((0x81, 0x01)) + b"x", "Client frames must be masked"),
        (client_frame(0x3, b"x"), "Unknown opcode 3"),
        (client_frame(0xB, b"x"), "Unknown opcode 11"),
        (client_frame(Opcode.PING, b"x", fin=False), "Invalid control frame"),
        (client_frame(Opcode.PING, b"x" * 126), "Invalid control frame"),
        (client_frame(Opcode.CONTINUATION, b"x"), "Unexpected continuation frame"),
        (
            client_frame(Opcode.TEXT, b"a", fin=False) + client_frame(Opcode.TEXT, b"b"),
            "Expected a continuation frame",
        ),
    ],
)
def test_reader_protocol_errors_are_1002(data: bytes, reason: str) -> None:
    reader = FrameReader(max_size=1000)
    reader.feed(data)
    assert reader.error is not None
    assert (reader.error.code, reader.error.reason) == (1002, reason)


def test_close_frames() -> None:
    assert parse_close(b"") == (1005, "")
    assert parse_close((4001).to_bytes(2, "big") + "bye é".encode()) == (4001, "bye é")
    for bad in (
        b"\x03",
        (1005).to_bytes(2, "big"),
        (999).to_bytes(2, "big"),
        (2000).to_bytes(2, "big"),
        (1004).to_bytes(2, "big"),
        (1006).to_bytes(2, "big"),
        (1015).to_bytes(2, "big"),
        (2999).to_bytes(2, "big"),
        (5000).to_bytes(2, "big"),
    ):
        with pytest.raises(FrameError) as error:
            parse_close(bad)
        assert error.value.code == 1002
    with pytest.raises(FrameError) as utf8:
        parse_close((1000).to_bytes(2, "big") + b"\xff")
    assert utf8.value.code == 1007
    # A long reason is cut to 123 bytes without splitting a character.
    frame = close_frame(4000, "é" * 100)
    assert frame[0] == 0x88 and frame[1] <= 125
    assert parse_close(frame[2:]) == (4000, "é" * 61)


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1008, 1011, 1012, 1013, 1014, 3000, 4999])
def test_registered_close_codes_are_accepted(code: int) -> None:
    # 1012 (service restart), 1013 (try again later) and 1014 (bad gateway) are registered
    # with IANA, and python-websockets accepts them (issue 13: they were answered 1002).
    assert parse_close(code.to_bytes(2, "big") + b"bye") == (code, "bye")
