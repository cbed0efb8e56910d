"""Socket ids: Pusher's shape, unique, from a pool that a failed read of the OS's CSPRNG
does not break."""

from __future__ import annotations

import re

import pytest

from reverbpy import websocket
from reverbpy.websocket import new_socket_id


def test_socket_ids_have_pushers_shape_and_do_not_repeat() -> None:
    ids = [new_socket_id() for _ in range(3 * 256 + 7)]  # across pool refills
    assert len(set(ids)) == len(ids)
    for socket_id in ids:
        assert re.fullmatch(r"[1-9]\d{0,9}\.[1-9]\d{0,9}", socket_id)
        assert all(1 <= int(part) <= 10**9 for part in socket_id.split("."))


def test_a_failed_read_of_random_bits_fails_one_socket_not_every_later_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    websocket._ids.clear()

    def broken(size: int) -> bytes:
        raise OSError("no entropy")

    with monkeypatch.context() as patch:
        patch.setattr(websocket.os, "urandom", broken)
        with pytest.raises(OSError):
            new_socket_id()
    assert re.fullmatch(r"\d+\.\d+", new_socket_id())
