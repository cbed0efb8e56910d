"""`make run`'s entry point: both servers come up, the URLs, the login and reverbpy's pid are
printed, and Ctrl-C (SIGINT) or SIGTERM stops both. reverbpy stopping alone (the checklist's
last step) leaves the app serving, with one line saying how to start it again: `make serve`,
whose entry point starts reverbpy with the credentials of the shared `.env`."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pusher  # type: ignore[import-untyped]
import pytest

from examples.booking_app.run import restart_hint
from tests.booking.conftest import (
    answers,
    is_reverbpy,
    launcher_env,
    start_launcher,
    stop_group,
    wait_for,
)
from tests.conftest import ROOT, free_port

DIRECT = "-m examples.booking_app.reverb --port"


def make_serve(port: int) -> str:
    return "make serve" if port == 8080 else f"make serve PORT={port}"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_run_starts_and_stops_both_servers(tmp_path: Path, sig: signal.Signals) -> None:
    launcher = start_launcher(tmp_path)
    try:
        reverb_up = f"http://127.0.0.1:{launcher.reverb_port}/up"
        assert answers(reverb_up)
        assert answers(f"{launcher.app_url}/")
        banner = launcher.output()
        assert f"ws://127.0.0.1:{launcher.reverb_port}/app/reverb-key" in banner
        assert f"{launcher.app_url}/admin/reservations/realtime" in banner
        assert "admin@example.com / password" in banner
        # The demo's reverbpy serves the operator console, with the token the banner names.
        console = f"http://127.0.0.1:{launcher.reverb_port}/console"
        assert f"{console}  (token: demo-console)" in banner
        assert answers(console)
        reverb_pid = launcher.reverb_pid()
        assert is_reverbpy(reverb_pid, launcher.reverb_port)

        if sig == signal.SIGINT:
            os.killpg(launcher.proc.pid, sig)  # what Ctrl-C in a terminal does
        else:
            os.kill(launcher.proc.pid, sig)  # `kill`, a service manager
        assert launcher.proc.wait(20) == 0
        assert not answers(reverb_up)
        assert not answers(f"{launcher.app_url}/")
        assert not is_reverbpy(reverb_pid, launcher.reverb_port)
        assert launcher.restart_lines() == []  # stopping it ourselves is not news
    finally:
        launcher.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_app_keeps_serving_when_reverbpy_stops(tmp_path: Path, sig: signal.Signals) -> None:
    secret = "run-secret-not-for-logs"
    launcher = start_launcher(
        tmp_path,
        extra_env={"REVERB_APP_ID": "424242", "REVERB_APP_KEY": "k", "REVERB_APP_SECRET": secret},
    )
    try:
        os.kill(launcher.reverb_pid(), sig)
        wait_for(launcher.restart_lines, 20, "the launcher's line")
        assert launcher.proc.poll() is None, launcher.output()
        assert answers(f"{launcher.app_url}/")
        assert answers(f"{launcher.app_url}/villas/1")

        [line] = launcher.restart_lines()
        status = "exit code 0" if sig == signal.SIGTERM else "exit code -9, SIGKILL"
        assert line["status"] == status
        assert line["first"] == make_serve(launcher.reverb_port)
        assert line["direct"].endswith(f"{DIRECT} {launcher.reverb_port}")
        assert secret not in launcher.output()

        os.killpg(launcher.proc.pid, signal.SIGINT)  # Ctrl-C still stops what is left
        assert launcher.proc.wait(20) == 0
        assert not answers(f"{launcher.app_url}/")
        assert len(launcher.restart_lines()) == 1
    finally:
        launcher.close()


def test_launcher_elsewhere_shares_that_directory_env_file(tmp_path: Path) -> None:
    """Started outside the repository, the app and its reverbpy read the `.env` there, and the
    restart command is the direct one (make would read the repository's `.env` instead)."""
    (tmp_path / ".env").write_text(
        "REVERB_APP_ID=31337\nREVERB_APP_KEY=elsewhere-key\nREVERB_APP_SECRET=elsewhere-secret\n"
    )
    launcher = start_launcher(tmp_path, cwd=tmp_path)
    try:
        assert f"/app/elsewhere-key  (pid {launcher.reverb_pid()})" in launcher.output()
        client = pusher.Pusher(
            app_id="31337",
            key="elsewhere-key",
            secret="elsewhere-secret",
            host="127.0.0.1",
            port=launcher.reverb_port,
            ssl=False,
        )
        assert client.channels_info() == {"channels": {}}

        os.kill(launcher.reverb_pid(), signal.SIGTERM)
        wait_for(launcher.restart_lines, 20, "the launcher's line")
        [line] = launcher.restart_lines()
        assert line["first"] == f"{shlex.quote(sys.executable)} {DIRECT} {launcher.reverb_port}"
        assert line["direct"] is None
        assert "elsewhere-secret" not in launcher.output()
    finally:
        launcher.close()


def test_restart_hint_is_make_serve_in_the_repository_root() -> None:
    assert restart_hint(8080, cwd=ROOT, environ={}).startswith("make serve (or ")
    assert restart_hint(9000, cwd=ROOT, environ={}).startswith("make serve PORT=9000 (or ")
    assert restart_hint(9000, cwd=ROOT, environ={}).endswith(f"{DIRECT} 9000)")
    # The Makefile's `PORT ?= 8080` takes PORT from the environment when it is set there.
    assert restart_hint(8080, cwd=ROOT, environ={"PORT": "3000"}).startswith(
        "make serve PORT=8080 (or "
    )
    assert restart_hint(3000, cwd=ROOT, environ={"PORT": "3000"}).startswith("make serve (or ")


def test_restart_hint_elsewhere_is_the_direct_command(tmp_path: Path) -> None:
    """make would run in the repository root and read its `.env`, not this directory's."""
    python = shlex.quote(sys.executable)
    assert restart_hint(8080, cwd=tmp_path, environ={}) == f"{python} {DIRECT} 8080"


def test_make_serve_entry_starts_reverbpy_with_the_shared_env_file(tmp_path: Path) -> None:
    """What `make serve` runs, from a directory whose `.env` is not the demo's defaults."""
    (tmp_path / ".env").write_text(
        "REVERB_APP_ID=777\nREVERB_APP_KEY=dotenv-key\nREVERB_APP_SECRET='dotenv secret'\n"
    )
    port = free_port()
    env = launcher_env(tmp_path, port, free_port()) | {"PYTHONPATH": str(ROOT)}
    with (tmp_path / "reverb.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "examples.booking_app.reverb", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/up"), 20, "reverbpy")
        assert is_reverbpy(proc.pid, port)  # exec'd: Ctrl-C and the pid are reverbpy's own
        client = pusher.Pusher(
            app_id="777",
            key="dotenv-key",
            secret="dotenv secret",
            host="127.0.0.1",
            port=port,
            ssl=False,
        )
        assert client.channels_info() == {"channels": {}}  # signed with the .env's secret
    finally:
        stop_group(proc)
