"""The console on a Redis cluster: connections, channels and presence members are counted
across nodes (and said to be), the rest is the node's own."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import ServerProcess, start_server
from tests.console.conftest import TOKEN
from tests.console.test_console_http import Browser
from tests.functional.test_sdk_http_api import Sockets

pytestmark = pytest.mark.redis


@pytest.fixture
def two_nodes(tmp_path: Path, cluster_env: dict[str, str]) -> Iterator[list[ServerProcess]]:
    env = {**cluster_env, "REVERB_CONSOLE_TOKEN": TOKEN, "REVERB_CONSOLE_SAMPLE_INTERVAL": "0.5"}
    nodes = [start_server(tmp_path, extra_env=env) for _ in range(2)]
    yield nodes
    for node in nodes:
        node.stop()


async def test_the_console_counts_the_other_nodes_sockets(two_nodes: list[ServerProcess]) -> None:
    first, second = two_nodes
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession() as ws_session, aiohttp.ClientSession(cookie_jar=jar) as session:
        sockets = Sockets(first, ws_session)
        await sockets.open("presence-hall", user={"user_id": "9", "user_info": {"n": "Zoe"}})
        await sockets.open("news")
        console = Browser(second, session)
        await console.sign_in()
        for _ in range(100):  # the other node's counts arrive with its heartbeat
            overview = await console.json("/api/overview", app=second.app_id)
            if overview["now"]["connections"] == 2:
                break
            await asyncio.sleep(0.1)
        assert overview["now"]["connections"] == 2 and overview["now"]["channels"] == 2
        assert overview["scope"]["connections"] == "cluster"
        assert overview["scope"]["messages_in"] == "node"
        listed = await console.json("/api/channels", app=second.app_id)
        assert [c["name"] for c in listed["channels"]] == ["news", "presence-hall"]
        assert listed["scope"] == "cluster"
        hall = await console.json("/api/channel", app=second.app_id, name="presence-hall")
        assert hall["members"] == [{"id": "9", "info": {"n": "Zoe"}}]
