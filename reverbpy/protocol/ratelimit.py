"""A fixed one-second window counter: cheap enough to run per message."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class PerSecond:
    limit: int | None
    """None: unlimited."""
    _window: float = float("-inf")
    _count: int = 0

    def allow(self, now: float, n: int = 1) -> bool:
        """Count ``n`` hits at ``now``; False (and nothing counted) when over the limit."""
        if self.limit is None:
            return True
        if now - self._window >= 1.0:
            self._window = now
            self._count = 0
        if self._count + n > self.limit:
            return False
        self._count += n
        return True
