"""A server with its console on, for the console's HTTP and browser tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, start_server

TOKEN = "t0ken-for-the-console-tests"
SECRET = "s3cret-of-the-console-app"


@pytest.fixture
def console_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_server(
        tmp_path,
        secret=SECRET,
        extra_env={"REVERB_CONSOLE_TOKEN": TOKEN, "REVERB_CONSOLE_SAMPLE_INTERVAL": "0.5"},
    )
    yield server
    server.stop()
