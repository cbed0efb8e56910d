"""Where a fuzz case's choices come from: Hypothesis, or plain bytes.

Every generator in ``tests/fuzz`` is written once, against ``Source``: Hypothesis drives it in
the test suite (``HypothesisSource``, so failures shrink), and the ``make fuzz`` campaign
drives it from bytes (``ByteSource``), which is what atheris and the random driver produce and
what a failing case is saved as. A byte string always decodes to a case, whatever it holds: once
it runs out, every choice takes its smallest option, so lists end and loops stop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from hypothesis import strategies as st

T = TypeVar("T")

# Code points for generated text: mostly printable ASCII, some of everything else that JSON and
# UTF-8 can carry (surrogates excepted: they cannot be encoded, so no client can send them raw).
_RANGES = ((0x20, 0x7E), (0x00, 0x1F), (0x80, 0xD7FF), (0xE000, 0x10FFFF))


class Source(Protocol):
    def int(self, lo: int, hi: int) -> int: ...

    def bool(self) -> bool: ...

    def pick(self, options: Sequence[T]) -> T: ...

    def bytes(self, max_size: int) -> bytes: ...

    def text(self, max_size: int) -> str: ...

    def permute(self, items: Sequence[T]) -> list[T]: ...


class ByteSource:
    """Choices read off ``data``, front to back (libFuzzer's FuzzedDataProvider, simplified)."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def int(self, lo: int, hi: int) -> int:
        span = hi - lo
        if span <= 0:
            return lo
        size = (span.bit_length() + 7) // 8
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return lo + int.from_bytes(chunk, "big") % (span + 1) if chunk else lo

    def bool(self) -> bool:
        return self.int(0, 1) == 1

    def pick(self, options: Sequence[T]) -> T:
        return options[self.int(0, len(options) - 1)]

    def bytes(self, max_size: int) -> bytes:
        n = self.int(0, max_size)
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def text(self, max_size: int) -> str:
        chars = []
        for _ in range(self.int(0, max_size)):
            r = self.int(0, 15)  # 3 in 4 printable ASCII
            lo, hi = _RANGES[r - 12] if r >= 12 else _RANGES[0]
            chars.append(chr(self.int(lo, hi)))
        return "".join(chars)

    def permute(self, items: Sequence[T]) -> list[T]:
        out = list(items)
        for i in range(len(out) - 1, 0, -1):
            j = self.int(0, i)
            out[i], out[j] = out[j], out[i]
        return out

    def rest(self) -> bytes:
        """Whatever is left, for a target's raw mode."""
        chunk = self.data[self.pos :]
        self.pos = len(self.data)
        return chunk


class HypothesisSource:
    """The same choices drawn from Hypothesis (``st.composite``'s ``draw`` or ``st.data()``)."""

    __slots__ = ("draw",)

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw

    def int(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi)) if hi > lo else lo

    def bool(self) -> bool:
        return self.draw(st.booleans())

    def pick(self, options: Sequence[T]) -> T:
        return self.draw(st.sampled_from(options))

    def bytes(self, max_size: int) -> bytes:
        return self.draw(st.binary(max_size=max_size))

    def text(self, max_size: int) -> str:
        return self.draw(st.text(max_size=max_size))

    def permute(self, items: Sequence[T]) -> list[T]:
        return self.draw(st.permutations(items))
