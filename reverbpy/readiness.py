"""Whether this node should get new clients: what ``/ready`` answers, with no I/O of its own.

Plain state, so the observability layer (the Prometheus collector) and the process layer
(shutdown, the adapter's health check) can share it without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable

Check = Callable[[], str | None]


class Readiness:
    """What ``/ready`` answers. 503 while draining, while ``degraded`` holds a reason, or while
    any registered check returns one (the Redis adapter registers its link state here)."""

    def __init__(self) -> None:
        self.draining = False
        self.degraded: str | None = None
        self._checks: list[Check] = []

    def add_check(self, check: Check) -> None:
        self._checks.append(check)

    def problem(self) -> str | None:
        if self.draining:
            return "shutting down"
        if self.degraded:
            return self.degraded
        for check in self._checks:
            problem = check()
            if problem:
                return problem
        return None
