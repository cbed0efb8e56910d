"""The short soak runs, part of ``make test``; ``python -m tests.soak`` runs the full sizes.

Each test runs one scenario of ``tests/soak/scenarios.py`` at its short size and checks the
same criteria the full run does (the slow-consumer latency criterion gets 250 ms of slack on a
shared CI machine). Related tests elsewhere: ``tests/scaling/test_redis_cluster.py`` (a single
member of a killed node, a clean Redis stop and restart) and ``tests/functional/test_ops_*.py``
(SIGTERM with one idle client, pusher-js reconnecting on 4200).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.soak.scenarios import SCENARIOS, SIZES

SHORT = SIZES["short"]


def _params() -> list[object]:
    needs_redis = {"redis_kill", "redis_freeze", "node_kill"}
    return [
        pytest.param(name, marks=[pytest.mark.redis] if name in needs_redis else [], id=name)
        for name in SCENARIOS
    ]


@pytest.mark.parametrize("name", _params())
async def test_short_soak(name: str, tmp_path: Path) -> None:
    size, kwargs = SHORT[name]
    figures = await SCENARIOS[name](size, tmp_path, **kwargs)
    assert all(figures["criteria"].values())
