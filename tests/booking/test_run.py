"""`make run`'s entry point: both servers come up, the URLs and login are printed, and Ctrl-C
(SIGINT) stops both."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import ROOT, free_port


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_run_starts_and_stops_both_servers(tmp_path: Path) -> None:
    reverb_port, app_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REVERB_", "BOOKING_"))}
    env.update(
        REVERB_PORT=str(reverb_port),
        BOOKING_PORT=str(app_port),
        BOOKING_DB=str(tmp_path / "run.sqlite3"),
        PYTHONUNBUFFERED="1",
    )
    out = (tmp_path / "run.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.booking_app.run"],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{reverb_port}/up"), 30, "reverbpy")
        wait_for(lambda: answers(f"http://127.0.0.1:{app_port}/"), 30, "the booking app")
        wait_for(lambda: "Press Ctrl-C" in (tmp_path / "run.log").read_text(), 10, "the banner")
        banner = (tmp_path / "run.log").read_text()
        assert f"ws://127.0.0.1:{reverb_port}/app/reverb-key" in banner
        assert f"http://127.0.0.1:{app_port}/admin/reservations/realtime" in banner
        assert "admin@example.com / password" in banner

        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        assert proc.wait(20) == 0
        assert not answers(f"http://127.0.0.1:{reverb_port}/up")
        assert not answers(f"http://127.0.0.1:{app_port}/")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()
